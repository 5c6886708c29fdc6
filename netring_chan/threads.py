"""The capture service: one OS thread per source feeding one bounded queue.

``CaptureService(sources, capacity=..., overflow="block"|"drop")`` owns its
sources (anything with the source protocol of DESIGN.md: ``Capture`` today)
and runs one named daemon thread per source. Each thread loops::

    batch = source.next_batch_blocking(short timeout)   # poll, GIL released
    owned = batch.to_owned()                            # one C copy, GIL released
    batch.release()                                     # block back to the kernel at once
    queue.put(owned)                                    # policy: block or drop

The queue and its policy (bound in packets, overflow, stop, drain, error
hand-off, counters) live once in ``_queue.BatchQueue``; the three consumer
faces are thin:

* sync, on the service itself: ``for pkt in svc``, ``get(timeout)``,
  ``get_batch(timeout)``, ``get_nowait()``, from any thread;
* asyncio: ``async with svc.asyncio() as rx: async for pkt in rx`` (janus'
  async side; the loop never blocks on the service);
* trio: ``async with svc.trio() as rx: async for pkt in rx``, a
  ``trio.abc.ReceiveChannel`` woken from the source threads through the trio
  token; ``EndOfChannel`` at stop.

Per-packet faces take a whole batch from the queue and hand out its packets
(built by C-driven iteration), so there is no queue operation per packet.

Accounting. For every source, the kernel's ``packets`` (which include its
``drops``) either reached the ring or were dropped by the kernel; what
reached the ring is copied into the queue or dropped there (``overflow=
"drop"``); what is queued is either handed to a consumer (``delivered``) or
still queued. A batch counts as delivered when a consumer takes it; a
per-packet face that is closed in the middle of a batch puts the rest back at
the head of the queue, un-delivered. At stop each thread first makes its
source stop accepting frames (for a ``Capture``: a reject-all BPF filter, so
the kernel neither counts nor queues anything more), waits for the kernel to
hand over its partly filled block (two block timeouts) and moves whatever the
ring still holds into the queue (beyond the bound), then closes the source,
which reads the final kernel counters. So for a finished run::

    kernel packets == delivered + kernel drops + queue drops + still queued

exactly. (With ``block_timeout_ms`` above 190 ms the wait is capped and
frames in a partly filled block at stop may be lost to the count.)
"""

from __future__ import annotations

import asyncio
import atexit
import ctypes
import dataclasses
import queue
import threading
import time
import warnings
import weakref
from array import array
from contextlib import asynccontextmanager
from itertools import chain
from typing import (
    Any, AsyncIterator, Callable, Iterator, Protocol, Sequence, runtime_checkable,
)

from ._queue import BatchQueue, Countdown, Overflow, ServiceBase, ServiceError, wait_trio
from .errors import ClosedError, ConfigError
from .packet import OwnedBatch, OwnedPacket, PacketBatch

__all__ = [
    "CaptureService",
    "CaptureSource",
    "ServiceStats",
    "SourceStats",
    "ServiceError",
    "Overflow",
    "AsyncioReceiver",
    "TrioReceiveChannel",
]

# How long a source thread sleeps in poll before it looks at the stop flag.
POLL_INTERVAL = 0.1
# stop() waits this long for the threads before it closes their sources
# from outside (which wakes any poll at once).
_JOIN_BUDGET = 0.8
# Cap on the wait for the kernel to retire a partly filled block at stop.
_SETTLE_CAP = 0.4
# Classic BPF "ret #0": accept nothing. Attached at stop so the kernel stops
# accepting (and counting) frames while the ring is swept.
_REJECT_ALL = [(0x06, 0, 0, 0)]


@runtime_checkable
class CaptureSource(Protocol):
    """The source protocol (see DESIGN.md) as the service uses it."""

    def next_batch(self) -> PacketBatch | None: ...

    def next_batch_blocking(self, timeout: float | None = None) -> PacketBatch | None: ...

    def close(self) -> None: ...

    def stats(self) -> Any: ...


@dataclasses.dataclass(frozen=True)
class SourceStats:
    """Kernel counters of one source (totals since it opened)."""

    name: str
    packets: int  # frames the kernel accepted, including ``drops``
    drops: int  # frames the kernel could not place in the ring
    freezes: int  # times the ring was full and the kernel froze its queue


