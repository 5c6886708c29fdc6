"""The one implementation behind the fd-driven async faces.

``_FdReceiver`` holds all the policy: take a block if one is ready, else wait
for the socket to become readable and take again; turn a socket error into
``RingError``; close, ownership and statistics. It awaits only through a tiny
backend (``_Backend``): wait for readability, a short sleep, a checkpoint, and
``notify_closing``. ``_asyncio.py`` and ``_trio.py`` are those backends plus
the public faces, a few lines each.

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
  every later call.
"""

from __future__ import annotations

import dataclasses
import errno
import warnings
from typing import TYPE_CHECKING, Any, Iterator, Protocol

from .._sys import pending_error
from ..errors import ClosedError, ConfigError, RingError

if TYPE_CHECKING:
    from typing_extensions import Self

    from ..packet import OwnedBatch, OwnedPacket, PacketBatch

__all__ = ["BatchSource", "AsyncCaptureStatistics", "PacketStream"]

_BACKOFF_FIRST = 0.0005
_BACKOFF_MAX = 0.010


class BatchSource(Protocol):
    """What an async face needs of a source (a ``Capture``, later AF_XDP, pcap)."""

    def next_batch(self) -> PacketBatch | None: ...
    def fileno(self) -> int: ...
    def close(self) -> None: ...


class _Backend(Protocol):
    """The waits an event loop must provide; everything else is shared."""

    async def wait_readable(self, fd: int) -> None:
        """Return when ``fd`` is readable (or in error) or ``notify_closing`` ran."""

    async def sleep(self, seconds: float) -> None:
        """Sleep, returning early when ``notify_closing`` runs."""

    async def checkpoint(self) -> None:
        """Yield to the loop once and let a pending cancellation in."""

    async def close_checkpoint(self) -> None:
        """A checkpoint after close: yields, but close has already happened."""

    def notify_closing(self, fd: int) -> None:
        """Wake the task waiting on ``fd`` (before it is closed)."""

    def busy_error(self, what: str) -> BaseException:
        """The loop's usual exception for two tasks waiting on one resource."""


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


