"""The async faces of the thread services, written once for both loops.

``Receiver`` (capture) and ``Sender`` (injection) hold all the logic: the
per-packet cursor, the batch and frame paths, clones, close. They wait only
through a ``_loops.Loop``, so the asyncio face and the trio face are the same
code with another loop object; the trio classes additionally subclass
``trio.abc.ReceiveChannel`` / ``trio.abc.SendChannel`` (made on first use, so
importing netring_chan does not import trio). ``channel()`` on a service
picks the face of the running loop with ``_loops.current_library`` — the one
rule — so anyio code runs unchanged on either backend.

Clones: ``clone()`` gives another face on the same service; each packet goes
to exactly one of them (each has its own cursor; a batch is taken whole by
one). Closing a face closes only it; the service stops when the last face of
a group is closed (a capture service without draining; an injection service
draining, bounded by ``drain_timeout``, unless it is left on an exception).
"""

from __future__ import annotations

import functools
import queue
import sys
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable

from ._fastpath import PacketAiter
from ._loops import Loop, current_library, loop_for
from .errors import ClosedError
from .packet import OwnedBatch, OwnedPacket, PacketCursor

if TYPE_CHECKING:
    from typing_extensions import Self

    from .contract import Frame
    from .threads import CaptureService, InjectService

__all__ = ["Receiver", "Sender", "AsyncioReceiver", "AsyncioSender", "face_for"]


class _Group:
    """The faces of one service opened by one ``asyncio()``/``trio()``/``channel()`` call and its clones."""

    __slots__ = ("open", "closing")

    def __init__(self) -> None:
        self.open = 0
        self.closing = False  # a face of the group was closed: the last one out stops the service