@dataclasses.dataclass(frozen=True)
class ServiceStats:
    """Counters of a service, all in packets.

    ``queue_drops``: dropped at the queue by ``overflow="drop"``;
    ``delivered``: handed to consumers; ``queued``: still in the queue;
    ``peak_queued``: the largest queue depth while running (at most
    ``capacity`` unless a single batch is larger than ``capacity``).
    For a finished run ``kernel_packets == delivered + kernel_drops +
    queue_drops + queued`` (see ``balanced``).
    """

    sources: tuple[SourceStats, ...]
    queue_drops: int
    delivered: int
    queued: int
    peak_queued: int
    capacity: int

    @property
    def kernel_packets(self) -> int:
        return sum(s.packets for s in self.sources)

    @property
    def kernel_drops(self) -> int:
        return sum(s.drops for s in self.sources)

    @property
    def kernel_freezes(self) -> int:
        return sum(s.freezes for s in self.sources)

    @property
    def balanced(self) -> bool:
        """Whether every packet the kernel accepted is accounted for."""
        return self.kernel_packets == self.delivered + self.kernel_drops + self.queue_drops + self.queued


# -- OS thread names -------------------------------------------------------------

_PR_SET_NAME = 15
try:
    _prctl: Callable[..., int] | None = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux/glibc
    _prctl = None


def _set_os_thread_name(name: str) -> None:
    """Name the calling thread for ps/top/gdb (the kernel keeps 15 bytes)."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("utf-8", "replace")[:15]), 0, 0, 0)


# -- the rest of a partly consumed batch ---------------------------------------------


class _RestBatch(OwnedBatch):
    """The packets a per-packet consumer had not handed out when it closed.

    Put back at the head of the queue so the count stays exact; an
    ``OwnedBatch`` to the consumers, built from ``OwnedPacket`` objects.
    """

    __slots__ = ("_pkts",)

    def __init__(self, pkts: list[OwnedPacket], source: int) -> None:
        super().__init__([], b"", 0, source=source)
        self._pkts = pkts

    def __len__(self) -> int:
        return len(self._pkts)

    def __iter__(self) -> Iterator[OwnedPacket]:
        return iter(self._pkts)

    def __getitem__(self, i: Any) -> Any:
        return self._pkts[i]

    def datas(self) -> list[bytes]:
        return [p.data for p in self._pkts]

    @property
    def timestamps_ns(self) -> memoryview:
        return memoryview(array("Q", [p.timestamp_ns for p in self._pkts]))

    @property
    def wire_lens(self) -> memoryview:
        return memoryview(array("I", [p.wire_len for p in self._pkts]))

    @property
    def caplens(self) -> memoryview:
        return memoryview(array("I", [len(p.data) for p in self._pkts]))

    @property
    def nbytes(self) -> int:
        return sum(len(p.data) for p in self._pkts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_RestBatch, (self._pkts, self.source))

    def __repr__(self) -> str:
        return f"<OwnedBatch (rest) {len(self._pkts)} packets>"


class _Cursor:
    """A consumer's position inside its current batch."""

    __slots__ = ("it", "source")

    def __init__(self) -> None:
        self.it: Iterator[OwnedPacket] | None = None
        self.source = 0

    def set(self, batch: OwnedBatch) -> None:
        self.it = iter(batch)
        self.source = batch.source

    def take_rest(self) -> OwnedBatch | None:
        """What is left of the current batch, as a batch (None if nothing)."""
        it, self.it = self.it, None
        rest = list(it) if it is not None else None
        return _RestBatch(rest, self.source) if rest else None

    def give_back(self, core: BatchQueue[OwnedBatch]) -> None:
        it, self.it = self.it, None
        if it is not None:
            rest = list(it)
            if rest:
                core.give_back(_RestBatch(rest, self.source))


# -- the source threads ---------------------------------------------------------------


def _quiesce(src: Any) -> float:
    """Make ``src`` stop accepting frames; return how long to wait for its last block."""
    set_filter = getattr(src, "set_filter", None)
    tov = getattr(getattr(src, "config", None), "block_timeout_ms", None)
    if set_filter is None or not isinstance(tov, int):
        return 0.0
    set_filter(_REJECT_ALL)
    # The kernel's retire timer closes the partly filled block on the second
    # expiry at the latest (it first notes which block is active).
    return min(2 * tov / 1000 + 0.02, _SETTLE_CAP)


