"""fd-driven ``AsyncInjector`` for asyncio and trio, without a thread.

One implementation; the only difference between the event loops is how to
wait for the socket to become writable and how to sleep, so each loop gets a
tiny backend with exactly those waits. The backend is picked from the running
loop (``sniffio``) the first time the injector is awaited, or by
``backend="asyncio" | "trio"``.

Why there is a sleep at all: ``poll`` on a TX-ring socket reports POLLOUT
when the slot at the kernel's head is free, *or* whenever the socket's send
buffer is less than half used (see ``rings/inject.py``). When the ring is
full of frames still in flight (held by a qdisc or a device queue) POLLOUT
is therefore already set and tells nothing; we look at the slots, and if
nothing came back we sleep 0.5 ms before looking again, instead of spinning
on a level-triggered readiness that never clears. When the send buffer is
the bottleneck, POLLOUT is clear and the wait really is fd-driven.
"""

from __future__ import annotations

import errno
import time
from typing import TYPE_CHECKING, Any, Iterable, Protocol

from .errors import ClosedError, ConfigError
from .rings.inject import Injector, InjectorStats, RingFullError

if TYPE_CHECKING:
    import asyncio

__all__ = ["AsyncInjector"]

_STEP = 0.005  # longest single wait before the slots are looked at again
_BACKOFF = 0.0005  # sleep when POLLOUT was set but no slot came back


