"""Helpers for the capture tests: hand-built frames and bounded receive loops.

Frames are built here with ``struct`` only, independently of the library, so
a byte-exact comparison on the receiving side checks the library and not
itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import time
from typing import Callable, Iterator

import netring_chan as nc

from lab import ETH_P_LAB, Lab, frame

ETH_P_IP = 0x0800
IPPROTO_UDP = 17
IPPROTO_TCP = 6


def ip_checksum(header: bytes) -> int:
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_frame(dst: bytes, src: bytes, saddr: str, daddr: str, sport: int, dport: int,
               payload: bytes = b"", proto: int = IPPROTO_UDP) -> bytes:
    """An Ethernet/IPv4/UDP (or TCP-numbered, UDP-shaped) frame with a valid IP checksum."""
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                      socket.inet_aton(saddr), socket.inet_aton(daddr))
    hdr = hdr[:10] + struct.pack("!H", ip_checksum(hdr)) + hdr[12:]
    return frame(dst, src, hdr + l4, ETH_P_IP)


def tagged(dst: bytes, src: bytes, seq: int, size: int, ethertype: int = ETH_P_LAB) -> bytes:
    """A frame of exactly ``size`` bytes whose payload starts with ``seq`` (4 bytes)."""
    body = struct.pack("!I", seq)
    fill = bytes((seq * 7 + i) & 0xFF for i in range(size - 14 - 4))
    return frame(dst, src, body + fill, ethertype)


def hwaddr(ifname: str) -> bytes:
    """MAC of ``ifname`` in the calling thread's netns (SIOCGIFHWADDR).

    Not read from /sys: sysfs shows the namespace it was mounted in, not the
    one this thread entered with setns.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        r = fcntl.ioctl(s.fileno(), 0x8927, struct.pack("256s", ifname.encode()))
    return r[18:24]


def seq_of(data: bytes) -> int:
    return int(struct.unpack_from("!I", data, 14)[0])


@contextlib.contextmanager
def one_cpu() -> Iterator[None]:
    """Pin the calling thread to one CPU while sending.

    veth hands each frame to the receive backlog of the CPU that sent it; a
    sender migrating between CPUs could have two backlogs drained in either
    order, so an in-order assertion must not depend on the scheduler.
    """
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def send_in_order(lab: Lab, frames: list[bytes], ifname: str | None = None) -> None:
    with one_cpu():
        lab.send(frames, ifname)


def collect(cap: nc.Capture, want: int, timeout: float = 5.0,
            keep: Callable[[nc.OwnedPacket], bool] = lambda p: p.protocol != 0x86DD,
            ) -> list[nc.OwnedPacket]:
    """Owned copies of the packets of whole batches until ``want`` are kept.

    Stops at ``want`` kept packets or after ``timeout`` seconds; the caller
    asserts on what came back. Blocks are read whole, so no packet is lost
    between calls.
    """
    got: list[nc.OwnedPacket] = []
    deadline = time.monotonic() + timeout
    while len(got) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        b = cap.next_batch_blocking(min(left, 0.5))
        if b is None:
            continue
        with b:
            got.extend(p for p in b.to_owned() if keep(p))
    return got


def quiet(cap: nc.Capture, wait: float = 0.3) -> list[nc.OwnedPacket]:
    """Everything that arrives within ``wait`` seconds (to show nothing else came)."""
    got: list[nc.OwnedPacket] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        b = cap.next_batch_blocking(left)
        if b is not None:
            with b:
                got.extend(b.to_owned())
    return got


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def ring_mappings() -> int:
    """Mappings of sockets (packet rings show up as ``socket:[inode]``)."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "socket:[" in line)


def map_count() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)
