"""Targets of the WorkerPool tests, in their own module: the workers import
them by name (spawn and forkserver), without the test modules' imports."""

from __future__ import annotations

import os
import struct
import threading
import time
from typing import Any

import netring_chan as nc

# The payload of a test frame (after Ethernet 14 + IPv4 20 + UDP 8 bytes):
# flow number and per-flow sequence number.
PAYLOAD = 42
TAG = b"NCWK"


def flow_seq(data: bytes) -> tuple[int, int] | None:
    """(flow, seq) of a test frame, None for anything else on the wire."""
    if len(data) < PAYLOAD + 12 or data[PAYLOAD:PAYLOAD + 4] != TAG:
        return None
    f, s = struct.unpack_from("!II", data, PAYLOAD + 4)
    return f, s


def record(ctx: nc.WorkerContext) -> dict[str, Any]:
    """Emit (worker, flow, seq) of every test frame; return how many this worker saw."""
    n = 0
    for pkt in ctx:
        fs = flow_seq(pkt.data)
        if fs is not None:
            ctx.emit((ctx.index, fs[0], fs[1]))
            n += 1
    return {"index": ctx.index, "seen": n, "pid": os.getpid()}


def count_batches(ctx: nc.WorkerContext) -> int:
    """Count packets a batch at a time (the benchmark's drain)."""
    n = 0
    for b in ctx.batches():
        n += len(b)
    return n


async def record_async(ctx: nc.WorkerContext) -> dict[str, Any]:
    """``record`` as an async target: asyncio or trio, through ``channel()``."""
    import sniffio

    n = 0
    async with ctx.service.channel() as rx:
        async for pkt in rx:
            fs = flow_seq(pkt.data)
            if fs is not None:
                ctx.emit((ctx.index, fs[0], fs[1]))
                n += 1
    return {"index": ctx.index, "seen": n, "loop": sniffio.current_async_library()}


def idle(ctx: nc.WorkerContext) -> int:
    """Read until stopped; report the CPU set and the pid once."""
    ctx.emit(("hello", ctx.index, os.getpid(), sorted(os.sched_getaffinity(0)), ctx.group_id))
    for _ in ctx:
        pass
    return ctx.index


def fail_on_first(ctx: nc.WorkerContext) -> None:
    """Raise in the worker once it has started (worker 1 only)."""
    if ctx.index == 1:
        ctx.emit(("before", 1))  # still delivered: flushed before the failure is reported
        raise ValueError("boom in worker 1")
    for _ in ctx:
        pass


def stubborn(ctx: nc.WorkerContext) -> None:
    """Ignore the stop: the pool must kill it."""
    while True:
        time.sleep(0.05)


def write_shards(ctx: nc.WorkerContext, root: str) -> dict[str, Any]:
    """Write this worker's packets as Parquet shards of one dataset under
    ``root`` (hive partitions by worker and hour); return what it wrote."""
    path = os.path.join(root, "cap.parquet")
    with nc.open_parquet(path, partition={"worker": ctx.index}, partition_time="hour",
                         rotate=nc.Rotate(size=4096)) as w:
        for batch in ctx.batches():
            w.write(batch)
    return {"index": ctx.index, "packets": w.packets, "files": list(w.paths)}
class BadStr(Exception):
    """An exception whose ``str()`` itself raises."""

    def __str__(self) -> str:
        raise RuntimeError("str() of BadStr failed")


def raise_bad_str(ctx: nc.WorkerContext) -> None:
    """Raise an exception that cannot be turned into text."""
    raise BadStr("unprintable")


def mark_at_end(ctx: nc.WorkerContext, path: str) -> int:
    """Read until stopped, then write ``path`` (the pool stopped this worker cleanly)."""
    ctx.emit(("hello", ctx.index))
    for _ in ctx:
        pass
    with open(f"{path}.{ctx.index}", "w") as f:
        f.write("stopped cleanly")
    return ctx.index


def _refuse() -> None:
    raise RuntimeError("this object cannot be rebuilt in the parent")