def _put(core: BatchQueue[OwnedBatch], batch: PacketBatch, index: int) -> None:
    with batch:
        owned = batch.to_owned()
    if len(owned):
        owned.source = index
        core.put(owned)


def _sweep(core: BatchQueue[OwnedBatch], src: Any, index: int) -> None:
    """At stop: move what the ring still holds into the queue (beyond the bound)."""
    deadline = time.monotonic() + _quiesce(src)
    while True:
        left = deadline - time.monotonic()
        b = src.next_batch_blocking(left) if left > 0 else src.next_batch()
        if b is None:
            if left <= 0:
                return
            continue
        _put(core, b, index)


def _source_loop(core: BatchQueue[OwnedBatch], src: Any, index: int, name: str,
                 poll: float, done: Callable[[], None]) -> None:
    # Holds no reference to the service, so an abandoned service can be
    # collected (and warn) while its threads run.
    _set_os_thread_name(name)
    try:
        while not core.closing:
            b = src.next_batch_blocking(poll)
            if b is not None:
                _put(core, b, index)
    except BaseException as e:  # noqa: BLE001 - handed to the consumers
        # A source closed by stop() from outside (see _end_stop) is no failure.
        if not (isinstance(e, ClosedError) and core.closing):
            core.fail(name, e)
    try:
        _sweep(core, src, index)
    except BaseException:  # noqa: BLE001 - a failed source: nothing more to save
        pass
    finally:
        try:
            src.close()  # reads the final kernel counters
        except BaseException as e:  # noqa: BLE001
            core.fail(name, e)
        done()


# -- the service ----------------------------------------------------------------------------

_live: weakref.WeakSet[CaptureService] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for svc in list(_live):
        svc.stop()


