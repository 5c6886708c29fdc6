"""trio face: ``TrioCapture`` (readiness through ``trio.lowlevel.wait_readable``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import BatchSource, _FdReceiver

if TYPE_CHECKING:
    import trio  # type: ignore[import-untyped]  # 0.22 ships no py.typed

__all__ = ["TrioCapture"]


class _TrioBackend:
    """``wait_readable`` for the fd; a cancel scope for the short sleeps.

    ``notify_closing`` is trio's: it wakes the waiter with
    ``ClosedResourceError`` (turned into ``ClosedError`` by the shared code,
    which sees the face closed) and unregisters the fd, before we close it —
    the same order as trio's own ``_unix_pipes``.
    """

    def __init__(self) -> None:
        import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

        self._trio = trio
        self._sleep_scope: trio.CancelScope | None = None

    async def wait_readable(self, fd: int) -> None:
        try:
            await self._trio.lowlevel.wait_readable(fd)
        except self._trio.ClosedResourceError:
            pass  # notify_closing: the caller sees the face closed

    async def sleep(self, seconds: float) -> None:
        with self._trio.move_on_after(seconds) as scope:
            self._sleep_scope = scope
            try:
                await self._trio.sleep_forever()
            finally:
                self._sleep_scope = None

    async def checkpoint(self) -> None:
        await self._trio.lowlevel.checkpoint()

    async def close_checkpoint(self) -> None:
        await self._trio.lowlevel.cancel_shielded_checkpoint()

    def notify_closing(self, fd: int) -> None:
        scope = self._sleep_scope
        if scope is not None:
            scope.cancel()
        try:
            self._trio.lowlevel.notify_closing(fd)
        except RuntimeError:
            pass  # not inside trio.run: then no task can be waiting on it

    def busy_error(self, what: str) -> BaseException:
        err: BaseException = self._trio.BusyResourceError(what)
        return err


class TrioCapture(_FdReceiver):
    """A capture read from trio without a thread, driven by the socket's fd.

    The same surface as ``AsyncCapture``: ``try_recv_batch()``,
    ``await recv_batch()`` (zero-copy), ``await recv()`` (``OwnedBatch``),
    ``async for pkt in cap`` (``OwnedPacket``), ``aclose()`` /
    ``async with``. Opening by interface name owns the ``Capture``; a passed
    source is left open unless ``owns_source=True``.

    Cancel scopes work at every wait; a second task receiving concurrently
    gets ``trio.BusyResourceError``. ``close()`` from another task wakes the
    waiter (``ClosedError``; a stream ends). Receives checkpoint once per
    block, not per packet.
    """

    def __init__(self, source: str | BatchSource, *, owns_source: bool | None = None, **options: Any) -> None:
        super().__init__(_TrioBackend(), source, owns_source=owns_source, options=options)
