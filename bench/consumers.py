"""The consumers the benchmark compares, one small function per mode.

Every consumer does the same per-packet work, the *touch*: the packet's data
reaches Python code as a bytes-like object (its length is added to a running
total, which the harness checks) and so does its timestamp. A consumer gets a
context from the harness (``LiveCtx`` / ``DrainCtx``): it opens its socket,
calls ``ctx.ready()`` (live: the load starts) or ``ctx.fill(stats)`` (drain:
the ring is filled and checked while it waits), consumes, and returns a
``Result``.

To add a face: write ``live_x(ctx)`` and ``drain_x(ctx)`` and append a
``Consumer`` to ``CONSUMERS``; ``missing`` says why it cannot run here (a
module not on main yet, a package not installed), and the harness prints that
instead of failing.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import resource
import select
import time
from typing import Any, Callable, Protocol

from _lab import FRAME_LEN, BenchError

Stats = Callable[[], "tuple[int, int]"]  # -> (kernel packets incl. drops, kernel drops)


@dataclasses.dataclass
class Result:
    """What one consumer run delivered and what the kernel counted."""

    delivered: int  # packets whose data and timestamp reached Python code
    nbytes: int  # total of len(data) over them (checked against 64 * delivered)
    kernel_packets: int  # frames the socket accepted, including kernel drops
    kernel_drops: int  # frames that found the ring full
    queue_drops: int = 0  # services only: dropped at the bounded queue
    seconds: float = 0.0  # drain: time from the first read to the last packet


class LiveCtx(Protocol):
    ifname: str
    ring_bytes: int
    block_size: int
    block_timeout_ms: int

    def ready(self) -> None:
        """The socket is open: start the offered load."""

    def finished(self) -> bool:
        """The load is over and has settled: an idle consumer may stop now."""


class DrainCtx(Protocol):
    ifname: str
    ring_bytes: int
    block_size: int
    block_timeout_ms: int

    def fill(self, stats: Stats) -> int:
        """Fill the ring, check nothing was dropped, return the frame count."""

    def deadline(self) -> float:
        """``time.monotonic()`` value after which a drain is declared stuck."""


@dataclasses.dataclass(frozen=True)
class Consumer:
    name: str  # for --consumers
    label: str  # for the table
    live: Callable[[Any], Result]
    drain: Callable[[Any], Result]
    missing: Callable[[], str | None] = lambda: None
    peer: bool = False


# --- the drain clock ------------------------------------------------------------

#: The process's CPU time (all its threads: a service's producer too) over
#: the last drain's timed section, beside the wall time it returns.
CPU_SECONDS = 0.0
#: Minor page faults of the process over the same section.
FAULTS = 0
_cpu0 = 0.0
_faults0 = 0


def clock_start() -> float:
    """Start a drain's timing: ``perf_counter()``, and the process CPU time aside."""
    global _cpu0, _faults0
    _cpu0 = time.process_time()
    _faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    return time.perf_counter()


def clock_stop(t0: float) -> float:
    """Wall seconds since ``clock_start`` returned ``t0``; sets ``CPU_SECONDS``."""
    global CPU_SECONDS, FAULTS
    CPU_SECONDS = time.process_time() - _cpu0
    t = time.perf_counter() - t0
    FAULTS = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - _faults0
    return t


# --- netring_chan Capture, called directly ---------------------------------------