class _Backend(Protocol):
    async def wait_writable(self, fd: int, timeout: float) -> bool:
        """True if ``fd`` became writable within ``timeout`` seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    async def checkpoint(self) -> None: ...

    def lock(self) -> Any:
        """An async lock of this loop: one task at a time waits on the fd."""
        ...

    def notify_closing(self, fd: int) -> None:
        """Wake a task waiting on ``fd``; it then sees the injector closed."""
        ...


def _resolve(fut: asyncio.Future[bool], value: bool) -> None:
    if not fut.done():
        fut.set_result(value)


class _AsyncioBackend:
    def __init__(self) -> None:
        import asyncio  # lazy: importing netring_chan does not import asyncio

        self._aio = asyncio
        self._fut: asyncio.Future[bool] | None = None
        self._writer: tuple[asyncio.AbstractEventLoop, int] | None = None

    async def wait_writable(self, fd: int, timeout: float) -> bool:
        loop = self._aio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        loop.add_writer(fd, _resolve, fut, True)
        self._writer = (loop, fd)
        handle = loop.call_later(timeout, _resolve, fut, False)
        self._fut = fut
        try:
            return await fut
        finally:
            handle.cancel()
            if self._fut is fut:
                self._fut = None
                self._drop_writer()

    def _drop_writer(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w[0].remove_writer(w[1])

    async def sleep(self, seconds: float) -> None:
        await self._aio.sleep(seconds)

    async def checkpoint(self) -> None:
        await self._aio.sleep(0)

    def lock(self) -> Any:
        return self._aio.Lock()

    def notify_closing(self, fd: int) -> None:
        fut, self._fut = self._fut, None
        self._drop_writer()
        if fut is not None:
            _resolve(fut, False)


class _TrioBackend:
    def __init__(self) -> None:
        import trio  # type: ignore[import-untyped]  # lazy; 0.22 ships no py.typed

        self._trio = trio

    async def wait_writable(self, fd: int, timeout: float) -> bool:
        with self._trio.move_on_after(timeout):
            try:
                await self._trio.lowlevel.wait_writable(fd)
            except self._trio.ClosedResourceError:
                return False  # notify_closing: the caller sees the injector closed
            return True
        return False

    async def sleep(self, seconds: float) -> None:
        await self._trio.sleep(seconds)

    async def checkpoint(self) -> None:
        await self._trio.lowlevel.checkpoint()

    def lock(self) -> Any:
        return self._trio.Lock()

    def notify_closing(self, fd: int) -> None:
        try:
            self._trio.lowlevel.notify_closing(fd)
        except RuntimeError:
            pass  # not inside trio.run: no task can be waiting on it


_BACKENDS = ("asyncio", "trio")


class AsyncInjector:
    """An ``Injector`` for asyncio or trio: ``await send(frame)`` waits for a
    free slot instead of failing when the ring is full.

    ``AsyncInjector("eth0", frame_count=512)`` opens its own ``Injector``
    (same options); ``AsyncInjector(injector)`` wraps one you made (and
    closes it on ``aclose`` unless ``owns_injector=False``). Use
    ``async with``; ``aclose()`` waits (without blocking the loop) for queued
    frames to go, up to the injector's ``drain_timeout``.
    """

    def __init__(self, source: str | Injector, *, backend: str | None = None,
                 owns_injector: bool | None = None, **options: Any) -> None:
        if backend is not None and backend not in _BACKENDS:
            raise ConfigError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
        if isinstance(source, Injector):
            if options:
                raise ConfigError(f"options {sorted(options)} given with an existing Injector")
            self._inj = source
            self._owns = bool(owns_injector) if owns_injector is not None else True
        else:
            self._inj = Injector(source, **options)
            self._owns = True
        self._backend_name = backend
        self._be: _Backend | None = None
        self._lock: Any = None
        self._closed = False

    @property
    def injector(self) -> Injector:
        return self._inj

    @property
    def closed(self) -> bool:
        return self._closed or self._inj.closed

    def _backend(self) -> _Backend:
        if self._be is None:
            name = self._backend_name
            if name is None:
                import sniffio

                name = sniffio.current_async_library()
            if name not in _BACKENDS:
                raise ConfigError(f"AsyncInjector supports asyncio and trio, not {name!r}")
            be: _Backend = _AsyncioBackend() if name == "asyncio" else _TrioBackend()
            self._be = be
            self._lock = be.lock()
        return self._be

    def _check(self) -> None:
        if self.closed:
            raise ClosedError(f"injector on {self._inj.interface!r} is closed")

    async def _wait_progress(self, be: _Backend, deadline: float | None) -> None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RingFullError(errno.EAGAIN, f"no free TX slot on {self._inj.interface!r} in time")
        step = _STEP if left is None else min(_STEP, left)
        t0 = time.monotonic()
        ready = await be.wait_writable(self._inj.fileno(), step)
        self._check()
        if ready and time.monotonic() - t0 < _BACKOFF and not self._inj._poll_progress():
            await be.sleep(_BACKOFF)
            self._check()

    async def send(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Queue one frame, waiting (without blocking the loop) for a slot.

        Same checks as ``Injector.send``; ``RingFullError`` only if
        ``timeout`` passes. Frames go out on ``flush()`` or when the ring
        fills; a task cancelled while waiting queued nothing.
        """
        be = self._backend()
        self._check()
        async with self._lock:
            self._check()
            if self._inj.try_send(data):
                await be.checkpoint()
                return
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                await self._wait_progress(be, deadline)
                if self._inj._try_send(data, count_full=False, deadline=time.monotonic()):
                    return

    async def send_many(self, frames: Iterable[bytes | bytearray | memoryview], *,
                        timeout: float | None = None) -> int:
        """Queue every frame, then ``flush``; returns how many were queued.

        Runs of free slots are filled by one C call each
        (``Injector.try_send_many``); a frame that must wait for room, or needs
        the full checks, goes through ``send``.
        """
        be = self._backend()
        n = 0
        seq = list(frames)
        cap = self._inj.frame_count
        try:
            while n < len(seq):
                self._check()
                async with self._lock:
                    k = self._inj.try_send_many(seq[n:n + cap])
                if k:
                    n += k
                    await be.checkpoint()
                    continue
                await self.send(seq[n], timeout=timeout)
                n += 1
        finally:
            if not self.closed:
                self._inj.flush()
        return n

    async def flush(self) -> int:
        """Kick the kernel (never blocks); how many queued frames it took."""
        be = self._backend()
        self._check()
        n = self._inj.flush()
        await be.checkpoint()
        return n

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Flush and wait until every queued frame is sent; False on timeout."""
        be = self._backend()
        self._check()
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._lock:
            while True:
                self._check()
                self._inj.flush()
                if self._inj.stats().pending == 0:
                    await be.checkpoint()
                    return True
                try:
                    await self._wait_progress(be, deadline)
                except RingFullError:
                    return False

    def stats(self) -> InjectorStats:
        return self._inj.stats()

    def close(self) -> None:
        """Close now: wake waiting tasks (they raise ``ClosedError``), kick
        what is queued once, release the ring. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._be is not None and not self._inj.closed:
            self._be.notify_closing(self._inj.fileno())
        if self._owns:
            self._inj.close(timeout=0)

    async def aclose(self, timeout: float | None = None) -> None:
        """Wait for queued frames (up to ``timeout``, default the injector's
        ``drain_timeout``) without blocking the loop, then ``close()``."""
        if not self.closed:
            wait = self._inj.config.drain_timeout if timeout is None else timeout
            try:
                await self.wait_drained(wait)
            except ClosedError:
                pass
        self.close()

    async def __aenter__(self) -> AsyncInjector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<AsyncInjector {self._inj!r} backend={self._backend_name or '?'}>"
