"""asyncio face: ``AsyncCapture`` (readiness through ``loop.add_reader``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import BatchSource, _FdReceiver

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncCapture"]


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _AsyncioBackend:
    """Waits on one future at a time; ``notify_closing`` completes it.

    The reader is added for each wait and removed after it (level-triggered
    epoll would otherwise call us back for as long as a block is pending).
    """

    def __init__(self) -> None:
        import asyncio  # lazy: importing netring_chan does not import asyncio

        self._aio = asyncio
        self._fut: asyncio.Future[None] | None = None
        self._reader: tuple[asyncio.AbstractEventLoop, int] | None = None

    def _drop_reader(self) -> None:
        r, self._reader = self._reader, None
        if r is not None:
            r[0].remove_reader(r[1])

    async def _wait(self, fd: int | None, seconds: float | None) -> None:
        loop = self._aio.get_running_loop()
        fut = loop.create_future()
        handle = None
        if fd is not None:
            loop.add_reader(fd, _wake, fut)
            self._reader = (loop, fd)
        if seconds is not None:
            handle = loop.call_later(seconds, _wake, fut)
        self._fut = fut
        try:
            await fut
        finally:
            if self._fut is fut:
                self._fut = None
                self._drop_reader()  # else close() already removed it
            if handle is not None:
                handle.cancel()

    async def wait_readable(self, fd: int) -> None:
        await self._wait(fd, None)

    async def sleep(self, seconds: float) -> None:
        await self._wait(None, seconds)

    async def checkpoint(self) -> None:
        await self._aio.sleep(0)

    async def close_checkpoint(self) -> None:
        await self._aio.sleep(0)

    def notify_closing(self, fd: int) -> None:
        fut, self._fut = self._fut, None
        self._drop_reader()
        if fut is not None:
            _wake(fut)

    def busy_error(self, what: str) -> BaseException:
        return RuntimeError(what)


class AsyncCapture(_FdReceiver):
    """A capture read from asyncio without a thread, driven by the socket's fd.

    ``AsyncCapture("eth0", **capture_options)`` opens and owns a ``Capture``;
    ``AsyncCapture(capture)`` wraps an open source (anything with
    ``next_batch()``, ``fileno()``, ``close()``) and leaves it open on close
    unless ``owns_source=True`` (a wrapped source must stay open while the
    face is in use: close the face first). ::

        async with AsyncCapture(ifname, block_timeout_ms=10) as cap:
            async for pkt in cap:            # OwnedPacket, C-built per block
                ...
            owned = await cap.recv()         # OwnedBatch, block already returned
            with await cap.recv_batch() as batch:   # zero-copy PacketBatch
                ...
            batch = cap.try_recv_batch()     # never waits; None when idle

    Use it from one event loop thread; one task receives at a time (a second
    concurrent receiver gets ``RuntimeError``). Task cancellation is clean:
    the reader is removed and no block is lost.
    """

    def __init__(self, source: str | BatchSource, *, owns_source: bool | None = None, **options: Any) -> None:
        super().__init__(_AsyncioBackend(), source, owns_source=owns_source, options=options)
