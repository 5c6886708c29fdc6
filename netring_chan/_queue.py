"""The policy core shared by the thread services: a queue bounded in packets.

One state object, written once, that every face wraps (as trio's memory
channels do): ``put``/``put_nowait`` for producers, ``get``/``get_nowait``
for consumers, ``begin_close``/``finish_close``/``fail`` for stop and error
hand-off, exact counters for ``stats``. It knows nothing of rings or of
which side is a thread: the capture service puts from its source threads and
consumers get from sync, asyncio or trio code; an injection service can put
from user code and get from its sender thread with the same object.

Storage is a ``janus.Queue`` (unbounded in items): its sync side serves
threads (``get(timeout)``), its async side serves asyncio (``await get()``).
The bound is kept here, in packets — an item counts ``len(item)`` — because
janus counts items. Trio and any other waiter use ``add_listener``: a
callback run (from whichever thread changed the state, outside every lock)
after each put, get and close, that ``_loops`` turns into a wake-up of its
own loop.

Admission: an item is admitted whole when it fits in the room left. An item
larger than the whole capacity is admitted only into an empty queue (it
could never fit otherwise); it is then the only item and the queue holds more
than its bound until it is taken. When it does not fit, ``overflow="block"``
waits for room and ``overflow="drop"`` drops the newest item, counted in
``dropped``. Once closing has begun, items are admitted beyond the bound and
without waiting (they are what the producers still held at stop, kept so
they can be drained and counted); ``peak`` only measures the running queue.

Lock order: our ``_lock`` may be held while calling into janus (which takes
its own mutex); janus never calls back into us, and listeners are called
with no lock held.
"""

from __future__ import annotations

import dataclasses
import enum
import queue
import threading
import time
from collections import deque
from typing import Callable, Generic, Sized, TypeVar

import janus

from ._sys import check_timeout, deadline_after
from .errors import ClosedError, ConfigError, NetringError

__all__ = ["Overflow", "ServiceError", "BatchQueue", "QueueCounters"]


class Overflow(str, enum.Enum):
    """What a producer does when the queue has no room for an item."""

    BLOCK = "block"  # wait for room: back-pressure (the kernel ring fills and drops, counted)
    DROP = "drop"  # drop the newest item at the queue, counted in queue drops


class ServiceError(NetringError, RuntimeError):
    """A service thread failed; ``__cause__`` is what it raised.

    ``thread`` names the thread (and so the source) that failed.
    """

    def __init__(self, thread: str, cause: BaseException) -> None:
        super().__init__(f"{thread} failed: {type(cause).__name__}: {cause}")
        self.thread = thread


T = TypeVar("T", bound=Sized)


@dataclasses.dataclass(frozen=True)
class QueueCounters:
    """A consistent snapshot of the queue's counters (all in packets)."""

    capacity: int
    queued: int
    peak: int
    delivered: int
    dropped: int


