"""``AsyncCapture``: a source read from asyncio or trio without a thread.

Take a batch if one is ready, else wait for the source's fd to become
readable and take again; turn a socket error into ``RingError``; close,
ownership and statistics. It awaits only through the ``_loops.Loop`` of the
running event loop (picked by the one rule, ``sniffio``, at the first wait),
so the same class serves asyncio, trio and anyio on either.

Kernel facts the wait loop depends on (net/packet/af_packet.c, ``packet_poll``):

* For TPACKET_V3 the socket's ``POLLIN`` is not "a block is ready for you":
  it is set when the block *before* the one the kernel is filling is not
  kernel-owned. So it stays set while the user still holds the last block it
  took (a ``PacketBatch`` not yet released), even though nothing new is ready.
  Readiness is therefore only a hint: we always try ``next_batch()`` before
  waiting and again after every wake, and a wake that finds nothing (and no
  error) is "spurious". After one we sleep briefly (0.5 ms doubling to 10 ms)
  before trusting readiness again, instead of spinning on a level-triggered
  fd that cannot clear until the user releases the batch.
* No wake-up is lost: readiness is level-triggered and re-armed on every
  wait (asyncio adds the reader per wait, trio re-registers per
  ``wait_readable``), and the ring state is re-checked after every wake, so a
  block handed over between our check and the registration is still seen.
* The kernel wakes readers when it retires a block (full, or after
  ``block_timeout_ms``), not per packet.
* An interface going down or being removed sets ``sk_err = ENETDOWN`` and
  reports ``POLLERR``, which both event loops deliver to a read waiter. We read
  ``SO_ERROR`` (which clears it) only on a wake that found no block, so blocks
  already captured are delivered first; the error is then kept and raised by
  every later call. A source whose socket reports no event when its
  interface goes (AF_XDP) sets ``error_poll_interval``: each wait then
  lasts at most that long before ``SO_ERROR`` is read.
"""

from __future__ import annotations

import dataclasses
import errno
import warnings
from typing import TYPE_CHECKING, Any

from .._fastpath import PacketAiter
from .._loops import Loop, loop_for
from .._sys import pending_error
from ..contract import Batch, Source, error_poll_interval
from ..errors import ClosedError, RingError
from ..packet import PacketCursor
from ._own import adopt

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..packet import OwnedBatch, OwnedPacket

__all__ = ["AsyncCapture", "TrioCapture", "AsyncCaptureStatistics", "PacketStream"]

_BACKOFF_FIRST = 0.0005
_BACKOFF_MAX = 0.010


@dataclasses.dataclass(frozen=True)
class AsyncCaptureStatistics:
    """Counters of an async face (the kernel's are in ``stats()``).

    ``batches``/``packets``: handed to the user (zero-copy or owned);
    ``waits``: times a receive had to wait for the socket;
    ``spurious_wakeups``: wakes that found no block (see the module notes:
    expected while a zero-copy batch is held); ``waiting``: a task is
    currently waiting.
    """

    batches: int
    packets: int
    waits: int
    spurious_wakeups: int
    waiting: bool


