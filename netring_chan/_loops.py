"""The event loops: one rule picks the running one, one small class waits in each.

``loop_for(name)`` is the only place the library decides which event loop it
is in: ``sniffio`` names the running library, so code written against anyio
runs unchanged on its asyncio and trio backends. Everything async in the
library — the services' asyncio and trio faces, ``AsyncCapture``,
``AsyncInjector``, ``Bridge.arun`` — waits only through the ``Loop`` it gets
here:

* fd waits (``wait_fd``, ``wait_any_readable``) and a ``sleep``, each
  returning early when ``notify_closing`` is called for the face, so a close
  from another task wakes the waiter *before* the fd is closed (an fd number
  that is closed may be reused at once);
* ``wait_queue``: retry a ``*_nowait`` call of the services' bounded queue
  until it stops raising ``queue.Empty``/``queue.Full``, woken by the queue's
  listeners from the service threads (asyncio: ``call_soon_threadsafe``;
  trio: the trio token);
* the loop's own exceptions for the end of a stream, a closed resource, a
  call that would block and two tasks on one resource.

Neither asyncio nor trio is imported until a ``Loop`` for it is made.
"""

from __future__ import annotations

import contextlib
import functools
import queue
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Protocol, Sequence, TypeVar

from .errors import ClosedError, ConfigError

if TYPE_CHECKING:
    import asyncio

    from ._queue import BatchQueue

__all__ = ["Loop", "loop_for", "current_library"]

R = TypeVar("R")
_NAMES = ("asyncio", "trio")


def current_library() -> str:
    """``"asyncio"`` or ``"trio"``: the event loop running this task (anyio's included)."""
    import sniffio

    try:
        name: str = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("this must be awaited inside asyncio or trio (or anyio on either)") from None
    if name not in _NAMES:
        raise RuntimeError(f"netring_chan supports asyncio and trio (and anyio on either), not {name!r}")
    return name


def loop_for(name: str | None = None) -> Loop:
    """A ``Loop`` for ``name`` (``"asyncio"``/``"trio"``), or for the running one."""
    if name is None:
        name = current_library()
    elif name not in _NAMES:
        raise ConfigError(f"backend must be 'asyncio' or 'trio', got {name!r}")
    return AsyncioLoop() if name == "asyncio" else TrioLoop()


class Loop(Protocol):
    """What the async faces need of an event loop (one instance per face)."""

    name: str

    async def wait_fd(self, fd: int, *, writable: bool = False, timeout: float | None = None) -> bool:
        """True when ``fd`` is ready (or in error); False on timeout or ``notify_closing``."""

    async def wait_any_readable(self, fds: Sequence[int], timeout: float | None) -> None:
        """Return when one of ``fds`` is readable or ``timeout`` s passed."""

    async def sleep(self, seconds: float) -> None:
        """Sleep; returns early when ``notify_closing`` runs."""

    async def checkpoint(self) -> None:
        """Yield to the loop once and let a pending cancellation in."""

    async def checkpoint_if_cancelled(self) -> None:
        """Let a pending cancellation in without yielding (trio); nothing (asyncio)."""

    async def cancel_shielded_checkpoint(self) -> None:
        """Yield once without letting a cancellation in (after work that must not be undone)."""

    def shielded(self) -> ContextManager[Any]:
        """A block that cancellation does not interrupt (trio's shielded scope)."""

    def notify_closing(self, fd: int) -> None:
        """Wake the task waiting in this loop object; it then sees its face closed."""

    def lock(self) -> Any:
        """A new async lock of this loop."""

    async def wait_queue(self, q: BatchQueue[Any], attempt: Callable[[], R],
                         closed: Callable[[], bool] = ...) -> R:
        """Retry ``attempt`` until it stops raising ``queue.Empty``/``queue.Full``;
        ``closed_resource`` once ``closed()`` (checked before each attempt)."""

    async def get_batch(self, q: BatchQueue[Any], closed: Callable[[], bool]) -> Any:
        """The next item of ``q`` (``ClosedError``/``ServiceError`` at its end);
        ``closed_resource`` once ``closed()``; a cancelled call takes nothing."""

    def wake(self) -> None:
        """Wake every ``wait_queue``/``get_batch`` waiting in this loop object
        (they then see ``closed()``): for a face closed by another task."""

    def end_of_stream(self) -> BaseException:
        """What ``receive()`` raises when a stream has ended."""

    def closed_resource(self, what: str) -> BaseException:
        """What using a face after its own ``aclose()`` raises."""

    def would_block(self, sending: bool) -> BaseException:
        """What a ``*_nowait`` call raises when it would have to wait."""

    def broken_resource(self, stopped: ClosedError) -> BaseException:
        """What a send raises once the service behind it has stopped (asyncio:
        ``stopped`` itself; trio: ``BrokenResourceError``, caused by it)."""

    def busy(self, what: str) -> BaseException:
        """What a second task waiting on the same resource gets."""


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