class _FdReceiver:
    """Shared logic of ``AsyncCapture`` (asyncio) and ``TrioCapture`` (trio)."""

    _closed = True
    _owns = False
    _source: Any = None

    def __init__(self, backend: _Backend, source: str | BatchSource, *,
                 owns_source: bool | None, options: dict[str, Any]) -> None:
        self._backend = backend
        self._fd = -1
        self._busy = False
        self._error: tuple[int, str] | None = None
        self._sockerr = True  # False once SO_ERROR proved the fd is not a socket
        self._batches = self._packets = self._waits = self._spurious = 0
        self._stream: PacketStream | None = None
        if isinstance(source, str):
            if owns_source is False:
                raise ConfigError("owns_source=False: a capture opened here by interface name is always owned")
            from ..rings.afpacket import Capture  # lazy: keeps the faces importable first

            self._source = Capture(source, **options)
            self._owns = True
        else:
            if options:
                raise ConfigError(f"capture options {sorted(options)} apply only when opening by interface name")
            for name in ("next_batch", "fileno", "close"):
                if not callable(getattr(source, name, None)):
                    raise TypeError(f"source {source!r} has no {name}() method (see BatchSource)")
            self._source = source
            self._owns = bool(owns_source)
        try:
            self._fd = self._source.fileno()
        except BaseException:
            if self._owns:
                self._source.close()
            raise
        self._closed = False

    # -- non-blocking core ---------------------------------------------------

    @property
    def source(self) -> Any:
        """The wrapped source (a ``Capture`` unless another was given)."""
        return self._source

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        if self._closed:
            raise ClosedError(f"{self._name()} is closed")
        return self._fd

    def _name(self) -> str:
        itf = getattr(self._source, "interface", None)
        return f"{type(self).__name__} on {itf!r}" if itf else f"{type(self).__name__} fd={self._fd}"

    def _raise_if_failed(self) -> None:
        if self._closed:
            raise ClosedError(f"{self._name()} is closed")
        if self._error is not None:
            err, msg = self._error
            raise RingError(err, msg)

    def _take(self) -> PacketBatch | None:
        self._raise_if_failed()
        b: PacketBatch | None = self._source.next_batch()
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

    def try_recv_batch(self) -> PacketBatch | None:
        """The next ready block as a zero-copy ``PacketBatch``, or ``None``; never waits.

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

    async def recv_batch(self) -> PacketBatch:
        """Wait for the next block; zero-copy ``PacketBatch`` (a context manager).

        Raises ``ClosedError`` if the face is closed (also while waiting) and
        ``RingError`` when the socket fails (interface removed). Cancellation
        never loses a block: one is taken only after the last suspension.
        """
        if self._busy:
            raise self._backend.busy_error(f"another task is already receiving from {self._name()}")
        self._raise_if_failed()
        self._busy = True
        try:
            await self._backend.checkpoint()
            spurious = 0
            while True:
                b = self._take()
                if b is not None:
                    return b
                if spurious:
                    # Readiness said yes but nothing was ready: a held batch
                    # pins POLLIN (module notes). Poll on a short timer.
                    await self._backend.sleep(min(_BACKOFF_FIRST * (1 << (spurious - 1)), _BACKOFF_MAX))
                    b = self._take()
                    if b is not None:
                        return b
                self._waits += 1
                await self._backend.wait_readable(self._fd)
                b = self._take()
                if b is not None:
                    return b
                self._check_pending_error()
                self._spurious += 1
                spurious += 1
        finally:
            self._busy = False

    async def recv(self) -> OwnedBatch:
        """Wait for the next block and return it copied out (``OwnedBatch``).

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
        waiting task gets ``ClosedError`` (a ``PacketStream`` just ends). A
        source passed in by the caller stays open unless ``owns_source=True``.
        """
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, -1
        try:
            # Before the fd can be closed: a waiter must never sit on an fd
            # number that is closed (and possibly reused).
            self._backend.notify_closing(fd)
        finally:
            if self._owns:
                self._source.close()

    async def aclose(self) -> None:
        """``close()`` followed by a checkpoint; the close happens even if cancelled."""
        self.close()
        await self._backend.close_checkpoint()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> Any:
        """The source's kernel counters (``Capture.stats()``)."""
        return self._source.stats()

    def statistics(self) -> AsyncCaptureStatistics:
        """Counters of this face (see ``AsyncCaptureStatistics``)."""
        return AsyncCaptureStatistics(self._batches, self._packets, self._waits, self._spurious, self._busy)

    def __del__(self) -> None:
        if not self._closed and self._owns:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self._closed = True
            self._source.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<{type(self).__name__} {getattr(self._source, 'interface', self._source)!r} {state}>"


class PacketStream:
    """Async iterator of ``OwnedPacket`` over a face: ``async for pkt in cap``.

    It receives whole owned blocks and hands out their packets, built by
    C-driven iteration; only taking the next block awaits the loop, so a
    block's packets cost no suspension. Ends (``StopAsyncIteration``) when
    the face is closed; ``RingError`` propagates. Packets of a block already
    taken stay in the stream if the consuming task is cancelled.
    """

    __slots__ = ("_rx", "_it")

    def __init__(self, receiver: _FdReceiver) -> None:
        self._rx = receiver
        self._it: Iterator[OwnedPacket] = iter(())

    def __aiter__(self) -> PacketStream:
        return self

    async def __anext__(self) -> OwnedPacket:
        for pkt in self._it:
            return pkt
        rx = self._rx
        while True:
            if rx._closed:
                raise StopAsyncIteration
            try:
                owned = await rx.recv()
            except ClosedError:
                raise StopAsyncIteration from None
            self._it = iter(owned)
            for pkt in self._it:
                return pkt
