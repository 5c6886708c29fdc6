"""The contract between the kernel backends and everything above them.

Every backend under ``netring_chan.rings`` (and ``netring_chan.testing``)
offers this small surface, and the thread services, the async faces, the
bridge and the command-line tool know a backend only through it:

* ``Source`` — where packets come from (an AF_PACKET RX ring, later an
  AF_XDP socket or a pcap file, a ``MemorySource`` in tests);
* ``Sink`` — where frames go (an AF_PACKET TX ring, later AF_XDP TX or a
  file writer, a ``MemorySink`` in tests);
* ``Batch`` — what a source hands out: a context manager whose exit gives the
  memory back (a no-op for owned batches), iterable, ``to_owned()``.

The records ``RxStats`` and ``TxStats`` are the counters every source and
sink reports; backends may return subclasses with more fields.

``publish_all`` is the one loop that sends a run of frames through a sink,
waiting for room as it goes. This module imports nothing from either side
of the seam.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence, TypeGuard, Union, runtime_checkable

if TYPE_CHECKING:
    from typing_extensions import Self

    from .packet import OwnedBatch

__all__ = ["Batch", "Source", "Sink", "RxStats", "TxStats", "Frame", "publish_all", "check_each", "frame_length",
           "OwnedSource", "has_next_owned", "error_poll_interval"]

Frame = Union[bytes, bytearray, memoryview]
"""A frame to send: any bytes-like object (a whole link-layer frame, Ethernet header included)."""


@dataclasses.dataclass(frozen=True)
class RxStats:
    """Counters of a source, as totals since it opened.

    ``packets``: frames the source accepted, *including* the ``drops`` it had
    no room for; ``received = packets - drops`` were handed out (or are
    waiting to be). ``freezes``: times the source was full and stopped
    accepting (AF_PACKET: the kernel froze its queue). ``lost``: accepted
    and then never handed out because the source failed (a malformed ring
    block is skipped whole, an error ended the source with packets still in it).
    """

    packets: int
    drops: int
    freezes: int = 0
    lost: int = 0

    @property
    def received(self) -> int:
        """``packets - drops``: what the source handed out or still holds."""
        return self.packets - self.drops


@dataclasses.dataclass(frozen=True)
class TxStats:
    """Counters of a sink, as totals since it opened.

    ``queued``: frames published into it. ``sent``: frames it finished with
    (for a TX ring: the kernel freed them). ``rejected``: frames the sink
    refused after they were published (their room was reused).
    ``ring_full``: attempts that found no room. ``pending``: published and
    not finished yet.
    """

    queued: int
    sent: int
    rejected: int
    ring_full: int

    @property
    def pending(self) -> int:
        """``queued - sent - rejected``: published and not finished yet."""
        return self.queued - self.sent - self.rejected


@runtime_checkable
class Batch(Protocol):
    """A run of packets from a source.

    Leaving the ``with`` block (or ``release()``) hands lent memory back to
    the kernel and invalidates zero-copy views; for an owned batch both are
    no-ops. ``to_owned()`` gives copies that outlive the source.
    """

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def to_owned(self) -> OwnedBatch: ...
    def release(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


class _End(Protocol):
    """What a source and a sink both have: a label naming it in messages and
    thread names (an interface, a file), ``closed``, an fd for readiness, and
    the context manager (which closes it)."""

    @property
    def label(self) -> str: ...
    @property
    def closed(self) -> bool: ...
    def fileno(self) -> int: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class Source(_End, Protocol):
    """Where packets come from.

    ``next_batch()`` never blocks (``None`` when nothing is ready);
    ``next_batch_blocking(timeout)`` waits up to ``timeout`` seconds
    (``None``: forever), is not interrupted by signals, and returns ``None``
    early when ``close()`` runs in another thread. ``fileno()`` is readable
    when a batch may be ready (a hint: always try ``next_batch()`` after a
    wake). ``quiesce()`` makes the source stop admitting packets and returns
    how many seconds to wait for those already in flight to become
    available; after that, ``next_batch()`` until ``None`` takes the rest.
    ``stats()`` counts what the source accepted and dropped. ``close()`` is
    idempotent and reads the final counters. ``label`` names the source in
    thread names and messages (an interface name, a file name).

    A source whose ``fileno()`` shows no event when it fails (an AF_XDP
    socket whose interface was removed) has a float ``error_poll_interval``:
    fd-driven faces then read its socket's pending error that often (they
    read it with ``error_poll_interval(src)``).

    A source may also have ``next_owned_blocking(timeout)``:
    ``next_batch_blocking(timeout)``, copied out (an ``OwnedBatch``) and
    its batch handed back, in one step the source can make cheaper than the
    two (an AF_PACKET capture walks and copies a block in one C call that
    lets the GIL go once). A capture service's threads read through it when
    it is there (``has_next_owned``).

    ``at_end`` is True once the source will never give another batch (a
    file read to its end; a live source never is); its
    ``next_batch_blocking`` then returns ``None`` at once. A
    ``CaptureService`` ends its stream when every source is at its end.
    """

    @property
    def at_end(self) -> bool: ...
    def next_batch(self) -> Batch | None: ...
    def next_batch_blocking(self, timeout: float | None = None) -> Batch | None: ...
    def quiesce(self) -> float: ...
    def stats(self) -> RxStats: ...
    def close(self) -> None: ...


class OwnedSource(Source, Protocol):
    """A ``Source`` with the optional ``next_owned_blocking`` (see ``Source``)."""

    def next_owned_blocking(self, timeout: float | None = None) -> OwnedBatch | None: ...


def has_next_owned(src: Source) -> TypeGuard[OwnedSource]:
    """Whether ``src`` has the optional ``next_owned_blocking`` (see ``Source``),
    from the class that gives its ``next_batch_blocking`` or one below it: a
    subclass that overrides only ``next_batch_blocking`` is read through it."""
    if not callable(getattr(src, "next_owned_blocking", None)):
        return False
    mro = type(src).__mro__
    owned = next((k for k in mro if "next_owned_blocking" in vars(k)), None)
    batch = next((k for k in mro if "next_batch_blocking" in vars(k)), None)
    return owned is None or batch is None or issubclass(owned, batch)


def error_poll_interval(src: Source) -> float | None:
    """The optional ``error_poll_interval`` of ``src`` (see ``Source``), or ``None``."""
    t = getattr(src, "error_poll_interval", None)
    return None if t is None else float(t)


@runtime_checkable
class Sink(_End, Protocol):
    """Where frames go.

    ``check_frame(frame)`` validates one frame without queueing it and
    returns its length (``TypeError``/``ValueError`` naming the problem);
    ``check_frames(frames)`` validates a run, naming the first bad frame by
    its index.
    ``publish(frames)`` queues, without waiting, as many leading frames as
    there is room for now and returns how many (0: no room); it raises for
    ``frames[0]`` if that frame is invalid, and stops before a later invalid
    one. When there is no room, ``publish``, ``room`` and ``wait_room`` push
    out what is queued (a TX ring kicks the kernel) so that room can come.
    ``room()`` is how many frames fit now. ``wait_room(timeout)`` waits
    until at least one fits (``RingFullError`` saying why on timeout,
    ``ClosedError`` if closed meanwhile). ``flush()`` asks the sink to start sending what is queued
    (never blocks); ``wait_drained(timeout)`` waits until everything queued
    is finished. ``capacity`` is the most frames it can hold at once;
    ``drain_timeout`` how long ``close()`` waits for queued frames by default.
    ``stats()`` counts what was queued, sent and refused (a ``TxStats``);
    ``close(timeout)`` waits up to ``timeout`` for what is queued, then
    closes (idempotent). ``label`` names the sink in messages.
    """

    @property
    def capacity(self) -> int: ...
    @property
    def drain_timeout(self) -> float: ...
    def check_frame(self, frame: Frame) -> int: ...
    def check_frames(self, frames: Sequence[Frame]) -> None: ...
    def publish(self, frames: Sequence[Frame]) -> int: ...
    def room(self) -> int: ...
    def wait_room(self, timeout: float | None = None) -> None: ...
    def flush(self) -> int: ...
    def wait_drained(self, timeout: float | None = None) -> bool: ...
    def stats(self) -> TxStats: ...
    def close(self, timeout: float | None = None) -> None: ...


def frame_length(frame: object) -> int:
    """The length in bytes of a bytes-like, non-empty ``frame``
    (``TypeError``/``ValueError`` otherwise): the first check of every sink."""
    if isinstance(frame, str) or not isinstance(frame, (bytes, bytearray, memoryview)):
        raise TypeError(f"frame must be a bytes-like object, got {type(frame).__name__}")
    n = memoryview(frame).nbytes
    if n == 0:
        raise ValueError("empty frame")
    return n


def check_each(sink: Sink, frames: Sequence[Frame]) -> None:
    """``check_frames`` done frame by frame: the error names the frame's index."""
    for i, f in enumerate(frames):
        try:
            sink.check_frame(f)
        except (TypeError, ValueError) as e:
            raise type(e)(f"frame {i}: {e}") from None


def publish_all(sink: Sink, frames: Sequence[Frame], timeout: float | None = None) -> int:
    """Publish every frame in order, waiting for room as needed; not flushed.

    ``timeout`` bounds each wait for room (``None``: as long as it takes);
    ``RingFullError`` when it passes. An invalid frame raises after the
    frames before it were published. Returns ``len(frames)``.
    """
    n, total = 0, len(frames)
    while n < total:
        k = sink.publish(frames[n:] if n else frames)
        if k:
            n += k
        else:
            sink.wait_room(timeout)
    return n