def _capture(ctx: LiveCtx | DrainCtx) -> Any:
    import netring_chan as nc

    return nc.Capture(ctx.ifname, block_size=ctx.block_size,
                      block_count=max(1, ctx.ring_bytes // ctx.block_size),
                      block_timeout_ms=ctx.block_timeout_ms)


def _xdp(attach: str) -> Callable[[LiveCtx | DrainCtx], Any]:
    """An RX-only ``XdpSocket`` on queue 0 (its own program, ``attach`` mode) of 2 KiB
    frames: live, as many as the ring bytes every consumer gets; drain, one per frame
    the harness puts in (a UMEM frame holds one packet whatever its size)."""
    def open_(ctx: LiveCtx | DrainCtx) -> Any:
        import netring_chan as nc

        frames = getattr(ctx, "frames", 0) or ctx.ring_bytes // 2048
        ring = 1 << max(0, frames - 1).bit_length()
        return nc.XdpSocket(ctx.ifname, mode="rx", attach=attach, frame_size=2048, frame_count=frames,
                            fill_size=ring, rx_size=ring, batch_size=1024)
    return open_


def _touch_direct(batch: Any) -> int:
    """Zero-copy: a ``Packet`` view per frame, its memoryview and timestamp."""
    nbytes = 0
    for p in batch:
        nbytes += len(p.data)
        ts = p.timestamp_ns  # noqa: F841 - the touch
    return nbytes


def _touch_owned_each(batch: Any) -> int:
    """Copy the block out (one C call), then one ``OwnedPacket`` per frame."""
    with batch:
        owned = batch.to_owned()
    nbytes = 0
    for p in owned:
        nbytes += len(p.data)
        ts = p.timestamp_ns  # noqa: F841
    return nbytes


def _touch_owned_bulk(batch: Any) -> int:
    """Copy the block out, then the columns: ``datas()`` with ``timestamps_ns``."""
    with batch:
        owned = batch.to_owned()
    nbytes = 0
    for data, ts in zip(owned.datas(), owned.timestamps_ns):
        nbytes += len(data)
    return nbytes


def _capture_live(touch: Callable[[Any], int], opener: Callable[[Any], Any] = _capture) -> Callable[[LiveCtx], Result]:
    def live(ctx: LiveCtx) -> Result:
        n = nbytes = 0
        with opener(ctx) as cap:
            ctx.ready()
            while True:
                b = cap.next_batch_blocking(0.1)
                if b is None:
                    if ctx.finished():
                        break
                    continue
                with b:
                    n += len(b)
                    nbytes += touch(b)
            st = cap.stats()
        return Result(n, nbytes, st.packets, st.drops)
    return live


def _capture_drain(touch: Callable[[Any], int],
                   opener: Callable[[Any], Any] = _capture) -> Callable[[DrainCtx], Result]:
    def drain(ctx: DrainCtx) -> Result:
        n = nbytes = 0
        with opener(ctx) as cap:
            def stats() -> tuple[int, int]:
                s = cap.stats()
                return s.packets, s.drops
            want = ctx.fill(stats)
            end = ctx.deadline()
            t0 = clock_start()
            while n < want:
                b = cap.next_batch_blocking(max(0.0, end - time.monotonic()))
                if b is None:
                    raise BenchError(f"drain stuck after {n} of {want} packets")
                with b:
                    n += len(b)
                    nbytes += touch(b)
            seconds = clock_stop(t0)
            st = cap.stats()
        return Result(n, nbytes, st.packets, st.drops, seconds=seconds)
    return drain


# --- the peer: libpcap through pypcap ------------------------------------------------


def _pypcap_missing() -> str | None:
    if importlib.util.find_spec("pcap") is None:
        return ("pypcap not installed: apt-get install -y libpcap-dev && pip install pypcap "
                "(or pip install -e '.[bench]')")
    return None


def _pcap(ctx: LiveCtx | DrainCtx) -> Any:
    import pcap

    # immediate=False keeps libpcap on TPACKET_V3 (immediate mode switches it
    # to V2); timeout_ms becomes the block retire timeout; buffer_size gives
    # it the same ring bytes as ours (in 256 KiB blocks, libpcap's choice).
    p = pcap.pcap(ctx.ifname, promisc=False, timeout_ms=ctx.block_timeout_ms, immediate=False,
                  timestamp_in_ns=True, buffer_size=ctx.ring_bytes)
    # Non-blocking, with our own poll: libpcap's blocking dispatch on V3 waits
    # in poll() with the GIL held and without a timeout, so an idle live run
    # could never end.
    p.setnonblock(True)
    return p


def _pcap_dispatch(p: Any, cb: Callable[..., None]) -> int:
    k = int(p.dispatch(-1, cb))
    if k < 0:
        raise BenchError(f"pcap_dispatch: {p.geterr()}")
    return k


def live_pypcap(ctx: LiveCtx) -> Result:
    def noop(ts: int, data: bytes) -> None:
        pass

    p = _pcap(ctx)
    try:
        fd = p.fileno()
        n = 0
        ctx.ready()
        while True:
            k = _pcap_dispatch(p, noop)
            if k:
                n += k
                continue
            if not select.select([fd], [], [], 0.1)[0] and ctx.finished():
                break
        recv, drops = p.stats()[:2]
    finally:
        p.close()
    return Result(n, FRAME_LEN * n, recv, drops)  # a no-op callback does not measure bytes


def drain_pypcap(ctx: DrainCtx) -> Result:
    nbytes = 0

    def touch(ts: int, data: bytes) -> None:
        nonlocal nbytes
        nbytes += len(data)

    p = _pcap(ctx)
    try:
        fd = p.fileno()
        def stats() -> tuple[int, int]:
            recv, drops = p.stats()[:2]
            return int(recv), int(drops)
        want = ctx.fill(stats)
        end = ctx.deadline()
        n = 0
        t0 = clock_start()
        while n < want:
            k = _pcap_dispatch(p, touch)
            if k:
                n += k
                continue
            if not select.select([fd], [], [], max(0.0, end - time.monotonic()))[0]:
                raise BenchError(f"pypcap drain stuck after {n} of {want} packets")
        seconds = clock_stop(t0)
        recv, drops = p.stats()[:2]
    finally:
        p.close()
    return Result(n, nbytes, recv, drops, seconds=seconds)


# --- the thread service (netring_chan.threads.CaptureService) ---------------------
#
# Live: consume until the load is over, then stop() the service (it sweeps
# what the ring still holds into the queue) and consume the rest to the end.
# Drain: the service is made but not started while the ring fills; the clock
# runs from start() to the last packet, producer thread and consumer in
# parallel. Per-packet faces see no block boundaries, so in drain mode they
# compare the running byte total with the expected one per packet (one int
# comparison) to know when they are done.


def _bulk(owned: Any) -> int:
    nbytes = 0
    for data, ts in zip(owned.datas(), owned.timestamps_ns):
        nbytes += len(data)
    return nbytes


def _service(ctx: LiveCtx | DrainCtx, opener: Callable[[Any], Any] = _capture) -> tuple[Any, Any]:
    import netring_chan as nc

    cap = opener(ctx)
    return nc.CaptureService(cap), cap


def _svc_result(svc: Any, nbytes: int, seconds: float = 0.0) -> Result:
    st = svc.stats()
    if st.queued:
        raise BenchError(f"{st.queued} packets left in the service queue")
    return Result(st.delivered, nbytes, st.kernel_packets, st.kernel_drops, st.queue_drops, seconds)


def _cap_stats(cap: Any) -> Stats:
    def stats() -> tuple[int, int]:
        s = cap.stats()
        return s.packets, s.drops
    return stats


def live_svc_sync(ctx: LiveCtx) -> Result:
    svc, _ = _service(ctx)
    nbytes = 0
    with svc:
        ctx.ready()
        while not ctx.finished():
            for pkt in svc.packets(timeout=0.1):
                nbytes += len(pkt.data)
                ts = pkt.timestamp_ns  # noqa: F841
        svc.stop()
        for pkt in svc.packets():
            nbytes += len(pkt.data)
            ts = pkt.timestamp_ns  # noqa: F841
    return _svc_result(svc, nbytes)


def drain_svc_sync(ctx: DrainCtx) -> Result:
    svc, cap = _service(ctx)
    nbytes = 0
    try:
        stop_at = FRAME_LEN * ctx.fill(_cap_stats(cap))
        wait = ctx.deadline() - time.monotonic()
        t0 = clock_start()
        svc.start()
        for pkt in svc.packets(timeout=wait):
            nbytes += len(pkt.data)
            ts = pkt.timestamp_ns  # noqa: F841
            if nbytes >= stop_at:
                break
        seconds = clock_stop(t0)
    finally:
        svc.stop()
    return _svc_result(svc, nbytes, seconds)


def live_svc_sync_bulk(ctx: LiveCtx, opener: Callable[[Any], Any] = _capture) -> Result:
    svc, _ = _service(ctx, opener)
    nbytes = 0
    with svc:
        ctx.ready()
        while not ctx.finished():
            for ob in svc.batches(timeout=0.1):
                nbytes += _bulk(ob)
        svc.stop()
        for ob in svc.batches():
            nbytes += _bulk(ob)
    return _svc_result(svc, nbytes)


def drain_svc_sync_bulk(ctx: DrainCtx, opener: Callable[[Any], Any] = _capture) -> Result:
    svc, cap = _service(ctx, opener)
    n = nbytes = 0
    try:
        want = ctx.fill(_cap_stats(cap))
        wait = ctx.deadline() - time.monotonic()
        t0 = clock_start()
        svc.start()
        for ob in svc.batches(timeout=wait):
            nbytes += _bulk(ob)
            n += len(ob)
            if n >= want:
                break
        seconds = clock_stop(t0)
    finally:
        svc.stop()
    return _svc_result(svc, nbytes, seconds)


def _svc_asyncio(bulk: bool) -> tuple[Callable[[LiveCtx], Result], Callable[[DrainCtx], Result]]:
    import asyncio

    def live(ctx: LiveCtx) -> Result:
        svc, _ = _service(ctx)
        nbytes = 0

        async def main() -> None:
            nonlocal nbytes
            async with svc.asyncio() as rx:
                ctx.ready()

                async def watch() -> None:
                    while not ctx.finished():
                        await asyncio.sleep(0.05)
                    # Stop the service (off the loop); the face then gives what
                    # is queued and ends. (rx.aclose() now also closes the face
                    # itself, which would end the loop before the queue is empty.)
                    await asyncio.to_thread(svc.stop)

                w = asyncio.create_task(watch())
                if bulk:
                    async for ob in rx.batches():
                        nbytes += _bulk(ob)
                else:
                    async for pkt in rx:
                        nbytes += len(pkt.data)
                        ts = pkt.timestamp_ns  # noqa: F841
                await w

        try:
            asyncio.run(main())
        finally:
            svc.stop()
        return _svc_result(svc, nbytes)

    def drain(ctx: DrainCtx) -> Result:
        svc, cap = _service(ctx)
        n = nbytes = 0
        seconds = 0.0

        async def main() -> None:
            nonlocal n, nbytes, seconds
            t0 = clock_start()
            async with svc.asyncio() as rx:
                if bulk:
                    async for ob in rx.batches():
                        nbytes += _bulk(ob)
                        n += len(ob)
                        if n >= want:
                            break
                else:
                    async for pkt in rx:
                        nbytes += len(pkt.data)
                        ts = pkt.timestamp_ns  # noqa: F841
                        if nbytes >= stop_at:
                            break
                seconds = clock_stop(t0)

        try:
            want = ctx.fill(_cap_stats(cap))
            stop_at = FRAME_LEN * want
            asyncio.run(asyncio.wait_for(main(), ctx.deadline() - time.monotonic()))
        finally:
            svc.stop()
        return _svc_result(svc, nbytes, seconds)

    return live, drain


def _svc_trio(bulk: bool) -> tuple[Callable[[LiveCtx], Result], Callable[[DrainCtx], Result]]:
    def live(ctx: LiveCtx) -> Result:
        import trio

        svc, _ = _service(ctx)
        nbytes = 0

        async def main() -> None:
            nonlocal nbytes
            async with svc.trio() as rx, trio.open_nursery() as nursery:
                ctx.ready()

                async def watch() -> None:
                    while not ctx.finished():
                        await trio.sleep(0.05)
                    # Stop the service (off the loop); the channel then gives
                    # what is queued and ends with EndOfChannel.
                    await trio.to_thread.run_sync(svc.stop)

                nursery.start_soon(watch)
                if bulk:
                    async for ob in rx.batches():
                        nbytes += _bulk(ob)
                else:
                    async for pkt in rx:
                        nbytes += len(pkt.data)
                        ts = pkt.timestamp_ns  # noqa: F841

        try:
            trio.run(main)
        finally:
            svc.stop()
        return _svc_result(svc, nbytes)

    def drain(ctx: DrainCtx) -> Result:
        import trio

        svc, cap = _service(ctx)
        n = nbytes = 0
        seconds = 0.0

        async def main() -> None:
            nonlocal n, nbytes, seconds
            with trio.fail_after(ctx.deadline() - time.monotonic()):
                t0 = clock_start()
                async with svc.trio() as rx:
                    if bulk:
                        async for ob in rx.batches():
                            nbytes += _bulk(ob)
                            n += len(ob)
                            if n >= want:
                                break
                    else:
                        async for pkt in rx:
                            nbytes += len(pkt.data)
                            ts = pkt.timestamp_ns  # noqa: F841
                            if nbytes >= stop_at:
                                break
                    seconds = clock_stop(t0)

        try:
            want = ctx.fill(_cap_stats(cap))
            stop_at = FRAME_LEN * want
            trio.run(main)
        finally:
            svc.stop()
        return _svc_result(svc, nbytes, seconds)

    return live, drain


# --- fd-driven async faces without a thread (netring_chan.aio) -------------------
#
# Live: a watcher task closes the face once the load is over and the face has
# taken no block for 0.2 s (it runs between blocks, so it never cuts a block
# short). Drain: the ring fills before the face exists; the clock runs from
# the first receive to the last packet.


def _aio(flavour: str, bulk: bool) -> tuple[Callable[[LiveCtx], Result], Callable[[DrainCtx], Result]]:
    def face(cap: Any) -> Any:
        import netring_chan as nc

        cls = nc.AsyncCapture if flavour == "asyncio" else nc.TrioCapture
        return cls(cap, owns=True)

    def runner() -> tuple[Callable[[Callable[[], Any]], Any], Callable[[float], Any]]:
        if flavour == "asyncio":
            import asyncio

            return (lambda f: asyncio.run(f())), asyncio.sleep
        import trio

        return trio.run, trio.sleep

    def live(ctx: LiveCtx) -> Result:
        run, sleep = runner()
        cap = _capture(ctx)
        nbytes = 0
        acap = face(cap)

        async def watch() -> None:
            last = -1
            while True:
                await sleep(0.1)
                if ctx.finished():
                    k = acap.statistics().packets
                    if k == last:
                        break
                    last = k
            acap.close()

        async def consume() -> None:
            nonlocal nbytes
            if bulk:
                while True:
                    try:
                        ob = await acap.recv()
                    except Exception:  # ClosedError: the watcher closed the face
                        if acap.closed:
                            return
                        raise
                    nbytes += _bulk(ob)
            else:
                async for pkt in acap:
                    nbytes += len(pkt.data)
                    ts = pkt.timestamp_ns  # noqa: F841

        async def main() -> None:
            ctx.ready()
            if flavour == "asyncio":
                import asyncio

                w = asyncio.create_task(watch())
                await consume()
                await w
            else:
                import trio

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    await consume()

        try:
            run(main)
        finally:
            acap.close()
        st = cap.stats()
        return Result(acap.statistics().packets, nbytes, st.packets, st.drops)

    def drain(ctx: DrainCtx) -> Result:
        run, _ = runner()
        cap = _capture(ctx)
        n = nbytes = 0
        seconds = 0.0
        try:
            want = ctx.fill(_cap_stats(cap))
        except BaseException:
            cap.close()
            raise
        stop_at = FRAME_LEN * want
        acap = face(cap)

        async def main() -> None:
            nonlocal n, nbytes, seconds
            t0 = clock_start()
            if bulk:
                while n < want:
                    ob = await acap.recv()
                    nbytes += _bulk(ob)
                    n += len(ob)
            else:
                async for pkt in acap:
                    nbytes += len(pkt.data)
                    ts = pkt.timestamp_ns  # noqa: F841
                    if nbytes >= stop_at:
                        break
            seconds = clock_stop(t0)

        try:
            run(main)
            delivered = acap.statistics().packets
        finally:
            acap.close()
        st = cap.stats()
        return Result(delivered, nbytes, st.packets, st.drops, seconds=seconds)

    return live, drain


def _needs(*names: str, packages: tuple[str, ...] = ()) -> Callable[[], str | None]:
    """A ``missing`` check: these netring_chan names and these packages must exist."""
    def missing() -> str | None:
        try:
            import netring_chan as nc
        except ImportError as e:
            return f"netring_chan not importable ({e})"
        absent = [n for n in names if not hasattr(nc, n)]
        if absent:
            return f"not on main yet: netring_chan.{', '.join(absent)}"
        gone = [p for p in packages if importlib.util.find_spec(p) is None]
        return f"package(s) not installed: {', '.join(gone)}" if gone else None
    return missing


_sa, _sab = _svc_asyncio(False), _svc_asyncio(True)
_st, _stb = _svc_trio(False), _svc_trio(True)
_aa, _aab = _aio("asyncio", False), _aio("asyncio", True)
_at, _atb = _aio("trio", False), _aio("trio", True)

CONSUMERS: list[Consumer] = [
    Consumer("pypcap", "pypcap dispatch (libpcap)", live_pypcap, drain_pypcap,
             missing=_pypcap_missing, peer=True),
    Consumer("direct", "Capture batches, zero-copy Packet", _capture_live(_touch_direct),
             _capture_drain(_touch_direct)),
    Consumer("owned", "Capture to_owned(), per OwnedPacket", _capture_live(_touch_owned_each),
             _capture_drain(_touch_owned_each)),
    Consumer("owned-bulk", "Capture to_owned(), datas()+timestamps_ns",
             _capture_live(_touch_owned_bulk), _capture_drain(_touch_owned_bulk)),
    Consumer("svc-sync", "CaptureService sync, per packet", live_svc_sync, drain_svc_sync,
             missing=_needs("CaptureService")),
    Consumer("svc-sync-bulk", "CaptureService sync, batches bulk", live_svc_sync_bulk, drain_svc_sync_bulk,
             missing=_needs("CaptureService")),
    Consumer("svc-asyncio", "CaptureService asyncio, per packet", *_sa,
             missing=_needs("CaptureService", packages=("janus",))),
    Consumer("svc-asyncio-bulk", "CaptureService asyncio, batches bulk", *_sab,
             missing=_needs("CaptureService", packages=("janus",))),
    Consumer("svc-trio", "CaptureService trio, per packet", *_st,
             missing=_needs("CaptureService", packages=("trio",))),
    Consumer("svc-trio-bulk", "CaptureService trio, batches bulk", *_stb,
             missing=_needs("CaptureService", packages=("trio",))),
    Consumer("aio-asyncio", "AsyncCapture (fd, no thread), per packet", *_aa,
             missing=_needs("AsyncCapture")),
    Consumer("aio-asyncio-bulk", "AsyncCapture recv() bulk", *_aab,
             missing=_needs("AsyncCapture")),
    Consumer("aio-trio", "TrioCapture (fd, no thread), per packet", *_at,
             missing=_needs("TrioCapture", packages=("trio",))),
    Consumer("aio-trio-bulk", "TrioCapture recv() bulk", *_atb,
             missing=_needs("TrioCapture", packages=("trio",))),
    # AF_XDP: the same touches over an XdpSocket (native XDP on the veth, copy mode).
    Consumer("xdp-direct", "XdpSocket native, zero-copy Packet", _capture_live(_touch_direct, _xdp("native")),
             _capture_drain(_touch_direct, _xdp("native")), missing=_needs("XdpSocket")),
    Consumer("xdp-owned-bulk", "XdpSocket native, to_owned() bulk",
             _capture_live(_touch_owned_bulk, _xdp("native")), _capture_drain(_touch_owned_bulk, _xdp("native")),
             missing=_needs("XdpSocket")),
    Consumer("xdp-skb-owned-bulk", "XdpSocket SKB mode, to_owned() bulk",
             _capture_live(_touch_owned_bulk, _xdp("skb")), _capture_drain(_touch_owned_bulk, _xdp("skb")),
             missing=_needs("XdpSocket")),
    Consumer("xdp-svc-sync-bulk", "CaptureService(XdpSocket native) bulk",
             lambda ctx: live_svc_sync_bulk(ctx, _xdp("native")),
             lambda ctx: drain_svc_sync_bulk(ctx, _xdp("native")), missing=_needs("XdpSocket")),
]