class AsyncCapture:
    """A source read from asyncio or trio without a thread, driven by its fd.

    ``AsyncCapture("eth0", **capture_options)`` opens a ``Capture``;
    ``AsyncCapture(source)`` wraps an open ``Source``. Either way the face
    owns what it wraps and closes it on ``close()``/``aclose()``, unless
    ``owns=False`` (then close the face before the source). ::

        async with AsyncCapture(ifname, block_timeout_ms=10) as cap:
            async for pkt in cap:            # OwnedPacket, C-built per block
                ...
            owned = await cap.recv()         # OwnedBatch, block already returned
            with await cap.recv_batch() as batch:   # zero-copy batch
                ...
            batch = cap.try_recv_batch()     # never waits; None when idle

    The event loop is the running one (asyncio, trio, or anyio on either),
    picked at the first wait; ``backend="asyncio"|"trio"`` fixes it. One
    task receives at a time (a second concurrent receiver gets the loop's
    busy error: ``RuntimeError``, ``trio.BusyResourceError``). Cancellation
    is clean: the wait is unregistered and no block is lost. ``close()`` from
    another task wakes the waiter (``ClosedError``; a stream just ends).
    Receives checkpoint once per block, not per packet.
    """

    _closed = True
    _owns = False
    _source: Any = None

    def __init__(self, source: str | Source, *, owns: bool = True, backend: str | None = None,
                 **options: Any) -> None:
        from ..rings.afpacket import Capture  # lazy: keeps the faces importable first

        src: Source = adopt(source, Source, Capture, owns=owns, backend=backend, options=options)
        self._source = src
        self._owns = owns
        self._backend_name = backend
        self._loop: Loop | None = None
        self._fd = -1
        self._busy = False
        self._error: tuple[int, str] | None = None
        self._sockerr = True  # False once SO_ERROR proved the fd is not a socket
        # A source whose fd shows no event when it fails (AF_XDP) says how
        # often to look at its pending error instead.
        self._recheck = error_poll_interval(src)
        self._batches = self._packets = self._waits = self._spurious = 0
        self._stream: PacketStream | None = None
        try:
            self._fd = self._source.fileno()
        except BaseException:
            if self._owns:
                self._source.close()
            raise
        self._closed = False

    def _the_loop(self) -> Loop:
        if self._loop is None:
            self._loop = loop_for(self._backend_name)
        return self._loop

    # -- non-blocking core ---------------------------------------------------

    @property
    def source(self) -> Source:
        """The wrapped source (a ``Capture`` unless another was given)."""
        return self._source  # type: ignore[no-any-return]

    @property
    def closed(self) -> bool:
        """True once the face was closed (``close()``/``aclose()``)."""
        return self._closed

    def fileno(self) -> int:
        """The wrapped source's fd (readable when a batch may be ready: a hint)."""
        if self._closed:
            raise ClosedError(f"{self._name()} is closed")
        return self._fd

    def _name(self) -> str:
        return f"{type(self).__name__} on {self._source.label!r}"

    def _raise_if_failed(self) -> None:
        if self._closed:
            raise ClosedError(f"{self._name()} is closed")
        if self._error is not None:
            err, msg = self._error
            raise RingError(err, msg)

    def _take(self) -> Batch | None:
        self._raise_if_failed()
        b: Batch | None = self._source.next_batch()
        if b is not None:
            self._batches += 1
            self._packets += len(b)
        return b

    def _check_pending_error(self) -> None:
        """Raise ``RingError`` if the socket reports an error (reads SO_ERROR)."""
        if not self._sockerr or self._closed:
            return
        try:
            e = pending_error(self._fd, self._name())
        except RingError as e2:
            if e2.errno != errno.ENOTSOCK:
                raise
            self._sockerr = False  # a non-socket source (e.g. a file): nothing to read
            return
        if e is not None:
            self._error = (e.errno or 0, e.strerror or str(e))
            self._raise_if_failed()

    def try_recv_batch(self) -> Batch | None:
        """The next ready batch (zero-copy for a ring), or ``None``; never waits.

        Release the batch (``with batch:``) before waiting for the next one:
        while it is held the socket looks readable to the event loop. When
        nothing is ready it also reads the socket's pending error (one
        ``getsockopt``), so a removed interface raises ``RingError`` here too.
        """
        b = self._take()
        if b is None:
            self._check_pending_error()
        return b

    # -- waiting -------------------------------------------------------------

    async def recv_batch(self) -> Batch:
        """Wait for the next batch (a context manager: leave it to give the block back).

        Raises ``ClosedError`` if the face is closed (also while waiting) and
        ``RingError`` when the socket fails (interface removed). Cancellation
        never loses a block: one is taken only after the last suspension.
        """
        loop = self._the_loop()
        if self._busy:
            raise loop.busy(f"another task is already receiving from {self._name()}")
        self._raise_if_failed()
        self._busy = True
        try:
            await loop.checkpoint()
            spurious = 0
            while True:
                b = self._take()
                if b is not None:
                    return b
                if spurious:
                    # Readiness said yes but nothing was ready: a held batch
                    # pins POLLIN (module notes). Poll on a short timer.
                    await loop.sleep(min(_BACKOFF_FIRST * (1 << (spurious - 1)), _BACKOFF_MAX))
                    b = self._take()
                    if b is not None:
                        return b
                self._waits += 1
                ready = await loop.wait_fd(self._fd, timeout=self._recheck)
                b = self._take()
                if b is not None:
                    return b
                self._check_pending_error()
                if ready:
                    self._spurious += 1
                    spurious += 1
        finally:
            self._busy = False

    async def recv(self) -> OwnedBatch:
        """Wait for the next batch and return it copied out (``OwnedBatch``).

        The block goes back to the kernel before this returns. One C call
        copies it; iterate the result for ``OwnedPacket`` objects, or use its
        ``datas()`` / ``timestamps_ns`` columns for bulk work.
        """
        with await self.recv_batch() as b:
            return b.to_owned()

    def packets(self) -> PacketStream:
        """The face's async iterator of ``OwnedPacket``; ends when the face is closed.

        There is one stream per face, so leaving an ``async for`` early and
        starting another resumes where the first stopped: the rest of a block
        already taken is not lost. Do not mix it with ``recv()`` calls, which
        would take the next block before the stream's current one is done.
        """
        if self._stream is None:
            self._stream = PacketStream(self)
        return self._stream

    def __aiter__(self) -> PacketStream:
        return self.packets()

    # -- close ---------------------------------------------------------------

    def close(self) -> None:
        """Close the face: wake a waiting task, then close the source if owned.

        Idempotent and synchronous; call it from the event loop's thread. The
        waiting task gets ``ClosedError`` (a ``PacketStream`` just ends).
        """
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, -1
        try:
            # Before the fd can be closed: a waiter must never sit on an fd
            # number that is closed (and possibly reused).
            if self._loop is not None:
                self._loop.notify_closing(fd)
        finally:
            if self._owns:
                self._source.close()

    async def aclose(self) -> None:
        """``close()`` followed by a checkpoint; the close happens even if cancelled."""
        self.close()
        if self._loop is not None:
            await self._loop.cancel_shielded_checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> Any:
        """The source's counters (``Capture.stats()``)."""
        return self._source.stats()

    def statistics(self) -> AsyncCaptureStatistics:
        """Counters of this face (see ``AsyncCaptureStatistics``)."""
        return AsyncCaptureStatistics(self._batches, self._packets, self._waits, self._spurious, self._busy)

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self._closed = True
            if self._owns:
                self._source.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        label = self._source.label if self._source is not None else "?"
        return f"<{type(self).__name__} {label!r} {state}>"


