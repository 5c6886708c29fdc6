"""``AsyncInjector``: a TX ring (any ``Sink``) fed from asyncio or trio, without a thread.

One implementation; it waits only through the ``_loops.Loop`` of the running
event loop (picked by the one rule, ``sniffio``, at the first wait, or by
``backend="asyncio" | "trio"``).

Why there is a sleep at all: ``poll`` on a TX-ring socket reports POLLOUT
when the slot at the kernel's head is free, *or* whenever the socket's send
buffer is less than half used (see ``rings/afpacket/tx.py``). When the ring
is full of frames still in flight (held by a qdisc or a device queue)
POLLOUT is therefore already set and tells nothing; we look at the slots
(``room()``), and if none came back we sleep 0.5 ms before looking again,
instead of spinning on a level-triggered readiness that never clears. When
the send buffer is the bottleneck, POLLOUT is clear and the wait really is
fd-driven.
"""

from __future__ import annotations

import errno
import time
import warnings
from typing import Any, Iterable

from .._sys import deadline_after
from .._loops import Loop, loop_for
from ..contract import Frame, Sink, TxStats
from ._own import adopt
from ..errors import ClosedError, RingFullError

__all__ = ["AsyncInjector"]

_STEP = 0.005  # longest single wait before the slots are looked at again
_BACKOFF = 0.0005  # sleep when POLLOUT was set but no slot came back
_SLICE = 0.001  # longest stretch of publishing without letting other tasks run


class AsyncInjector:
    """An ``Injector`` for asyncio or trio: ``await send(frame)`` waits for a
    free slot instead of failing when the ring is full.

    ``AsyncInjector("eth0", frame_count=512)`` opens its own ``Injector``
    (same options); ``AsyncInjector(sink)`` wraps an open ``Sink``. Either
    way the face owns what it wraps and closes it on ``close()``/``aclose()``,
    unless ``owns=False``. Use ``async with``; ``aclose()`` waits (without
    blocking the loop) for queued frames to go, up to ``drain_timeout``
    (default: the injector's own).
    """

    _closed = True

    def __init__(self, sink: str | Sink, *, owns: bool = True, backend: str | None = None,
                 **options: Any) -> None:
        from ..rings.afpacket import Injector  # lazy: keeps the faces importable first

        self._sink: Sink = adopt(sink, Sink, Injector, owns=owns, backend=backend, options=options)
        self._owns = owns
        self._backend_name = backend
        self._loop: Loop | None = None
        self._lock: Any = None
        self._closed = False

    @property
    def injector(self) -> Sink:
        """The wrapped sink (an ``Injector`` unless another was given)."""
        return self._sink

    @property
    def closed(self) -> bool:
        """True once the face or its sink was closed."""
        return self._closed or self._sink.closed

    def _the_loop(self) -> Loop:
        if self._loop is None:
            loop = loop_for(self._backend_name)
            self._lock = loop.lock()
            self._loop = loop
        return self._loop

    def _check(self) -> None:
        if self.closed:
            raise ClosedError(f"injector on {self._sink.label!r} is closed")

    async def _wait_room(self, loop: Loop, deadline: float | None) -> None:
        """Wait a step for the sink to make room (``RingFullError`` past ``deadline``)."""
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RingFullError(errno.EAGAIN, f"no free TX slot on {self._sink.label!r} in time")
        step = _STEP if left is None else min(_STEP, left)
        t0 = time.monotonic()
        ready = await loop.wait_fd(self._sink.fileno(), writable=True, timeout=step)
        self._check()
        if ready and time.monotonic() - t0 < _BACKOFF and not self._sink.room():
            await loop.sleep(_BACKOFF)
            self._check()

    async def send(self, data: Frame, *, timeout: float | None = None) -> None:
        """Queue one frame, waiting (without blocking the loop) for a slot.

        Same checks as ``Injector.send``; ``RingFullError`` only if
        ``timeout`` passes. Frames go out on ``flush()`` or when the ring
        fills; a task cancelled while waiting queued nothing.
        """
        await self._publish_all([data], timeout)

    async def send_many(self, frames: Iterable[Frame], *, timeout: float | None = None) -> int:
        """Queue every frame, then ``flush``; returns how many were queued.

        Runs of free slots are filled by one call each (``Sink.publish``);
        ``timeout`` bounds each wait for room.
        """
        try:
            return await self._publish_all(list(frames), timeout)
        finally:
            if not self.closed:
                self._sink.flush()

    async def _publish_all(self, frames: list[Any], timeout: float | None) -> int:
        # contract.publish_all, with the waits done in the event loop.
        loop = self._the_loop()
        sink = self._sink
        n, total = 0, len(frames)
        # At most a ring's worth per call: slicing the whole rest of a long
        # list for every run of free slots made send_many quadratic.
        step = max(1, sink.capacity)
        while n < total:
            self._check()
            # The yield (and cancellation point) comes before runs are queued,
            # never after: a send cancelled there, or while waiting for room,
            # queued nothing; a frame once queued is counted and returned.
            await loop.checkpoint()
            self._check()
            async with self._lock:
                # Runs back to back for up to _SLICE s between checkpoints:
                # a lock round and a checkpoint per run of 256 frames were
                # a scheduler pass each (trio's most of all), about as much
                # as the run's own Python.
                until = time.monotonic() + _SLICE
                while n < total:
                    self._check()
                    k = sink.publish(frames[n:n + step] if n or total > step else frames)
                    if not k:
                        deadline = deadline_after(timeout)
                        while not k:
                            await self._wait_room(loop, deadline)
                            k = sink.publish(frames[n:n + step] if n or total > step else frames)
                    n += k
                    if time.monotonic() >= until:
                        break
        return n

    async def flush(self) -> int:
        """Kick the kernel (never blocks); how many queued frames it took."""
        loop = self._the_loop()
        self._check()
        n = self._sink.flush()
        await loop.checkpoint()
        return n

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """Flush and wait until every queued frame is sent; False on timeout."""
        loop = self._the_loop()
        self._check()
        deadline = deadline_after(timeout)
        async with self._lock:
            while True:
                self._check()
                self._sink.flush()
                if self._sink.stats().pending == 0:
                    await loop.checkpoint()
                    return True
                try:
                    await self._wait_room(loop, deadline)
                except RingFullError:
                    return False

    def stats(self) -> TxStats:
        """The sink's counters (``Injector.stats()``: an ``InjectorStats``)."""
        return self._sink.stats()

    def close(self) -> None:
        """Close now: wake waiting tasks (they raise ``ClosedError``), kick
        what is queued once, release the ring if owned. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._loop is not None and not self._sink.closed:
            self._loop.notify_closing(self._sink.fileno())
        if self._owns:
            self._sink.close(timeout=0)

    async def aclose(self, timeout: float | None = None) -> None:
        """Wait for queued frames (up to ``timeout``, default the injector's
        ``drain_timeout``) without blocking the loop, then ``close()``.

        The close happens whatever the wait raised (the interface gone, a
        cancellation)."""
        try:
            if not self.closed:
                wait = self._sink.drain_timeout if timeout is None else timeout
                try:
                    await self.wait_drained(wait)
                except ClosedError:
                    pass
        finally:
            self.close()

    async def __aenter__(self) -> AsyncInjector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self._closed = True
            if self._owns:
                self._sink.close(timeout=0)

    def __repr__(self) -> str:
        name = self._loop.name if self._loop is not None else (self._backend_name or "?")
        return f"<AsyncInjector {getattr(self, '_sink', None)!r} backend={name}>"