def _done(fut: asyncio.Future[bool], _task: object) -> None:
    _resolve(fut, True)


def _give_back_result(q: BatchQueue[Any], task: asyncio.Task[Any]) -> None:
    """An abandoned get that still took an item puts it back (in order)."""
    if task.cancelled():
        return
    if task.exception() is None:
        q.give_back(task.result())


def _abandon(q: BatchQueue[Any], task: asyncio.Task[Any]) -> None:
    if task.done():
        _give_back_result(q, task)
    else:
        task.cancel()
        task.add_done_callback(functools.partial(_give_back_result, q))


class AsyncioLoop:
    """Waits on one future at a time; ``notify_closing`` resolves it.

    Readers and writers are added for each wait and removed after it:
    epoll is level-triggered, so a registration left in place would call us
    back for as long as the fd stays ready.
    """

    name = "asyncio"

    def __init__(self) -> None:
        import asyncio  # lazy: importing netring_chan does not import asyncio

        self._aio = asyncio
        self._fut: asyncio.Future[bool] | None = None
        self._fds: list[tuple[asyncio.AbstractEventLoop, int, bool]] = []
        self._waiters: set[asyncio.Future[bool]] = set()

    def _unregister(self) -> None:
        fds, self._fds = self._fds, []
        for loop, fd, writable in fds:
            if writable:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)

    async def _wait(self, fds: Sequence[int], writable: bool, timeout: float | None) -> bool:
        loop = self._aio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        for fd in fds:
            if writable:
                loop.add_writer(fd, _resolve, fut, True)
            else:
                loop.add_reader(fd, _resolve, fut, True)
            self._fds.append((loop, fd, writable))
        handle = None if timeout is None else loop.call_later(max(timeout, 0.0), _resolve, fut, False)
        self._fut = fut
        try:
            return await fut
        finally:
            if handle is not None:
                handle.cancel()
            if self._fut is fut:
                self._fut = None
                self._unregister()  # else notify_closing already did

    async def wait_fd(self, fd: int, *, writable: bool = False, timeout: float | None = None) -> bool:
        return await self._wait((fd,), writable, timeout)

    async def wait_any_readable(self, fds: Sequence[int], timeout: float | None) -> None:
        await self._wait(fds, False, timeout)

    async def sleep(self, seconds: float) -> None:
        await self._wait((), False, seconds)

    async def checkpoint(self) -> None:
        await self._aio.sleep(0)

    async def checkpoint_if_cancelled(self) -> None:
        pass

    async def cancel_shielded_checkpoint(self) -> None:
        # asyncio cannot yield without letting a cancellation in, and a
        # cancellation here would undo nothing while telling the caller it
        # did: no yield.
        pass

    def shielded(self) -> ContextManager[Any]:
        return contextlib.nullcontext()

    def notify_closing(self, fd: int) -> None:
        fut, self._fut = self._fut, None
        self._unregister()
        if fut is not None:
            _resolve(fut, False)

    def lock(self) -> Any:
        return self._aio.Lock()

    def wake(self) -> None:
        for fut in list(self._waiters):
            _resolve(fut, False)

    async def wait_queue(self, q: BatchQueue[Any], attempt: Callable[[], R],
                         closed: Callable[[], bool] = lambda: False) -> R:
        # One attempt first; only when it would block, listen before
        # attempting again, so a change between that attempt and the wait
        # still wakes us. An attempt happens whole or not at all, so a
        # cancelled wait loses nothing.
        loop = self._aio.get_running_loop()
        while True:
            if closed():
                raise self.closed_resource("the face was closed")
            try:
                return attempt()
            except (queue.Empty, queue.Full):
                pass
            fut: asyncio.Future[bool] = loop.create_future()

            def wake(fut: asyncio.Future[bool] = fut) -> None:
                try:
                    loop.call_soon_threadsafe(_resolve, fut, True)
                except RuntimeError:  # the loop is closed: nobody waits any more
                    pass

            q.add_listener(wake)
            self._waiters.add(fut)
            try:
                try:
                    return attempt()
                except (queue.Empty, queue.Full):
                    await fut
            finally:
                self._waiters.discard(fut)
                q.remove_listener(wake)

    async def get_batch(self, q: BatchQueue[Any], closed: Callable[[], bool]) -> Any:
        try:
            item = q.get_nowait()
        except queue.Empty:
            item = await self._get_waiting(q, closed)
        try:
            await self._aio.sleep(0)  # a schedule point per batch, even when the queue is never empty
        except BaseException:
            q.give_back(item)  # cancelled after the take: the batch goes back, nothing is lost
            raise
        return item

    async def _get_waiting(self, q: BatchQueue[Any], closed: Callable[[], bool]) -> Any:
        """Wait through janus' async side, or until ``wake()``."""
        loop = self._aio.get_running_loop()
        while True:
            if closed():
                raise self.closed_resource("the face was closed")
            task = loop.create_task(q.get_async())
            fut: asyncio.Future[bool] = loop.create_future()
            task.add_done_callback(functools.partial(_done, fut))
            self._waiters.add(fut)
            try:
                await fut
            except BaseException:  # cancelled: nothing taken stays taken
                _abandon(q, task)
                raise
            finally:
                self._waiters.discard(fut)
            if task.done():
                return task.result()  # ClosedError/ServiceError at the end of the queue
            _abandon(q, task)  # woken by wake(): look at closed() again

    def end_of_stream(self) -> BaseException:
        return ClosedError("the service is stopped")

    def closed_resource(self, what: str) -> BaseException:
        return ClosedError(what)

    def would_block(self, sending: bool) -> BaseException:
        return queue.Full() if sending else queue.Empty()

    def broken_resource(self, stopped: ClosedError) -> BaseException:
        return stopped

    def busy(self, what: str) -> BaseException:
        return RuntimeError(what)