class _Face:
    """What a receiver and a sender share: the loop, the group, closing."""

    _loop_name = "asyncio"

    def __init__(self, svc: Any, group: _Group | None = None) -> None:
        self._loop: Loop = loop_for(self._loop_name)
        self._svc = svc
        self._core = svc._core
        self._group = group if group is not None else _Group()
        self._group.open += 1
        self._closed = False

    def _is_closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        self._svc._check_not_forked()
        if self._closed:
            raise self._loop.closed_resource(f"this {type(self).__name__} was closed")

    def clone(self) -> Self:
        """Another face on the same stream; the service stops when the last one closes."""
        self._check_open()
        return type(self)(self._svc, self._group)

    async def _close(self, drain: bool) -> None:
        loop = self._loop
        with loop.shielded():
            if not self._closed:
                self._closed = True
                self._loop.wake()  # a task waiting on this face sees it closed
                self._release()
                self._group.open -= 1
                self._group.closing = True
                if self._group.open == 0:
                    await self._svc._stop_async(drain, loop.sleep)
            await loop.cancel_shielded_checkpoint()

    def _release(self) -> None:
        """What this face holds goes back to the service (before it stops)."""

    def __del__(self) -> None:
        # Abandoned (``break`` without ``aclose``): keep the count exact, and
        # the last face of a group dropped open stops the service.
        if getattr(self, "_svc", None) is not None:
            self._release()
            self._dropped()

    def _dropped(self) -> None:
        """Garbage-collected while open. A face that was never closed leaves
        the service alone (whoever started it stops it); but once another
        face of its group was closed, the last one out stops the service,
        so a forgotten clone cannot keep it running. Never waits."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self._group.open -= 1
        if self._group.open == 0 and self._group.closing and self._svc.running:
            self._svc._stop_from(sys._getframe(1))

    async def __aenter__(self) -> Self:
        return self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._svc!r}{' closed' if self._closed else ''}>"


class Receiver(_Face):
    """An async face of a ``CaptureService``: ``async for pkt in rx``,
    ``await rx.receive()``, ``await rx.receive_batch()``, ``rx.receive_nowait()``.

    ``receive()`` raises the loop's end of stream once the service stopped
    and the queue is empty (asyncio: ``ClosedError``; trio:
    ``trio.EndOfChannel``), ``ServiceError`` (from the cause) if a source
    thread failed; ``async for`` just ends. Cancelling a waiting task loses
    nothing. Packets are handed out from whole owned batches; only taking
    the next batch waits, so iteration checkpoints once per batch (a batch
    is one ring block, handed over within ``block_timeout_ms``).
    ``aclose()`` / ``async with`` close the face and, for the last face of
    the service, stop it without blocking the loop.
    """

    def __init__(self, svc: CaptureService, group: _Group | None = None) -> None:
        super().__init__(svc, group)
        self._cur = PacketCursor()

    async def _next_batch(self) -> OwnedBatch:
        try:
            b: OwnedBatch = await self._loop.get_batch(self._core, self._is_closed)
        except ClosedError:
            raise self._loop.end_of_stream() from None
        return b

    async def receive_batch(self) -> OwnedBatch:
        """The next owned batch (after per-packet receives, first the rest of the current one)."""
        self._check_open()
        if self._cur.it is not None:
            # The schedule point comes before the take, so a cancellation
            # there leaves the rest where it was.
            await self._loop.checkpoint()
            rest = self._cur.take_rest()
            if rest is not None:
                return rest
        return await self._next_batch()

    async def receive(self) -> OwnedPacket:
        """The next packet."""
        cur = self._cur
        if cur.it is not None:
            await self._loop.checkpoint_if_cancelled()
            p = cur.next()
            if p is not None:
                return p
        self._check_open()
        while True:
            b = await self._next_batch()
            if cur.it is not None:
                # Another task receiving on this face filled the cursor while
                # we waited: ours goes back to the head of the queue, behind it.
                self._core.give_back(b)
            else:
                cur.set(b)
            p = cur.next()
            if p is not None:
                return p

    def receive_nowait(self) -> OwnedPacket:
        """The next packet if one is ready, else the loop's would-block error."""
        self._check_open()
        cur = self._cur
        p = cur.next()
        if p is not None:
            return p
        try:
            cur.set(self._core.get_nowait())
        except queue.Empty:
            raise self._loop.would_block(False) from None
        except ClosedError:
            raise self._loop.end_of_stream() from None
        p = cur.next()
        assert p is not None  # the queue admits no empty batch
        return p

    def __aiter__(self) -> AsyncIterator[OwnedPacket]:
        # A packet in hand is handed out by C without a coroutine (see
        # _fastpath); only an empty cursor costs a call of _next_slow.
        return PacketAiter(self._cur, self._next_slow)

    async def __anext__(self) -> OwnedPacket:
        it = self._cur.it
        if it is not None:
            p = next(it, None)
            if p is not None:
                return p
            self._cur.it = None
        return await self._next_slow()

    async def _next_slow(self) -> OwnedPacket:
        try:
            return await self.receive()
        except self._ends:
            raise StopAsyncIteration from None

    #: What ends iteration: the loop's end of stream (asyncio's is ClosedError).
    _ends: tuple[type[BaseException], ...] = (ClosedError,)

    async def batches(self) -> AsyncIterator[OwnedBatch]:
        """Owned batches until the service stops."""
        while True:
            try:
                yield await self.receive_batch()
            except self._ends:
                return

    def _release(self) -> None:
        cur = getattr(self, "_cur", None)
        rest = cur.take_rest() if cur is not None else None
        if rest is not None:
            self._core.give_back(rest)



    async def aclose(self) -> None:
        """Close this face (its unread packets go back to the queue); the last stops the service."""
        await self._close(drain=False)

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Sender(_Face):
    """An async face of an ``InjectService``: ``await tx.send(frame)``,
    ``await tx.send_many(frames)``, ``tx.send_nowait(frame)``,
    ``await tx.wait_drained(timeout)``.

    A full queue (``overflow="block"``) makes ``send`` wait without blocking
    the loop, woken by the sender threads; a cancelled ``send`` queues
    nothing. Once the service has stopped, sends raise ``ClosedError``
    (asyncio) or ``trio.BrokenResourceError`` (trio; from the
    ``ClosedError``). ``send_nowait`` raises the loop's would-block error
    (asyncio: ``queue.Full``; trio: ``trio.WouldBlock``). Closing the last face stops
    the service: leaving ``async with`` normally (or ``aclose()``) drains
    (raising ``ServiceError`` if a sender failed), leaving on an exception
    discards.
    """

    _svc: InjectService

    async def send(self, frame: Frame) -> bool:
        """Queue one frame (True), or False if dropped; see ``InjectService.send``."""
        self._check_open()
        svc = self._svc
        item = [svc._check(frame)]
        return await self._loop.wait_queue(self._core, functools.partial(self._admit, item), self._is_closed)

    async def send_many(self, frames: Iterable[Frame]) -> int:
        """Queue every frame in order; how many were queued. All are checked first.

        If cancelled, the chunks queued before the cancellation stay queued.
        """
        self._check_open()
        svc = self._svc
        n = 0
        for item in svc._items(frames):
            if await self._loop.wait_queue(self._core, functools.partial(self._admit, item), self._is_closed):
                n += len(item)
        return n

    def send_nowait(self, frame: Frame) -> bool:
        """Queue one frame if there is room now, else the loop's would-block error."""
        self._check_open()
        try:
            return self._admit([self._svc._check(frame)])
        except queue.Full:
            raise self._loop.would_block(True) from None

    def _admit(self, item: list[bytes]) -> bool:
        """The service's admission (``queue.Full`` propagates), with a stopped
        service told in the loop's terms: the one place a send sees it."""
        try:
            return self._svc._admit_nowait(item)
        except ClosedError as e:
            raise self._loop.broken_resource(e)

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """``InjectService.wait_drained`` without blocking the loop."""
        return await self._svc._wait_drained_async(timeout, self._loop.sleep)

    async def aclose(self) -> None:
        """Close this face; the last one stops the service, sending what is queued."""
        await self._close(drain=True)

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        await self._close(drain=exc_type is None)