class CaptureService(ServiceBase):
    """OS threads reading sources into one bounded queue; sync, asyncio and trio faces.

    ``sources``: one source or a sequence of them (``Capture`` objects, e.g.
    several interfaces or the members of a fanout group); the service owns
    and closes them. ``capacity``: the queue bound, in packets; a batch is
    admitted whole when it fits in the room left, and a batch larger than
    the whole capacity only into an empty queue. ``overflow``: ``"block"``
    (the thread waits for room, the ring fills and the kernel drops, counted
    in the sources' stats) or ``"drop"`` (the newest batch is dropped at the
    queue, counted in ``queue_drops``). ``name`` prefixes the thread names.

    Start with ``start()`` or ``with``; ``stop()`` returns within a second.
    The sync face is this object: ``for pkt in svc``, ``get``, ``get_batch``,
    ``get_nowait``. ``asyncio()`` and ``trio()`` give the other faces.
    """

    def __init__(self, sources: CaptureSource | Sequence[CaptureSource], *, capacity: int = 65536,
                 overflow: Overflow | str = "block", name: str | None = None,
                 poll_interval: float = POLL_INTERVAL) -> None:
        self._started = False
        self._stopped = False
        srcs: list[Any] = [sources] if isinstance(sources, CaptureSource) else list(sources)  # type: ignore[arg-type]
        if not srcs:
            raise ConfigError("CaptureService needs at least one source")
        for s in srcs:
            if not isinstance(s, CaptureSource):
                raise ConfigError(f"not a capture source (needs next_batch, next_batch_blocking, close, stats): {s!r}")
        if len({id(s) for s in srcs}) != len(srcs):
            raise ConfigError("the same source was passed twice; one thread reads each source")
        if not isinstance(poll_interval, (int, float)) or not 0 < poll_interval <= 0.5:
            raise ConfigError(f"poll_interval must be in (0, 0.5] seconds, got {poll_interval!r}")
        self._core: BatchQueue[OwnedBatch] = BatchQueue(capacity, overflow)
        self.sources: tuple[Any, ...] = tuple(srcs)
        self.name = name or "nc-capture"
        self._poll = float(poll_interval)
        self._threads: list[threading.Thread] = []
        self._cursor = _Cursor()
        self._cursor_lock = threading.Lock()

    # -- life cycle --------------------------------------------------------------------

    def _source_name(self, i: int) -> str:
        s = self.sources[i]
        label = getattr(s, "interface", None) or str(i)
        return f"{self.name}-{label}"

    def start(self) -> CaptureService:
        """Start one thread per source. Idempotent; a stopped service cannot restart."""
        if self._stopped:
            raise ClosedError("the service was stopped; make a new one")
        if self._started:
            return self
        self._started = True
        done = Countdown(len(self.sources), self._core)
        for i, src in enumerate(self.sources):
            name = self._source_name(i)
            t = threading.Thread(target=_source_loop, name=name, daemon=True,
                                 args=(self._core, src, i, name, self._poll, done))
            self._threads.append(t)
        _live.add(self)
        for t in self._threads:
            t.start()
        return self

    def _begin_stop(self) -> bool:
        """Start stopping (never blocks); False if already stopped."""
        if self._stopped:
            return False
        self._stopped = True
        _live.discard(self)
        self._core.begin_close()
        return True

    def _threads_done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _end_stop(self) -> None:
        if not self._threads_done():
            # A thread is still in a source call: closing the source wakes it.
            for s in self.sources:
                try:
                    s.close()
                except Exception:  # noqa: BLE001
                    pass
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join(0.15)
        if not self._started:
            for s in self.sources:
                s.close()
        with self._cursor_lock:
            self._cursor.give_back(self._core)
        self._core.finish_close()

    def stop(self, drain: bool = False) -> list[OwnedBatch]:
        """Stop the threads and close the sources; returns within about a second.

        Idempotent. Consumers then receive what is still queued, then the
        end (``ClosedError`` from ``get``, ``EndOfChannel`` in trio, the end
        of iteration) or the error of a failed thread. ``drain=True`` takes
        what is still queued and returns it (see ``drain``).
        """
        if self._begin_stop():
            deadline = time.monotonic() + _JOIN_BUDGET
            me = threading.current_thread()
            for t in self._threads:
                if t is not me:
                    t.join(max(0.0, deadline - time.monotonic()))
            self._end_stop()
        return self.drain() if drain else []

    async def _stop_async(self, sleep: Callable[[float], Any]) -> None:
        if self._begin_stop():
            deadline = time.monotonic() + _JOIN_BUDGET
            while not self._threads_done() and time.monotonic() < deadline:
                await sleep(0.005)
            self._end_stop()

    def drain(self) -> list[OwnedBatch]:
        """Take every batch still queued, without waiting (they count as delivered)."""
        with self._cursor_lock:
            self._cursor.give_back(self._core)
        return self._core.drain()

    def __enter__(self) -> CaptureService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_stopped", True):
            warnings.warn(f"unstopped {self!r}", ResourceWarning, source=self)
            self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        return f"<CaptureService {self.name!r} {len(self.sources)} source(s) {state}>"

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> ServiceStats:
        """Per-source kernel counters and the queue's counters.

        Exact for a stopped service (the kernel counters are read when each
        source closes, after its thread stopped); while running, a snapshot.
        """
        srcs = []
        for i, s in enumerate(self.sources):
            st = s.stats()
            srcs.append(SourceStats(self._source_name(i), int(getattr(st, "packets", 0)),
                                    int(getattr(st, "drops", 0)), int(getattr(st, "freezes", 0))))
        c = self._core.counters()
        return ServiceStats(tuple(srcs), c.dropped, c.delivered, c.queued, c.peak, c.capacity)

    # -- the sync face ---------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise ClosedError("the service is not started: use `with svc:` or svc.start()")

    def get_batch(self, timeout: float | None = None) -> OwnedBatch:
        """The next owned batch; waits up to ``timeout`` s (``None``: until stop).

        Raises ``queue.Empty`` on timeout, ``ClosedError`` once stopped and
        empty, ``ServiceError`` (from the cause) if a source thread failed.
        """
        self._check_started()
        with self._cursor_lock:
            rest = self._cursor.take_rest()
        return rest if rest is not None else self._core.get(timeout)

    def get_nowait(self) -> OwnedPacket:
        """The next packet if one is queued, else ``queue.Empty``."""
        return self.get(0)

    def get(self, timeout: float | None = None) -> OwnedPacket:
        """The next packet; waits up to ``timeout`` s (``queue.Empty`` on timeout)."""
        lock = self._cursor_lock
        if lock.acquire(False):  # fast path: the next packet of the current batch
            it = self._cursor.it
            p = next(it, None) if it is not None else None
            lock.release()
            if p is not None:
                return p
        return self._get_slow(timeout)

    def _get_slow(self, timeout: float | None) -> OwnedPacket:
        self._check_started()
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._cursor_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise queue.Empty
        try:
            cur = self._cursor
            while True:
                if cur.it is not None:
                    p = next(cur.it, None)
                    if p is not None:
                        return p
                    cur.it = None
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                cur.set(self._core.get(left))
        finally:
            self._cursor_lock.release()

    def batches(self, timeout: float | None = None) -> Iterator[OwnedBatch]:
        """Owned batches until stop (or ``timeout`` s without one)."""
        return self._iterate(timeout, per_packet=False)  # type: ignore[return-value]

    def packets(self, timeout: float | None = None) -> Iterator[OwnedPacket]:
        """Owned packets until stop (or ``timeout`` s without a batch)."""
        return self._iterate(timeout, per_packet=True)  # type: ignore[return-value]

    def __iter__(self) -> Iterator[OwnedPacket]:
        return self.packets()

    def _iterate(self, timeout: float | None, per_packet: bool) -> Iterator[Any]:
        self._check_started()
        if per_packet:
            # chain.from_iterable steps through each batch's packets in C; the
            # generator below runs once per batch (not per packet) and its
            # cursor still sees how far the consumer got.
            return chain.from_iterable(self._each(timeout, per_packet))
        return self._each(timeout, per_packet)

    def _each(self, timeout: float | None, per_packet: bool) -> Iterator[Any]:
        core = self._core
        cur = _Cursor()
        try:
            while True:
                try:
                    b = core.get(timeout)
                except (ClosedError, queue.Empty):
                    return
                if not per_packet:
                    yield b
                    continue
                cur.set(b)
                yield cur.it
                cur.it = None
        except KeyboardInterrupt:
            # Ctrl-C while the consumer waited here: stop cleanly, then let it propagate.
            cur.give_back(core)
            self.stop()
            raise
        finally:
            cur.give_back(core)

    # -- the other faces -------------------------------------------------------------------

    def asyncio(self) -> AsyncioReceiver:
        """The asyncio face (see ``AsyncioReceiver``); starts the service if new."""
        if not self._stopped:
            self.start()
        return AsyncioReceiver(self)

    @asynccontextmanager
    async def trio(self) -> AsyncIterator[TrioReceiveChannel]:
        """``async with svc.trio() as rx``: start (if new), receive, and stop on exit."""
        import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

        if not self._stopped:
            self.start()
        rx = TrioReceiveChannel(self)
        try:
            yield rx
        finally:
            with trio.CancelScope(shield=True):
                await rx.aclose()