class NoLoad:
    """Pickles in the worker, fails to unpickle in the parent."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse, ())


def emit_no_load(ctx: nc.WorkerContext) -> None:
    """Emit an object the parent cannot unpickle, then read until stopped."""
    ctx.emit(NoLoad())
    for _ in ctx:
        pass


def _slow_load(n: int) -> int:
    time.sleep(0.002)
    return n


class SlowLoad:
    """Unpickles slowly in the parent (2 ms each), so its collector lags."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self) -> tuple[Any, ...]:
        return (_slow_load, (self.n,))


def stubborn_emitter(ctx: nc.WorkerContext) -> None:
    """Emit 1200 slow-to-load objects (2.4 s of the parent's collector), then
    ignore the stop: the pool kills it."""
    for n in range(1200):
        ctx.emit(SlowLoad(n))
    while True:
        time.sleep(0.05)


def ends_badly(ctx: nc.WorkerContext, how: str) -> Any:
    """End the way ``how`` says, after emitting one object."""
    import signal
    import sys

    ctx.emit(("before", how))
    if how == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
        time.sleep(5)
    elif how == "sys.exit":
        sys.exit(3)
    elif how == "os._exit":
        os._exit(0)
    elif how == "unpicklable-return":
        return lambda: None
    elif how == "return-at-once":
        return "done"
    return None


def fork_and_idle(ctx: nc.WorkerContext) -> None:
    """Fork a child that sleeps (holding every descriptor the worker had),
    emit its pid, then read until stopped."""
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    ctx.emit(("child", pid))
    for _ in ctx:
        pass


def _threads(ctx: nc.WorkerContext) -> tuple[Any, ...]:
    return ("threads", ctx.index, sorted(t.name for t in threading.enumerate()), threading.active_count())


def report_threads(ctx: nc.WorkerContext, how: str) -> int:
    """Read (``how``: "packets" or "batches") until stopped; at the first
    packet, emit this process's threads; return the packets read."""
    n = 0
    if how == "packets":
        for _ in ctx:
            if not n:
                ctx.emit(_threads(ctx))
            n += 1
    else:
        for b in ctx.batches():
            if not n:
                ctx.emit(_threads(ctx))
            n += len(b)
    return n


async def report_threads_async(ctx: nc.WorkerContext) -> int:
    """``report_threads`` as an async target: its service has a thread."""
    n = 0
    async with ctx.service.channel() as rx:
        async for _ in rx:
            if not n:
                ctx.emit(_threads(ctx))
            n += 1
    return n


def read_some(ctx: nc.WorkerContext, want: int, k: int, how: str) -> int:
    """Once the ring accepted ``want`` packets, read ``k`` packets and break
    (``how="packets"``: mid-batch) or one batch (``"batches"``), emit how
    many, then leave the ring unread until the pool stops this worker."""
    src = ctx.service.sources[0]
    while src.stats().packets < want:
        time.sleep(0.01)
    n = 0
    if how == "packets":
        for _ in ctx:
            n += 1
            if n == k:
                break
    else:
        for b in ctx.batches():
            n = len(b)
            break
    ctx.emit(("read", n))
    while not ctx.stopping:
        time.sleep(0.01)
    return n


def idle_until_stopped(ctx: nc.WorkerContext) -> float:
    """Iterate an idle ring until stopped; return when the iteration ended
    (``time.monotonic()``: one clock for every process)."""
    ctx.emit(("hello", ctx.index))
    for _ in ctx:
        pass
    return time.monotonic()


def sync_asks_for_a_loop(ctx: nc.WorkerContext) -> None:
    """A plain target that asks for an async face (which only an async target has)."""
    ctx.service.asyncio()


def never_read(ctx: nc.WorkerContext, want: int) -> int:
    """Once the ring accepted ``want`` packets, emit, then never read (the
    service never starts) until the pool stops this worker."""
    src = ctx.service.sources[0]
    while src.stats().packets < want:
        time.sleep(0.01)
    ctx.emit(("held", want))
    while not ctx.stopping:
        time.sleep(0.01)
    return 0


class Pickled:
    """Records in its pickle how many times it was pickled before."""

    def __init__(self, times: int = 0) -> None:
        self.times = times

    def __reduce__(self) -> tuple[Any, ...]:
        self.times += 1
        return (Pickled, (self.times,))


def return_pickled(ctx: nc.WorkerContext) -> Pickled:
    """Return at once an object that counts its pickles."""
    return Pickled()