class AsyncioReceiver(Receiver):
    """The asyncio face of a ``CaptureService`` (waits through janus); ``get``
    and ``get_batch`` are ``receive`` and ``receive_batch``."""

    get = Receiver.receive
    """The next packet (``receive``)."""
    get_batch = Receiver.receive_batch
    """The next owned batch (``receive_batch``)."""
    get_nowait = Receiver.receive_nowait
    """The next packet if one is ready, else ``queue.Empty`` (``receive_nowait``)."""


class AsyncioSender(Sender):
    """The asyncio face of an ``InjectService``."""


@functools.lru_cache(maxsize=None)
def _trio_classes() -> tuple[type[Receiver], type[Sender]]:
    import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

    class TrioReceiveChannel(Receiver, trio.abc.ReceiveChannel[OwnedPacket]):  # type: ignore[misc]
        """The trio face of a ``CaptureService``: a ``trio.abc.ReceiveChannel`` of
        ``OwnedPacket`` (``receive_batch()`` for whole batches)."""

        _loop_name = "trio"
        _ends = (ClosedError, trio.EndOfChannel)

    class TrioSendChannel(Sender, trio.abc.SendChannel[bytes]):  # type: ignore[misc]
        """The trio face of an ``InjectService``: a ``trio.abc.SendChannel`` of frames."""

        _loop_name = "trio"

    for cls in (TrioReceiveChannel, TrioSendChannel):
        cls.__module__ = "netring_chan"
        cls.__qualname__ = cls.__name__
    return TrioReceiveChannel, TrioSendChannel


def face_for(svc: Any, loop: str | None, start: Callable[[], None]) -> Any:
    """The face of ``svc`` for ``loop`` (``None``: the running one); ``start``
    runs once the face is known to be possible (outside an event loop,
    ``channel()`` raises before anything started)."""
    name = current_library() if loop is None else loop
    receiving = svc._kind == "capture"
    if name == "asyncio":
        cls: type[_Face] = AsyncioReceiver if receiving else AsyncioSender
    else:
        rx, tx = _trio_classes()
        cls = rx if receiving else tx
    start()
    return cls(svc)
