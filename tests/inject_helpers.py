"""Receiving side for the injector tests, independent of the library.

A stdlib ``AF_PACKET`` socket bound to the peer veth end with ETH_P_ALL, a
receive buffer large enough for a whole test burst (SO_RCVBUFFORCE, we are
root), and a thread that drains it, so nothing is lost on the receiving side
and every frame the injector put on the wire is seen.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from lab import ETH_P_LAB, frame, mac

SO_RCVBUFFORCE = 33
ETH_P_ALL = 0x0003


class Receiver:
    """Collect frames of EtherType ``ETH_P_LAB`` arriving on ``ifname``."""

    def __init__(self, ifname: str, ethertype: int = ETH_P_LAB) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.bind((ifname, ETH_P_ALL))
        self.sock.settimeout(0.05)
        self.ethertype = struct.pack("!H", ethertype)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._run, name="test-receiver", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            if addr[2] == socket.PACKET_OUTGOING or data[12:14] != self.ethertype:
                continue
            with self._cv:
                self.frames.append(data)
                self._cv.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[bytes]:
        """Frames received so far once there are ``n`` (or the timeout passed)."""
        end = time.monotonic() + timeout
        with self._cv:
            while len(self.frames) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            return list(self.frames)

    def settle(self, quiet: float = 0.2) -> list[bytes]:
        """Frames received once nothing new arrived for ``quiet`` seconds."""
        last = -1
        while True:
            with self._cv:
                n = len(self.frames)
            if n == last:
                return self.frames[:]
            last = n
            time.sleep(quiet)

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def seq_frame(seq: int, size: int, dst: bytes = mac(2), src: bytes = mac(1)) -> bytes:
    """A frame of exactly ``size`` bytes whose payload encodes ``seq``."""
    head = struct.pack("!IH", seq, size)
    body = bytes((seq * 7 + i) & 0xFF for i in range(size - 14 - len(head)))
    f = frame(dst, src, head + body)
    assert len(f) == size
    return f


SIZES = [60, 61, 64, 65, 100, 127, 128, 129, 255, 256, 500, 511, 512, 1000, 1023, 1024, 1500, 1513, 1514]


def softnet_drops() -> int:
    """Frames dropped by the per-CPU input backlogs, all namespaces (softnet_stat col 2)."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f)


def loss_report(lab, got: list[bytes], want: list[bytes], since_softnet: int) -> str:
    """Why frames may be missing: which ones, veth drop counters, backlog drops."""
    import json

    seq = lambda f: int.from_bytes(f[14:18], "big")  # noqa: E731
    missing = sorted(set(map(seq, want)) - set(map(seq, got)))
    links = json.loads(lab.ip("-s", "-j", "link", "show").stdout)
    drops = {ln["ifname"]: (ln["stats64"]["rx"]["dropped"], ln["stats64"]["tx"]["dropped"])
             for ln in links if ln["ifname"] in (lab.a, lab.b)}
    return (f"{len(got)}/{len(want)} frames, missing seqs {missing[:20]}, veth (rx, tx) drops {drops}, "
            f"softnet backlog drops during the test {softnet_drops() - since_softnet}")