class AsyncioReceiver:
    """The asyncio face: ``async for pkt in rx``, ``await get()``, ``await get_batch()``.

    Waiting goes through janus' async side, so the event loop never blocks
    on the service; cancelling a waiting task loses nothing. ``async with``
    (or ``aclose()``) stops the service without blocking the loop. One
    service's asyncio face is bound to the first event loop that waits on it.
    """

    def __init__(self, svc: CaptureService) -> None:
        self._svc = svc
        self._core = svc._core
        self._cur = _Cursor()

    async def get_batch(self) -> OwnedBatch:
        """The next owned batch; ``ClosedError`` at the end, ``ServiceError`` on failure.

        After per-packet gets, first the rest of the current batch.
        """
        rest = self._cur.take_rest()
        if rest is not None:
            return rest
        b = await self._core.get_async()
        await asyncio.sleep(0)  # a schedule point per batch, even when the queue is never empty
        return b

    def get_nowait(self) -> OwnedPacket:
        """The next packet if one is ready, else ``queue.Empty``."""
        cur = self._cur
        if cur.it is not None:
            p = next(cur.it, None)
            if p is not None:
                return p
        cur.set(self._core.get_nowait())
        return next(cur.it)  # type: ignore[arg-type]

    async def get(self) -> OwnedPacket:
        """The next packet."""
        cur = self._cur
        while True:
            if cur.it is not None:
                p = next(cur.it, None)
                if p is not None:
                    return p
                cur.it = None
            cur.set(await self._next_batch())

    async def _next_batch(self) -> OwnedBatch:
        b = await self._core.get_async()
        await asyncio.sleep(0)
        return b

    def __aiter__(self) -> AsyncioReceiver:
        return self

    async def __anext__(self) -> OwnedPacket:
        it = self._cur.it
        if it is not None:
            p = next(it, None)
            if p is not None:
                return p
        try:
            return await self.get()
        except ClosedError:
            raise StopAsyncIteration from None

    async def batches(self) -> AsyncIterator[OwnedBatch]:
        """Owned batches until the service stops."""
        while True:
            try:
                yield await self.get_batch()
            except ClosedError:
                return

    def __del__(self) -> None:
        # Abandoned mid-batch (``break`` without ``aclose``): keep the count exact.
        cur = getattr(self, "_cur", None)
        if cur is not None:
            cur.give_back(self._core)

    async def aclose(self) -> None:
        """Hand back the rest of the current batch and stop the service."""
        await self._svc._stop_async(asyncio.sleep)
        self._cur.give_back(self._core)

    async def __aenter__(self) -> AsyncioReceiver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class TrioReceiveChannel:
    """The trio face: a receive channel of ``OwnedPacket`` fed by the source threads.

    It has the interface of ``trio.abc.ReceiveChannel`` (``receive``,
    ``aclose``, ``async for``, ``async with``) without subclassing it, so
    that importing netring_chan does not import trio.

    ``receive()`` raises ``trio.EndOfChannel`` once the service stopped and
    the queue is empty, ``ServiceError`` (from the cause) if a source thread
    failed. ``receive_batch()`` gives whole owned batches. Closing the
    channel stops the service. The threads wake a waiting receiver through
    the trio token. ``receive()`` checks for cancellation on every packet
    and yields to the scheduler once per batch (every packet would cost a
    scheduler round trip each).
    """

    def __init__(self, svc: CaptureService) -> None:
        self._svc = svc
        self._core = svc._core
        self._cur = _Cursor()
        self._closed = False
        import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

        self._trio: Any = trio
        self._checkpoint_if_cancelled: Callable[[], Any] = trio.lowlevel.checkpoint_if_cancelled

    async def receive_batch(self) -> OwnedBatch:
        """The next owned batch (``EndOfChannel`` at the end).

        After per-packet receives, first the rest of the current batch.
        """
        trio = self._trio
        if self._closed:
            raise trio.ClosedResourceError("the receive channel was closed")
        rest = self._cur.take_rest()
        if rest is not None:
            await trio.lowlevel.checkpoint()
            return rest
        return await self._next_batch()

    async def _next_batch(self) -> OwnedBatch:
        try:
            return await wait_trio(self._core, self._core.get_nowait)
        except ClosedError:
            raise self._trio.EndOfChannel from None

    async def receive(self) -> OwnedPacket:
        """The next packet (``EndOfChannel`` at the end)."""
        it = self._cur.it
        if it is not None:
            await self._checkpoint_if_cancelled()
            p = next(it, None)
            if p is not None:
                return p
            self._cur.it = None
        if self._closed:
            raise self._trio.ClosedResourceError("the receive channel was closed")
        while True:
            self._cur.set(await self._next_batch())
            p = next(self._cur.it, None)  # type: ignore[arg-type]
            if p is not None:
                return p

    async def batches(self) -> AsyncIterator[OwnedBatch]:
        """Owned batches until the service stops."""
        while True:
            try:
                yield await self.receive_batch()
            except self._trio.EndOfChannel:
                return

    def __aiter__(self) -> TrioReceiveChannel:
        return self

    async def __anext__(self) -> OwnedPacket:
        # Iteration checkpoints once per batch (taking the next batch always
        # does), not per packet: a per-packet checkpoint costs more than
        # libpcap's whole per-packet work. A batch is one ring block, handed
        # over within block_timeout_ms, so cancellation stays prompt; an
        # explicit ``receive()`` still checkpoints on every call.
        it = self._cur.it
        if it is not None:
            p = next(it, None)
            if p is not None:
                return p
            self._cur.it = None
        try:
            return await self.receive()
        except self._trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> TrioReceiveChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        cur = getattr(self, "_cur", None)
        if cur is not None:
            cur.give_back(self._core)

    async def aclose(self) -> None:
        """Close this channel and stop the service (the loop is not blocked)."""
        trio = self._trio
        if not self._closed:
            self._closed = True
            await self._svc._stop_async(trio.sleep)
            self._cur.give_back(self._core)
        await trio.lowlevel.checkpoint()
