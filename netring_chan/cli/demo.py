"""``demo``: the library end to end in a private network namespace.

As root, on any machine (no real network needed, none touched):

1. a network namespace and a veth pair inside it, both named with a uuid,
   IPv6 off (so the kernel sends nothing of its own), locally administered
   MACs;
2. three capture services on the veth end A, bound to the IEEE local
   experimental EtherType 0x88B5, consumed side by side by a sync consumer,
   an asyncio consumer and a trio consumer, each in its own thread;
3. a few thousand numbered raw Ethernet frames sent from end B with the
   ``Injector``;
4. a table of what each consumer received (and whether in order), each
   service's accounting identity, and a pcapng of what the sync consumer
   received, in a temporary directory whose path is printed;
5. everything it made is removed (the namespace takes the veth pair with
   it) in a ``finally``, also on Ctrl-C, SIGTERM or an error; the pcapng is
   kept after a complete run, since showing it is the point, and removed
   after an interrupted one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from types import FrameType
from typing import Any, Iterator

from rich.console import Console
from rich.table import Table

import netring_chan as nc

from . import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, PROG
from .capture import identity

__all__ = ["run_demo"]

ETHERTYPE = 0x88B5  # IEEE 802 local experimental EtherType 1: nobody else speaks it
MAC_A = bytes.fromhex("020000dea001")  # locally administered (bit 1 of the first octet)
MAC_B = bytes.fromhex("020000dea002")
_CLONE_NEWNET = 0x40000000
NOT_ROOT = (f"the demo needs root: it creates a network namespace and a veth pair (CAP_SYS_ADMIN, "
            f"CAP_NET_ADMIN) and captures and sends on them (CAP_NET_RAW). Run it with sudo:\n"
            f"    sudo {PROG} demo")


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip() or f'exit status {r.returncode}'}")


class _World:
    """The namespace and its veth pair; ``remove()`` deletes both (idempotent)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.ns = f"ncdemo-{tag}"
        self.a, self.b = f"ncd{tag}a", f"ncd{tag}b"
        self.made = False

    def create(self) -> None:
        self.made = True  # set first: a half-made namespace is removed too
        _ip("netns", "add", self.ns)
        for k in ("all", "default"):
            _ip("netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
        _ip("-n", self.ns, "link", "add", self.a, "address", MAC_A.hex(":"), "type", "veth",
            "peer", "name", self.b, "address", MAC_B.hex(":"))
        for ifc in (self.a, self.b):
            _ip("-n", self.ns, "link", "set", ifc, "up")

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """This thread in the namespace for a while (sockets opened here stay in it)."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net") as orig, open(f"/run/netns/{self.ns}") as target:
            if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
                e = ctypes.get_errno()
                raise OSError(e, f"setns into {self.ns}: {os.strerror(e)}")
            try:
                yield
            finally:
                libc.setns(orig.fileno(), _CLONE_NEWNET)

    def remove(self) -> None:
        if self.made:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            self.made = False


@dataclass
class _Tally:
    """What one consumer received."""

    face: str
    packets: int = 0
    octets: int = 0
    in_order: bool = True
    error: str = ""

    def see(self, data: bytes) -> None:
        seq = struct.unpack_from("!I", data, 14)[0] if len(data) >= 18 else -1
        if seq != self.packets:
            self.in_order = False
        self.packets += 1
        self.octets += len(data)


def _frames(n: int) -> list[bytes]:
    head = MAC_A + MAC_B + struct.pack("!H", ETHERTYPE)
    # Numbered (the consumers check the order), 60 to 187 bytes long.
    return [head + struct.pack("!I", i) + bytes(42 + i % 128) for i in range(n)]


# -- the three consumers, each on its own service -------------------------------------


def _sync_consumer(svc: nc.CaptureService, tally: _Tally, writer: Any) -> None:
    for batch in svc.batches():
        for data in batch.datas():
            tally.see(data)
        if writer is not None:
            writer.write(batch)


async def _asyncio_consumer(svc: nc.CaptureService, tally: _Tally) -> None:
    async with svc.asyncio() as rx:
        async for pkt in rx:
            tally.see(pkt.data)


async def _trio_consumer(svc: nc.CaptureService, tally: _Tally) -> None:
    async with svc.trio() as rx:
        async for pkt in rx:
            tally.see(pkt.data)


def _guarded(tally: _Tally, body: Any, *args: Any) -> threading.Thread:
    def run() -> None:
        try:
            body(*args)
        except Exception as e:  # noqa: BLE001 - reported in the table
            tally.error = f"{type(e).__name__}: {e}"
    return threading.Thread(target=run, name=f"demo-{tally.face}", daemon=True)


class _Interrupted(BaseException):
    pass


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def run_demo(args: argparse.Namespace) -> int:
    con = Console(highlight=False)
    err = Console(stderr=True, highlight=False, markup=False)
    if os.geteuid() != 0:
        err.print(f"{PROG}: {NOT_ROOT}", soft_wrap=True)
        return EXIT_ERROR
    if shutil.which("ip") is None:
        err.print(f"{PROG}: the demo needs iproute2's ip command (apt-get install iproute2)", soft_wrap=True)
        return EXIT_ERROR
    n = args.frames
    world = _World()
    tmpdir: str | None = None
    writer: Any = None
    services: list[nc.CaptureService] = []
    threads: list[threading.Thread] = []
    injector: nc.Injector | None = None
    complete = False
    main = threading.current_thread() is threading.main_thread()
    old = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        world.create()
        con.print(f"namespace [bold]{world.ns}[/]: veth {world.a} ({MAC_A.hex(':')}) <-> {world.b} "
                  f"({MAC_B.hex(':')}), IPv6 off", soft_wrap=True)
        # Three services on the same interface rather than three fanout
        # members: each capture socket gets its own copy of every frame, so
        # each consumer sees the whole numbered sequence (its order can be
        # checked) and each service's accounting identity stands alone.
        # Fanout would split the frames between the consumers instead.
        with world.inside():
            captures = [nc.Capture(world.a, protocol=ETHERTYPE, block_size=1 << 18, block_count=16,
                                   block_timeout_ms=10) for _ in range(3)]
            injector = nc.Injector(world.b, frame_count=256)
        faces = ("sync", "asyncio", "trio")
        services = [nc.CaptureService(c, name=f"demo-{f}") for c, f in zip(captures, faces)]
        tallies = [_Tally(f) for f in faces]
        tmpdir = tempfile.mkdtemp(prefix="netring-demo-")
        writer = nc.open_writer(os.path.join(tmpdir, "demo.pcapng"), snaplen=262144, linktype=1,
                                interface=world.a)
        con.print(f"the sync consumer writes what it receives to {writer.path}", soft_wrap=True, markup=False)
        for svc in services:
            svc.start()
        import trio

        threads = [_guarded(tallies[0], _sync_consumer, services[0], tallies[0], writer),
                   _guarded(tallies[1], asyncio.run, _asyncio_consumer(services[1], tallies[1])),
                   _guarded(tallies[2], trio.run, _trio_consumer, services[2], tallies[2])]
        for th in threads:
            th.start()
        con.print("consumers: sync (a thread iterating batches), asyncio (asyncio.run in a thread), "
                  "trio (trio.run in a thread), each on its own capture service", soft_wrap=True)
        if args.hold:
            con.print(f"holding {args.hold:g} s before sending (look: ip netns exec {world.ns} ip link)",
                      soft_wrap=True)
            sys.stdout.flush()
            time.sleep(args.hold)
        frames = _frames(n)
        t0 = time.monotonic()
        injector.send_many(frames, timeout=10.0)
        injector.wait_drained(timeout=10.0)
        tx = injector.stats()
        con.print(f"sent {tx.sent} frames of EtherType 0x{ETHERTYPE:04x} from {world.b} to {world.a} "
                  f"with the Injector in {time.monotonic() - t0:.3f} s (rejected {tx.rejected})", soft_wrap=True)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(t.packets < tx.sent and not t.error for t in tallies):
            time.sleep(0.02)
        for svc in services:
            svc.stop(drain=True, timeout=2.0)  # the consumers take what is queued, then see the end
        for th in threads:
            th.join(5.0)
        con.print(f"what each consumer received ({n} frames sent):")
        table = Table()
        for col, just in (("face", "left"), ("packets", "right"), ("bytes", "right"), ("in order", "center")):
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for t in tallies:
            table.add_row(t.face, str(t.packets), str(t.octets), "yes" if t.in_order else "no")
        con.print(table)
        for t, svc in zip(tallies, services):
            con.print(f"{t.face}: {identity(svc.stats())}", soft_wrap=True, markup=False)
            if t.error:
                con.print(f"{t.face} consumer failed: {t.error}", soft_wrap=True, markup=False)
        if writer is not None:
            st = services[0].stats()
            writer.write_stats(ifrecv=st.kernel_packets, ifdrop=st.kernel_drops, osdrop=st.queue_drops,
                               usrdeliv=tallies[0].packets)
            writer.close()
            paths = list(writer.paths)
            writer = None
            con.print(f"pcapng of what the sync consumer received: {', '.join(map(str, paths))}\n"
                      f"(kept, since writing it is part of the demo; remove it with: rm -r {tmpdir})",
                      soft_wrap=True, markup=False)
        ok = all(t.packets == tx.sent == n and t.in_order and not t.error for t in tallies) and \
            all(svc.stats().balanced for svc in services)
        complete = True
        return EXIT_OK if ok else EXIT_ERROR
    except _Interrupted as e:
        err.print(f"{PROG} demo: interrupted by {e}; cleaning up", soft_wrap=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err.print(f"{PROG} demo: interrupted; cleaning up", soft_wrap=True)
        return EXIT_INTERRUPTED
    finally:
        # No second interruption while cleaning up.
        for s in old:
            signal.signal(s, signal.SIG_IGN)
        for svc in services:
            svc.stop()
        for th in threads:
            th.join(3.0)
        if injector is not None:
            injector.close(timeout=0)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        if tmpdir is not None and not complete:
            shutil.rmtree(tmpdir, ignore_errors=True)
        world.remove()
        if complete:
            con.print(f"removed namespace {world.ns} and its veth pair", soft_wrap=True)
        for s, h in old.items():
            signal.signal(s, h)