#: The same class: the event loop is picked when it is first awaited.
TrioCapture = AsyncCapture


class PacketStream(PacketAiter):
    """Async iterator of ``OwnedPacket`` over a face: ``async for pkt in cap``.

    It receives whole owned blocks and hands out their packets, built by
    C-driven iteration; only taking the next block awaits the loop, so a
    block's packets cost no suspension. Ends (``StopAsyncIteration``) when
    the face is closed; ``RingError`` propagates. Packets of a block already
    taken stay in the stream if the consuming task is cancelled.
    """

    __slots__ = ("_rx", "_cur")

    def __init__(self, receiver: AsyncCapture) -> None:
        self._rx = receiver
        self._cur = PacketCursor()
        # PacketAiter's __anext__ (C) hands out a packet in hand without a
        # coroutine; only an empty cursor costs a call of _next_slow.
        super().__init__(self._cur)

    def __aiter__(self) -> PacketStream:
        return self

    async def _next_slow(self) -> OwnedPacket:
        cur = self._cur
        rx = self._rx
        while True:
            if rx._closed:
                raise StopAsyncIteration
            try:
                owned = await rx.recv()
            except ClosedError:
                raise StopAsyncIteration from None
            cur.set(owned)
            p = cur.next()
            if p is not None:
                return p