class BatchQueue(Generic[T]):
    """Bounded in packets, with an overflow policy, stop/drain and error hand-off."""

    def __init__(self, capacity: int, overflow: Overflow | str) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ConfigError(f"capacity must be a positive int (packets), got {capacity!r}")
        try:
            self.overflow = Overflow(overflow)
        except ValueError:
            raise ConfigError(f"overflow must be 'block' or 'drop', got {overflow!r}") from None
        self.capacity = capacity
        # Re-entrant: a signal handler that stops the service may interrupt
        # this thread while it holds the lock.
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._jq: janus.Queue[T] = janus.Queue()
        # Items handed back by a consumer that stopped mid-item: served first.
        self._front: deque[T] = deque()
        self._queued = 0
        self._peak = 0
        self._delivered = 0
        self._dropped = 0
        # Read by the service threads without the lock (a stale read only
        # delays them by one poll interval); written under it.
        self.closing = False  # no more waiting for room: producers finish
        self.closed = False  # no more items: consumers get the rest, then the end
        self.error: BaseException | None = None  # the first failure of a thread
        self._error_thread = ""
        self._listeners: list[Callable[[], None]] = []

    # -- listeners -------------------------------------------------------------

    def add_listener(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` after every state change (from any thread, no lock held)."""
        with self._lock:
            self._listeners.append(cb)

    def remove_listener(self, cb: Callable[[], None]) -> None:
        with self._lock:
            try:
                self._listeners.remove(cb)
            except ValueError:
                pass

    def _notify(self) -> None:
        with self._lock:
            cbs = list(self._listeners)
        for cb in cbs:
            cb()

    # -- producer side ----------------------------------------------------------

    def _admit(self, item: T, n: int) -> None:
        # Called with _lock held.
        self._jq.sync_q.put_nowait(item)
        self._queued += n
        if not self.closing and self._queued > self._peak:
            self._peak = self._queued

    def _try_put(self, item: T, n: int) -> bool | None:
        """Admit, drop or (None) say the caller must wait. ``_lock`` held."""
        if self.closed:
            raise self._end()  # ServiceError (with its cause) if a thread failed
        if self.closing or self._queued == 0 or self._queued + n <= self.capacity:
            self._admit(item, n)
            return True
        if self.overflow is Overflow.DROP:
            self._dropped += n
            return False
        return None

    def put_nowait(self, item: T) -> bool:
        """Admit ``item`` (True) or drop it by policy (False); ``queue.Full`` if it must wait."""
        n = len(item)
        with self._lock:
            r = self._try_put(item, n)
        if r is None:
            raise queue.Full
        if r:
            self._notify()
        return r

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Admit ``item`` (True) or drop it (False), waiting for room under ``block``.

        Returns at once when closing begins (the item is then admitted beyond
        the bound, to be drained). ``queue.Full`` if no room came within
        ``timeout`` seconds (``None``: wait as long as it takes).
        """
        n = len(item)
        deadline = deadline_after(timeout)
        with self._lock:
            while True:
                r = self._try_put(item, n)
                if r is not None:
                    break
                if deadline is None:
                    self._room.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise queue.Full
                    self._room.wait(left)
        if r:
            self._notify()
        return r

    def admit(self, item: T) -> None:
        """Admit ``item`` now, beyond the bound if need be: for a producer that
        is its own queue's consumer (a capture service in pull mode reads into
        an empty queue, but a consumer may hand a rest back meanwhile), which
        would otherwise wait, or drop, for room only it can make."""
        n = len(item)
        with self._lock:
            if self.closed:
                raise self._end()
            self._admit(item, n)
        self._notify()

    # -- consumer side ----------------------------------------------------------

    def _taken(self, item: T) -> T:
        n = len(item)
        with self._lock:
            self._queued -= n
            self._delivered += n
            self._room.notify_all()
        return item

    def _end(self) -> ClosedError | ServiceError:
        """What a consumer raises once the queue is closed and empty."""
        if self.error is not None:
            err = ServiceError(self._error_thread, self.error)
            err.__cause__ = self.error
            return err
        return ClosedError("the service is stopped")

    def _take_front(self) -> T | None:
        with self._lock:
            if not self._front:
                return None
            item = self._front.popleft()
            n = len(item)
            self._queued -= n
            self._delivered += n
            self._room.notify_all()
        return item

    def get_nowait(self) -> T:
        """An item, or ``queue.Empty``; ``ClosedError``/``ServiceError`` at the end."""
        item = self._take_front()
        if item is None:
            try:
                item = self._jq.sync_q.get_nowait()
            except janus.SyncQueueShutDown:
                raise self._end() from self.error
            self._taken(item)
        self._notify()
        return item

    def get(self, timeout: float | None = None) -> T:
        """Wait up to ``timeout`` seconds for an item (``queue.Empty`` on timeout)."""
        check_timeout(timeout)
        item = self._take_front()
        if item is None:
            try:
                item = self._jq.sync_q.get(timeout=timeout)
            except janus.SyncQueueEmpty:
                raise queue.Empty from None
            except janus.SyncQueueShutDown:
                raise self._end() from self.error
            self._taken(item)
        self._notify()
        return item

    async def get_async(self) -> T:
        """``await`` an item from asyncio (through janus' async side)."""
        item = self._take_front()
        if item is None:
            try:
                item = await self._jq.async_q.get()
            except janus.AsyncQueueShutDown:
                raise self._end() from self.error
            self._taken(item)
        self._notify()
        return item

    def give_back(self, item: T) -> None:
        """Return the unconsumed rest of an item to the front of the queue.

        Un-counts it as delivered: a consumer that stopped mid-item hands back
        what it never passed on, so the accounting stays exact.
        """
        n = len(item)
        if not n:
            return
        with self._lock:
            self._front.appendleft(item)
            self._queued += n
            self._delivered -= n
        self._notify()

    def wait_empty(self, timeout: float | None) -> bool:
        """Wait until consumers took everything queued (True) or ``timeout`` s passed."""
        deadline = deadline_after(timeout)
        with self._lock:
            while self._queued:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._room.wait(left)
        return True

    def get_all(self) -> list[T]:
        """Take everything still queued, without waiting (counted as delivered)."""
        out: list[T] = []
        while True:
            try:
                out.append(self.get_nowait())
            except (queue.Empty, ClosedError, ServiceError):
                return out

    # -- stop and errors ----------------------------------------------------------

    def begin_close(self) -> None:
        """No more waiting for room: producers finish, admitting beyond the bound."""
        with self._lock:
            self.closing = True
            self._room.notify_all()
        self._notify()

    def fail(self, thread: str, exc: BaseException, *, finish: bool = False) -> None:
        """Record the first failure (raised to consumers at the end) and close.

        ``finish=True`` also ends admission at once (``finish_close``), so
        producers get the error instead of being admitted: for a queue whose
        consumer is the failed thread (the injection direction).
        """
        with self._lock:
            if self.error is None:
                self.error = exc
                self._error_thread = thread
        if finish:
            self.finish_close()
        else:
            self.begin_close()

    def finish_close(self) -> None:
        """No more items: consumers get what is queued, then the end (or the error)."""
        with self._lock:
            self.closing = True
            if self.closed:
                return
            self.closed = True
            self._room.notify_all()
            self._jq.shutdown()
        self._notify()

    def counters(self) -> QueueCounters:
        with self._lock:
            return QueueCounters(self.capacity, self._queued, self._peak, self._delivered, self._dropped)