class TrioLoop:
    """trio's own waits; ``notify_closing`` is trio's (it wakes a waiter with
    ``ClosedResourceError`` and unregisters the fd) plus the cancel of a
    pending sleep — the order trio's own ``_unix_pipes`` uses before a close."""

    name = "trio"

    def __init__(self) -> None:
        import trio  # type: ignore[import-untyped]  # lazy; 0.22 ships no py.typed

        self._trio: Any = trio
        self._sleep_scope: Any = None
        self._events: set[Any] = set()

    async def wait_fd(self, fd: int, *, writable: bool = False, timeout: float | None = None) -> bool:
        trio = self._trio
        wait = trio.lowlevel.wait_writable if writable else trio.lowlevel.wait_readable
        with trio.move_on_after(float("inf") if timeout is None else max(timeout, 0.0)):
            try:
                await wait(fd)
            except trio.ClosedResourceError:
                return False  # notify_closing: the caller sees its face closed
            return True
        return False

    async def wait_any_readable(self, fds: Sequence[int], timeout: float | None) -> None:
        trio = self._trio
        async with trio.open_nursery() as nursery:
            async def one(fd: int) -> None:
                try:
                    await trio.lowlevel.wait_readable(fd)
                except trio.ClosedResourceError:
                    pass
                nursery.cancel_scope.cancel()

            for fd in fds:
                nursery.start_soon(one, fd)
            if timeout is not None:
                nursery.cancel_scope.deadline = trio.current_time() + max(timeout, 0.0)

    async def sleep(self, seconds: float) -> None:
        trio = self._trio
        with trio.move_on_after(seconds) as scope:
            self._sleep_scope = scope
            try:
                await trio.sleep_forever()
            finally:
                self._sleep_scope = None

    async def checkpoint(self) -> None:
        await self._trio.lowlevel.checkpoint()

    async def checkpoint_if_cancelled(self) -> None:
        await self._trio.lowlevel.checkpoint_if_cancelled()

    async def cancel_shielded_checkpoint(self) -> None:
        await self._trio.lowlevel.cancel_shielded_checkpoint()

    def shielded(self) -> ContextManager[Any]:
        scope: ContextManager[Any] = self._trio.CancelScope(shield=True)
        return scope

    def notify_closing(self, fd: int) -> None:
        scope = self._sleep_scope
        if scope is not None:
            scope.cancel()
        try:
            self._trio.lowlevel.notify_closing(fd)
        except RuntimeError:
            pass  # not inside trio.run: then no task can be waiting on it

    def lock(self) -> Any:
        return self._trio.Lock()

    def wake(self) -> None:
        for event in list(self._events):
            event.set()

    async def wait_queue(self, q: BatchQueue[Any], attempt: Callable[[], R],
                         closed: Callable[[], bool] = lambda: False) -> R:
        # As trio's memory channels: one attempt first, and only when it
        # would block, listen (before attempting again, so a change between
        # that attempt and the wait still wakes us) and wait.
        trio = self._trio
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            if closed():
                raise self.closed_resource("the face was closed")
            try:
                r = attempt()
            except (queue.Empty, queue.Full):
                got = await self._attempt_listening(q, attempt)
                if got is None:
                    continue
                (r,) = got
            await trio.lowlevel.cancel_shielded_checkpoint()
            return r

    async def _attempt_listening(self, q: BatchQueue[Any], attempt: Callable[[], R]) -> tuple[R] | None:
        """``(result,)`` of an attempt made while listening to ``q``, or ``None``
        once ``q`` changed (or ``wake()``) after it would block."""
        trio = self._trio
        token = trio.lowlevel.current_trio_token()
        event = trio.Event()

        def wake() -> None:
            try:
                token.run_sync_soon(event.set)
            except trio.RunFinishedError:
                pass

        q.add_listener(wake)
        self._events.add(event)
        try:
            try:
                return (attempt(),)
            except (queue.Empty, queue.Full):
                await event.wait()
                return None
        finally:
            self._events.discard(event)
            q.remove_listener(wake)

    async def get_batch(self, q: BatchQueue[Any], closed: Callable[[], bool]) -> Any:
        return await self.wait_queue(q, q.get_nowait, closed)

    def end_of_stream(self) -> BaseException:
        err: BaseException = self._trio.EndOfChannel()
        return err

    def closed_resource(self, what: str) -> BaseException:
        err: BaseException = self._trio.ClosedResourceError(what)
        return err

    def would_block(self, sending: bool) -> BaseException:
        err: BaseException = self._trio.WouldBlock()
        return err

    def broken_resource(self, stopped: ClosedError) -> BaseException:
        err: BaseException = self._trio.BrokenResourceError(str(stopped))
        err.__cause__ = stopped
        return err

    def busy(self, what: str) -> BaseException:
        err: BaseException = self._trio.BusyResourceError(what)
        return err
