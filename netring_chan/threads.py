"""The OS-thread side: the capture and injection services.

One lifecycle (``_ThreadService``) runs both services: named daemon threads
(named at the OS level too), ``stop()`` within about a second whatever the
threads are doing, join, an ``atexit`` hook, a ``ResourceWarning`` for a
service dropped while running. Each service adds only its thread loop and
the hooks of its direction; the bounded queue between threads and user code
is ``_queue.BatchQueue`` and its asyncio and trio faces are ``_faces``.

* ``CaptureService(sources)``: one thread per ``Source`` runs the source
  loop::

      batch = source.next_batch_blocking(short timeout)   # poll, GIL released
      owned = batch.to_owned()                            # one C copy
      batch.release()                                     # memory back to the kernel at once
      queue.put(owned)                                    # policy: block or drop

  where a source with ``next_owned_blocking`` (an AF_PACKET capture) does
  the first three in one step: the walk and the copy of the block in one C
  call that lets the GIL go once (see ``contract.Source``).

  A capture service in pull mode (``_PullCaptureService``, private; the
  fanout workers' sync targets use it) has no thread: when its queue is
  empty, the sync face runs one step of that loop in the consumer's own
  thread, into the same queue, and ``stop`` does the source's end
  (quiesce, sweep, close) as the thread would.

* ``InjectService(sinks)``: one thread per ``Sink`` runs the sender loop::

      frames = queue.get() + whatever else is queued (up to a ring's worth)
      sink.publish(frames) ...      # runs of free slots in one call each, waiting for room
      sink.flush()                  # one kick of the kernel per batch

Draining means one thing in both directions: ``stop(drain=True)`` first stops
admitting (capture: the sources are quiesced and what they hold is queued;
injection: producers get ``ClosedError``), then waits, up to ``timeout``,
until the queue's consumer has taken everything queued — your consumers for
a capture service, the sender threads (and the rings) for an injection
service — then stops. ``wait_drained(timeout)`` is the same wait without
stopping. ``stop()`` without drain returns within a second: a capture
service's consumers still get what is queued, then the end; an injection
service's queued frames are discarded (counted), as there is nobody left to
send them.

Capture accounting. For every source, the packets it accepted (which include
its drops) either reached it or were dropped by it; what reached it is copied
into the queue or dropped there (``overflow="drop"``); what is queued is
either handed to a consumer (``delivered``) or still queued. A per-packet face
closed mid-batch puts the rest back at the head of the queue, un-delivered.
At stop each thread quiesces its source (``Source.quiesce``), waits as long
as the source says for what is in flight, moves the rest into the queue
(beyond the bound), then closes the source, which reads its final counters.
Packets a source accepted and then lost to a failure (a malformed block)
are its ``lost``. So for a finished run::

    packets == delivered + drops + queue drops + still queued + lost

exactly. Injection accounting: see ``InjectServiceStats``.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import queue
import sys
import threading
import time
import warnings
import weakref
from itertools import chain
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, Iterator, Sequence

from . import _fork
from ._fastpath import plain_run as _plain_run
from ._queue import BatchQueue, Overflow, ServiceError
from ._sys import check_timeout, deadline_after, set_thread_name
from .contract import Batch, Frame, Sink, Source, has_next_owned
from .errors import ClosedError, ConfigError
from .packet import OwnedBatch, OwnedPacket, PacketCursor

if TYPE_CHECKING:
    from ._faces import AsyncioReceiver, AsyncioSender, Receiver, Sender

__all__ = [
    "CaptureService",
    "InjectService",
    "ServiceStats",
    "SourceStats",
    "InjectServiceStats",
    "ServiceError",
    "Overflow",
]

# How long an idle thread waits (in poll or on the queue) before it looks at the stop flags.
POLL_INTERVAL = 0.1
# stop() waits this long for the threads before it closes their sources or
# sinks from outside (which wakes any wait at once).
_JOIN_BUDGET = 0.8
# Least frames per queue item of send_many; a sender thread takes at least
# this many (up to its sink's capacity) from the queue before it flushes its sink.
_BATCH = 64
# Polling period of the waits that have nothing to wait on (counters).
_SETTLE_POLL = 0.002


# Waits with nothing to wait on but counters, written once for threads and
# event loops: ``_until`` yields how long to sleep between looks and returns
# the outcome; ``_wait_sync`` / ``_wait_async`` do the sleeping.
Steps = Generator[float, None, bool]


def _until(done: Callable[[], bool], deadline: float | None) -> Steps:
    """True once ``done()``; False if ``deadline`` (monotonic) passes first."""
    while not done():
        if deadline is not None and time.monotonic() >= deadline:
            return False
        yield _SETTLE_POLL
    return True


def _wait_sync(steps: Steps) -> bool:
    while True:
        try:
            time.sleep(next(steps))
        except StopIteration as e:
            return bool(e.value)


async def _wait_async(steps: Steps, sleep: Callable[[float], Any]) -> bool:
    while True:
        try:
            delay = next(steps)
        except StopIteration as e:
            return bool(e.value)
        await sleep(delay)


def _library_dirs() -> tuple[str, ...]:
    import janus

    return (os.path.dirname(os.path.abspath(__file__)) + os.sep,
            os.path.dirname(os.path.abspath(janus.__file__)) + os.sep)


_LIBRARY_DIRS = _library_dirs()


def _inside_library(frame: FrameType | None) -> bool:
    """Whether this thread's stack, below ``frame``, is in netring_chan or janus
    code, which may hold a lock that a stop must take."""
    while frame is not None:
        if frame.f_code.co_filename.startswith(_LIBRARY_DIRS):
            return True
        frame = frame.f_back
    return False


# -- the one lifecycle -------------------------------------------------------------

_live: weakref.WeakSet[_ThreadService] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for svc in list(_live):
        try:
            svc._at_exit()
        except Exception:  # noqa: BLE001 - never raise or hang at interpreter exit
            pass


class _Countdown:
    """Called by each thread of a service as it ends; the last one closes the
    queue, so consumers see the end only after every thread."""

    def __init__(self, n: int, core: BatchQueue[Any]) -> None:
        self._n = n
        self._core = core
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._n -= 1
            last = self._n == 0
        if last:
            self._core.finish_close()


class _ThreadService:
    """Start, stop, join, atexit and leak warning, for both services.

    A subclass provides its queue (``_core``), the resources its threads use
    (``_members``: sources or sinks; the service owns and closes them), the
    thread body (``_thread_main``) and the direction's stop hooks
    (``_begin_stop``, ``_end_stop``, ``_drained_now``).
    """

    _core: BatchQueue[Any]
    _members: tuple[Any, ...]
    _kind = "service"
    _threaded = True  # one thread per member (a capture service in pull mode has none)

    def __init__(self, name: str, poll_interval: float, drain_timeout: float) -> None:
        self._started = False
        self._stopped = False
        self._forked = False
        self._pid = 0
        self._stop_deferred = False
        self._stop_done = threading.Event()
        self._stopper = 0
        self._drain_deadline = 0.0
        self._threads: list[threading.Thread] = []
        if not isinstance(poll_interval, (int, float)) or isinstance(poll_interval, bool) \
                or not 0 < poll_interval <= 0.5:
            raise ConfigError(f"poll_interval must be in (0, 0.5] seconds, got {poll_interval!r}")
        check_timeout(drain_timeout, "drain_timeout")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"name must be a non-empty str, got {name!r}")
        self.name = name
        self._poll = float(poll_interval)
        self.drain_timeout = float(drain_timeout)

    @staticmethod
    def _members_of(arg: object, kind: type, what: str) -> list[Any]:
        if isinstance(arg, kind):
            return [arg]
        try:
            return list(arg)  # type: ignore[call-overload,no-any-return]
        except TypeError:
            raise ConfigError(f"not a {what} nor a sequence of them (see netring_chan.contract): {arg!r}") from None

    @staticmethod
    def _distinct(members: Sequence[Any], what: str) -> None:
        if not members:
            raise ConfigError(f"a service needs at least one {what}")
        if len({id(m) for m in members}) != len(members):
            raise ConfigError(f"the same {what} was passed twice; one thread serves each")

    # -- what every service exposes ---------------------------------------------

    @property
    def capacity(self) -> int:
        """The queue bound (packets for a capture service, frames for an injection service)."""
        return self._core.capacity

    @property
    def overflow(self) -> Overflow:
        """What a producer does when the queue is full (``Overflow.BLOCK`` or ``DROP``)."""
        return self._core.overflow

    @property
    def running(self) -> bool:
        """Started and not yet stopped (threads may have ended on an error)."""
        return self._started and not self._stopped

    @property
    def error(self) -> BaseException | None:
        """The first exception one of the service's threads raised, if any."""
        return self._core.error

    def _check_not_forked(self) -> None:
        if self._forked:
            raise _fork.forked_error(repr(self), self._pid)

    def _check_started(self) -> None:
        self._check_not_forked()
        if not self._started:
            raise ClosedError("the service is not started: use `with svc:` or svc.start()")

    def _raise_if_failed(self) -> None:
        if self._core.error is not None:
            raise self._core._end()  # ServiceError from the thread's exception

    def _thread_name(self, i: int) -> str:
        return f"{self.name}-{self._members[i].label}"

    # -- start -------------------------------------------------------------------

    def _thread_main(self, i: int, name: str, done: Callable[[], None]) -> Callable[[], None]:
        raise NotImplementedError

    def start(self) -> Any:
        """Start one thread per member. Idempotent; a stopped service cannot restart."""
        if self._stopped:
            raise ClosedError("the service was stopped; make a new one")
        if self._started:
            return self
        self._started = True
        self._pid = os.getpid()
        _fork.track(self)
        done = _Countdown(len(self._members), self._core)
        for i in range(len(self._members) if self._threaded else 0):
            name = self._thread_name(i)
            # The body holds no reference to the service, so an abandoned
            # service can be collected (and warn) while its threads run.
            body = self._thread_main(i, name, done)
            self._threads.append(threading.Thread(target=_named(body, name), name=name, daemon=True))
        _live.add(self)
        for t in self._threads:
            t.start()
        return self

    # -- stop ---------------------------------------------------------------------

    def _begin_stop(self, drain: bool, deadline: float) -> float:
        """End admission and tell the threads; return when to stop joining them."""
        raise NotImplementedError

    def _wake_members(self) -> None:
        # Closing a source or sink from outside wakes a thread blocked in it.
        for m in self._members:
            try:
                m.close()
            except Exception:  # noqa: BLE001
                pass

    def _end_stop(self, drain: bool) -> None:
        """After the join: whatever the threads did not finish."""
        if not self._threads_done():
            self._wake_members()
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join(0.15)
        if not self._started:
            self._wake_members()

    def _drained_now(self) -> bool:
        """After the threads stopped: whether the queue's consumer took everything."""
        return True

    def _threads_done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _stop_begin(self, drain: bool, timeout: float | None) -> float | None:
        check_timeout(timeout)
        if self._stopped:
            return None
        self._stopped = True
        self._stopper = threading.get_ident()
        _live.discard(self)
        wait = self.drain_timeout if timeout is None else float(timeout)
        self._drain_deadline = time.monotonic() + wait
        return self._begin_stop(drain, self._drain_deadline)

    def stop(self, drain: bool = False, timeout: float | None = None) -> bool:
        """Stop the threads and close the sources or sinks. Idempotent.

        ``drain=False`` returns within about a second. ``drain=True`` first
        waits, up to ``timeout`` s (default ``drain_timeout``), until what
        was queued has been taken by the queue's consumer (see the module
        notes), then stops; it raises ``ServiceError`` if a thread failed.
        Returns whether everything queued was taken (always True without
        drain). A call while another thread is stopping the service waits
        until that stop is done.

        Safe from a signal handler and from any thread. Called while this
        thread is itself inside the library (a signal handler that
        interrupted ``get()`` or ``send()``, a finalizer run by the garbage
        collector), it cannot wait for the call it interrupted: it then
        hands the stop to a helper thread at once and returns False; the
        interrupted call returns or raises ``ClosedError`` as it would after
        any stop.
        """
        return self._stop_from(sys._getframe(1), drain, timeout)

    def _after_fork_in_child(self) -> None:
        # The threads did not come along, and their locks may be held for
        # ever here: the child's copy is stopped and unusable (see _fork).
        self._forked = True
        self._stopped = True
        _live.discard(self)

    def _stop_from(self, caller: FrameType | None, drain: bool = False, timeout: float | None = None) -> bool:
        if self._forked:
            return False
        if not _inside_library(caller):
            return self._stop_now(drain, timeout)
        check_timeout(timeout)
        if not self._stopped and not self._stop_deferred:
            self._stop_deferred = True
            threading.Thread(target=self._stop_now, args=(drain, timeout),
                             name=f"{self.name}-stop", daemon=True).start()
        return False

    def _stop_now(self, drain: bool = False, timeout: float | None = None) -> bool:
        join_until = self._stop_begin(drain, timeout)
        if join_until is None:
            # Stopped, or being stopped by another thread: wait for that to finish.
            if self._stopper != threading.get_ident():
                self._stop_done.wait(_JOIN_BUDGET + 1.0 + self.drain_timeout)
            return self._drained_now()
        try:
            me = threading.current_thread()
            for t in self._threads:
                if t is not me:
                    t.join(max(0.0, join_until - time.monotonic()))
            self._end_stop(drain)
            ok = True
            if drain:
                ok = _wait_sync(_until(self._drained_now, self._drain_deadline))
                self._raise_if_failed()
            return ok
        finally:
            self._stop_done.set()

    async def _stop_async(self, drain: bool, sleep: Callable[[float], Any]) -> None:
        """``stop`` without blocking an event loop (``sleep`` is the loop's)."""
        join_until = self._stop_begin(drain, None)
        if join_until is None:
            # Stopped, or being stopped by another thread: wait for that, without blocking the loop.
            if self._stopper != threading.get_ident():
                await _wait_async(_until(self._stop_done.is_set,
                                         time.monotonic() + _JOIN_BUDGET + 1.0 + self.drain_timeout), sleep)
            return
        try:
            while not self._threads_done() and time.monotonic() < join_until:
                await sleep(0.005)
            self._end_stop(drain)
            if drain:
                await _wait_async(_until(self._drained_now, self._drain_deadline), sleep)
                self._raise_if_failed()
        finally:
            self._stop_done.set()

    def _at_exit(self) -> None:
        self._stop_now()

    # -- the async faces (``_faces``), for either direction -------------------------

    def asyncio(self) -> Any:
        """The asyncio face (capture: through janus); starts the service if new."""
        return self._face("asyncio")

    def trio(self) -> Any:
        """The trio face, a ``trio.abc.ReceiveChannel`` (capture) or
        ``trio.abc.SendChannel`` (injection); starts the service if new."""
        return self._face("trio")

    def channel(self) -> Any:
        """The face of whichever loop is running (asyncio or trio, anyio on
        either: the one rule of ``_loops``); starts the service if new."""
        return self._face(None)

    def _face(self, loop: str | None) -> Any:
        from ._faces import face_for

        return face_for(self, loop, self._start_if_new)

    def _start_if_new(self) -> None:
        if not self._stopped:
            self.start()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop_from(sys._getframe(1))

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_stopped", True):
            warnings.warn(f"unstopped {self!r}", ResourceWarning, source=self)
            self._stop_from(sys._getframe(1))

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        on = ",".join(m.label for m in self._members)
        return f"<{type(self).__name__} {self.name!r} on {on} {state}>"


def _named(body: Callable[[], None], name: str) -> Callable[[], None]:
    def run() -> None:
        set_thread_name(name)
        body()
    return run


# -- capture ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceStats:
    """Counters of one source (totals since it opened)."""

    name: str
    packets: int  # frames the source accepted, including ``drops``
    drops: int  # frames it had no room for
    freezes: int  # times it was full and stopped accepting
    lost: int = 0  # accepted, then never handed out because the source failed


@dataclasses.dataclass(frozen=True)
class ServiceStats:
    """Counters of a capture service, all in packets.

    ``queue_drops``: dropped at the queue by ``overflow="drop"``;
    ``delivered``: handed to consumers; ``queued``: still in the queue;
    ``peak_queued``: the largest queue depth while running (at most
    ``capacity`` unless a single batch is larger than ``capacity``).
    For a finished run ``kernel_packets == delivered + kernel_drops +
    queue_drops + queued + lost`` (see ``balanced``); ``lost`` is non-zero
    only when a source failed with packets still in it.
    """

    sources: tuple[SourceStats, ...]
    queue_drops: int
    delivered: int
    queued: int
    peak_queued: int
    capacity: int
    # Totals over the sources (filled in from ``sources``).
    kernel_packets: int = dataclasses.field(init=False)
    kernel_drops: int = dataclasses.field(init=False)
    kernel_freezes: int = dataclasses.field(init=False)
    lost: int = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        for total, field in (("kernel_packets", "packets"), ("kernel_drops", "drops"),
                             ("kernel_freezes", "freezes"), ("lost", "lost")):
            object.__setattr__(self, total, sum(getattr(s, field) for s in self.sources))

    @property
    def balanced(self) -> bool:
        """Whether every packet the sources accepted is accounted for."""
        return self.kernel_packets == (self.delivered + self.kernel_drops + self.queue_drops + self.queued
                                       + self.lost)


def _put(core: BatchQueue[OwnedBatch], batch: Batch, index: int, admit: bool = False) -> None:
    """Copy ``batch`` out and queue it (``admit``: whatever the room, see ``BatchQueue.admit``)."""
    # In pull mode the copy runs in the consumer's thread, often the main
    # one: a Ctrl-C that arrives during the copy (made with the GIL
    # released) raises KeyboardInterrupt as it returns. The block is still
    # held then, so it is copied again and the interrupt raised once the
    # batch is queued: its packets are not lost from the counters.
    interrupted: KeyboardInterrupt | None = None
    with batch:
        while True:
            try:
                owned = batch.to_owned()
                break
            except KeyboardInterrupt as e:
                interrupted = e
    _queue_owned(core, owned, index, admit)
    if interrupted is not None:
        raise interrupted


def _queue_owned(core: BatchQueue[OwnedBatch], owned: OwnedBatch, index: int, admit: bool = False) -> None:
    if len(owned):
        owned.source = index
        if admit:
            core.admit(owned)
        else:
            core.put(owned)


def _sweep(core: BatchQueue[OwnedBatch], src: Source, index: int) -> None:
    """At stop: quiesce ``src`` and move what it still holds into the queue (beyond the bound)."""
    deadline = time.monotonic() + src.quiesce()
    while True:
        left = deadline - time.monotonic()
        b = src.next_batch_blocking(left) if left > 0 else src.next_batch()
        if b is None:
            if left <= 0:
                return
            continue
        _put(core, b, index)


def _read_one(core: BatchQueue[OwnedBatch], src: Source, index: int, wait: float, admit: bool = False,
              read_owned: Callable[[float], OwnedBatch | None] | None = None) -> bool:
    """One step of reading ``src``: wait up to ``wait`` s for a batch and
    queue it (``admit``: see ``_put``). ``read_owned``: ``src``'s
    ``next_owned_blocking`` (the walk and copy in one step), for a source
    thread whose source has it. False once ``src`` is finished (``at_end``:
    a file read to its end)."""
    if read_owned is not None:
        owned = read_owned(wait)
        got = owned is not None
        if owned is not None:
            _queue_owned(core, owned, index)
    else:
        b = src.next_batch_blocking(wait)
        got = b is not None
        if b is not None:
            _put(core, b, index, admit)
    return got or not src.at_end


def _failed(core: BatchQueue[OwnedBatch], name: str, e: BaseException) -> None:
    # A source closed by stop() from outside (to wake its reader) is no failure.
    if not (isinstance(e, ClosedError) and core.closing):
        core.fail(name, e)


def _retire(core: BatchQueue[OwnedBatch], src: Source, index: int, name: str) -> None:
    """A source's end: what it still holds into the queue (``_sweep``), then close it."""
    try:
        _sweep(core, src, index)
    except BaseException:  # noqa: BLE001 - a failed or closed source: nothing more to save
        pass
    finally:
        try:
            src.close()  # reads the final counters
        except BaseException as e:  # noqa: BLE001
            core.fail(name, e)


def _source_loop(core: BatchQueue[OwnedBatch], src: Source, index: int, name: str,
                 poll: float, done: Callable[[], None]) -> None:
    read_owned = src.next_owned_blocking if has_next_owned(src) else None  # asked once, not per block
    try:
        while not core.closing and _read_one(core, src, index, poll, read_owned=read_owned):
            pass
    except BaseException as e:  # noqa: BLE001 - handed to the consumers
        _failed(core, name, e)
    try:
        _retire(core, src, index, name)
    finally:
        done()


class _ReceivingService(_ThreadService):
    """The consumer side of a service whose threads fill the queue: stop,
    drain and the sync face (``get``, ``get_batch``, iteration), written once
    for ``CaptureService`` and the fanout workers' ``WorkerPool``. The queue
    holds sized items (``OwnedBatch``, or a pool's lists of results); the
    per-item hand-out is the one ``PacketCursor``."""

    _kind = "capture"  # the async faces are ``Receiver``s
    _core: BatchQueue[OwnedBatch]

    def _receiving(self, capacity: int, overflow: Overflow | str) -> None:
        self._core = BatchQueue(capacity, overflow)
        self._cursor = PacketCursor()
        # Re-entrant: stop() from a signal handler may interrupt a holder.
        self._cursor_lock = threading.RLock()

    def _begin_stop(self, drain: bool, deadline: float) -> float:
        self._core.begin_close()  # threads finish (capture: quiesce, sweep, close their sources)
        return time.monotonic() + _JOIN_BUDGET

    def _end_stop(self, drain: bool) -> None:
        super()._end_stop(drain)
        self._give_back(self._cursor)
        self._core.finish_close()

    def _drained_now(self) -> bool:
        return self._core.counters().queued == 0

    def _give_back(self, cur: PacketCursor) -> None:
        with self._cursor_lock:
            rest = cur.take_rest()
        if rest is not None:
            self._core.give_back(rest)

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until consumers have taken everything queued now (True), or
        ``timeout`` s passed (False). Does not stop the service."""
        check_timeout(timeout)
        self._check_started()
        return self._core.wait_empty(timeout)

    def get_all(self) -> list[OwnedBatch]:
        """Take every batch still queued, without waiting (they count as delivered)."""
        self._give_back(self._cursor)
        return self._core.get_all()

    # -- the sync face ---------------------------------------------------------------------

    def get_batch(self, timeout: float | None = None) -> OwnedBatch:
        """The next owned batch; waits up to ``timeout`` s (``None``: until stop).

        Raises ``queue.Empty`` on timeout, ``ClosedError`` once stopped and
        empty, ``ServiceError`` (from the cause) if a source thread failed.
        After per-packet gets, first the rest of the current batch.
        """
        self._check_started()
        with self._cursor_lock:
            rest = self._cursor.take_rest()
        return rest if rest is not None else self._next_item(timeout)

    def get_nowait(self) -> OwnedPacket:
        """The next packet if one is queued, else ``queue.Empty``."""
        return self.get(0)

    def get(self, timeout: float | None = None) -> OwnedPacket:
        """The next packet; waits up to ``timeout`` s (``queue.Empty`` on timeout)."""
        if timeout is not None:
            check_timeout(timeout)
        lock = self._cursor_lock
        if lock.acquire(False):  # fast path: the next packet of the current batch
            p = self._cursor.next()
            lock.release()
            if p is not None:
                return p
        return self._get_slow(timeout)

    def _get_slow(self, timeout: float | None) -> OwnedPacket:
        self._check_started()
        deadline = deadline_after(timeout)
        cur, lock = self._cursor, self._cursor_lock
        while True:
            with lock:
                p = cur.next()
                if p is not None:
                    return p
            # No lock is held while waiting: stop() (from another thread, or
            # a signal handler interrupting this wait) must never wait for us.
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            b = self._next_item(left)
            with lock:
                if cur.it is None:
                    cur.set(b)
                else:  # another thread took a batch meanwhile: this one goes back, in order
                    self._core.give_back(b)

    def batches(self, timeout: float | None = None) -> Iterator[OwnedBatch]:
        """Owned batches until stop (or ``timeout`` s without one)."""
        check_timeout(timeout)
        self._check_started()
        return self._each(timeout, None)

    def packets(self, timeout: float | None = None) -> Iterator[OwnedPacket]:
        """Owned packets until stop (or ``timeout`` s without a batch)."""
        check_timeout(timeout)
        self._check_started()
        # chain.from_iterable steps through each batch's packets in C; the
        # generator runs once per batch and its cursor still sees how far
        # the consumer got.
        return chain.from_iterable(self._each(timeout, PacketCursor()))

    def __iter__(self) -> Iterator[OwnedPacket]:
        return self.packets()

    def _next_item(self, timeout: float | None) -> OwnedBatch:
        """The next item of the queue, waiting up to ``timeout`` s: where every
        sync get takes one (``CaptureService`` in pull mode reads its source here)."""
        return self._core.get(timeout)

    def _each(self, timeout: float | None, cur: PacketCursor | None) -> Iterator[Any]:
        core = self._core
        take = self._next_item
        try:
            while True:
                try:
                    b = take(timeout)
                except (ClosedError, queue.Empty):
                    return
                yield b if cur is None else cur.set(b)
        except KeyboardInterrupt:
            # Ctrl-C while the consumer waited here: stop cleanly, then let it propagate.
            self._stop_now()
            raise
        finally:
            if cur is not None:  # this generator's own cursor: no lock to take
                rest = cur.take_rest()
                if rest is not None:
                    core.give_back(rest)

    if TYPE_CHECKING:
        def asyncio(self) -> AsyncioReceiver:
            """The asyncio face, an ``AsyncioReceiver``; starts the service if new."""
        def trio(self) -> Receiver:
            """The trio face, a ``TrioReceiveChannel``; starts the service if new."""
        def channel(self) -> Receiver:
            """The face of the running loop (asyncio or trio, anyio on either); starts the service if new."""


class CaptureService(_ReceivingService):
    """OS threads reading sources into one bounded queue; sync, asyncio and trio faces.

    ``sources``: one ``Source`` or a sequence of them (``Capture`` objects:
    several interfaces, or the members of a fanout group); the service owns
    and closes them. ``capacity``: the queue bound, in packets; a batch is
    admitted whole when it fits in the room left, and a batch larger than
    the whole capacity only into an empty queue. ``overflow``: ``"block"``
    (the thread waits for room, the ring fills and the kernel drops, counted
    in the sources' stats) or ``"drop"`` (the newest batch is dropped at the
    queue, counted in ``queue_drops``). ``name`` prefixes the thread names;
    ``drain_timeout`` is how long ``stop(drain=True)`` waits by default.
    When every source is finished (``at_end``, see ``contract.Source``: a
    file read to its end), the stream ends as after ``stop()``: consumers
    get what is queued, then the end.

    Start with ``start()`` or ``with``; ``stop()`` returns within a second.
    The sync face is this object: ``for pkt in svc``, ``get``, ``get_batch``,
    ``get_nowait``, ``get_all``. ``asyncio()``, ``trio()`` and ``channel()``
    (whichever loop is running: anyio code uses it) give the async faces.
    """

    def __init__(self, sources: Source | Sequence[Source], *, capacity: int = 65536,
                 overflow: Overflow | str = "block", name: str | None = None,
                 poll_interval: float = POLL_INTERVAL, drain_timeout: float = 2.0) -> None:
        self._started = self._stopped = False
        srcs = self._members_of(sources, Source, "capture source")
        for s in srcs:
            if not isinstance(s, Source):
                raise ConfigError(f"not a capture source (see netring_chan.contract.Source): {s!r}")
        self._distinct(srcs, "source")
        super().__init__("nc-capture" if name is None else name, poll_interval, drain_timeout)
        self._receiving(capacity, overflow)
        self.sources: tuple[Source, ...] = tuple(srcs)
        self._members = self.sources

    def _thread_main(self, i: int, name: str, done: Callable[[], None]) -> Callable[[], None]:
        core, src, poll = self._core, self.sources[i], self._poll
        return lambda: _source_loop(core, src, i, name, poll, done)

    def _end_stop(self, drain: bool) -> None:
        if not self._started:
            # Stopped before it started: no thread swept the sources, so what
            # they hold (a ring filled meanwhile) goes into the queue here,
            # as at any stop, or the accounting would miss it.
            for i, src in enumerate(self.sources):
                _retire(self._core, src, i, self._thread_name(i))
        super()._end_stop(drain)

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> ServiceStats:
        """Per-source counters and the queue's counters.

        Exact for a stopped service (the sources' counters are read when each
        closes, after its thread stopped); while running, a snapshot.
        """
        self._check_not_forked()
        # The queue first: a packet is counted by its source before it can be
        # queued, so a snapshot taken while running never shows more queued
        # and delivered than the sources accepted.
        c = self._core.counters()
        srcs = []
        for i, s in enumerate(self.sources):
            st = s.stats()
            srcs.append(SourceStats(self._thread_name(i), st.packets, st.drops, st.freezes, st.lost))
        return ServiceStats(tuple(srcs), c.dropped, c.delivered, c.queued, c.peak, c.capacity)


class _PullCaptureService(CaptureService):
    """A ``CaptureService`` with no thread: its sync face reads the source in
    the consumer's own thread.

    When the queue is empty, a take (``get``, ``get_batch``, iteration) reads
    the source itself, one ``_read_one`` step as a source thread makes, into
    the same queue: the queue's counters stay the accounting, and ``stats``,
    ``get_all``, ``wait_drained`` and ``stop`` are the threaded service's.
    ``stop`` does at once what a source thread does at its end: it waits for
    a read in progress (at most a poll interval), quiesces and sweeps the
    source into the queue and closes it (``_retire``); the consumer gets what
    is queued, then the end. A finished or failed source ends the stream in
    the reading thread the same way. A read is made only into an empty queue,
    so admission never waits (the reader is the consumer that would make
    room) and nothing is dropped at the queue (a rest that another consumer
    hands back during the read may take the queue past its bound, as an
    oversized batch does): a consumer that falls behind
    leaves the packets in the source, whose own drops count them. One source
    only; no async face (an event loop must not block in a read).

    For the fanout workers' sync targets: a worker reading its ring in one
    thread uses one core, so N workers scale on N cores; a copy-out thread
    would add ~0.1 core per worker, which does not exist with one core each.
    """

    _threaded = False

    def __init__(self, sources: Source | Sequence[Source], **kw: Any) -> None:
        super().__init__(sources, **kw)
        if len(self.sources) != 1:
            raise ConfigError(f"a capture service without threads reads one source, got {len(self.sources)}")
        # Held while reading the source: one reader at a time, and stop's
        # sweep waits for the read in progress. Re-entrant: stop() from a
        # signal handler may interrupt a reader (it hands the stop to a
        # helper thread then, see ``stop``).
        self._reader = threading.RLock()
        self._retired = False

    # What to do instead, in the error of an async face (its owner may say better).
    _async_hint = "use a CaptureService"

    def _face(self, loop: str | None) -> Any:
        raise ConfigError(f"{self!r} reads its source in the consumer's thread and has no async face "
                          f"(an event loop must not block in a read): {self._async_hint}")

    def _next_item(self, timeout: float | None) -> OwnedBatch:
        core = self._core
        deadline = deadline_after(timeout)
        tried = False
        while True:
            try:
                return core.get_nowait()  # ClosedError / ServiceError at the end
            except queue.Empty:
                pass
            wait = self._poll
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 and tried:  # a zero timeout still reads once, without waiting
                    raise queue.Empty from None
                wait = max(0.0, min(wait, left))
            tried = True
            r = self._read(wait)
            if r is None:
                continue  # waited ``wait`` s for another thread's read: look at the queue again
            if not r:
                # Stopping (stop() sweeps the source), finished, or another
                # thread's batch is queued: wait on the queue instead.
                try:
                    return core.get(wait)
                except queue.Empty:
                    pass

    def _read(self, wait: float) -> bool | None:
        """Read the source in this thread into the empty queue, waiting up to
        ``wait`` s; False when this thread should wait on the queue instead,
        None when another thread's read took the ``wait`` (so a timeout, and
        ``get_nowait``, hold while another consumer reads)."""
        core = self._core
        start = time.monotonic()
        got = self._reader.acquire(timeout=wait) if wait > 0 else self._reader.acquire(False)
        if not got:
            return None
        try:
            if core.closing or self._retired or core.counters().queued:
                return False
            wait = max(0.0, wait - (time.monotonic() - start))
            try:
                # Admitted whatever the room: this thread is the consumer that
                # would make it (another may have handed a rest back meanwhile).
                if _read_one(core, self.sources[0], 0, wait, admit=True):
                    return True
            except Exception as e:  # noqa: BLE001 - handed to the consumers, as a source thread's
                _failed(core, self._thread_name(0), e)
            # Finished or failed: the end a source thread makes.
            self._retire_locked()
            core.finish_close()
            return True
        finally:
            self._reader.release()

    def _retire_locked(self) -> None:
        if not self._retired:
            self._retired = True
            _retire(self._core, self.sources[0], 0, self._thread_name(0))

    def _end_stop(self, drain: bool) -> None:
        if self._started:
            got = self._reader.acquire(timeout=_JOIN_BUDGET)
            if not got:  # a read that outlived its wait: closing the source wakes it
                self._wake_members()
                got = self._reader.acquire(timeout=0.15)
            try:
                self._retire_locked()
            finally:
                if got:
                    self._reader.release()
        super()._end_stop(drain)


# -- injection ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class InjectServiceStats:
    """Counters of an injection service, all in frames.

    Every submitted frame is, at any moment, exactly one of: dropped at the
    queue (``queue_drops``, ``overflow="drop"``), still queued (``queued``),
    in a sender thread's hands or in a sink not yet finished (``in_flight``),
    finished by the sink (``sent``), refused (``rejected``: by the kernel, or
    no longer fitting the interface when its turn came), or given up because
    of a stop or failure (``discarded``: still queued then, or left in a sink
    when it closed). ``ring_full``: times a sender thread found its sink full.
    ``peak_queued``: the deepest the queue got while running. For a stopped
    service ``in_flight`` is 0 and ``balanced`` holds.
    """

    submitted: int
    queue_drops: int
    queued: int
    in_flight: int
    sent: int
    rejected: int
    discarded: int
    ring_full: int
    peak_queued: int
    capacity: int

    @property
    def balanced(self) -> bool:
        """Whether every submitted frame is accounted for (exact once stopped)."""
        return self.submitted == (self.sent + self.rejected + self.queue_drops + self.discarded
                                  + self.queued + self.in_flight)


class _SendControl:
    """Shared by the injection service and its threads (never a reference to the service)."""

    def __init__(self, n: int) -> None:
        self.discard = False  # stop without draining: threads give up what they hold
        self.lock = threading.Lock()
        self.discarded = 0
        self.refused = 0
        self.in_hand = [0] * n  # per thread: taken from the queue, not yet in its sink
        self.deadline = 0.0  # with drain: when the threads stop waiting for their sinks

    def add(self, what: str, n: int) -> None:
        if n:
            with self.lock:
                setattr(self, what, getattr(self, what) + n)


def _take(core: BatchQueue[list[bytes]], first: list[bytes], limit: int) -> list[bytes]:
    """``first`` plus what else is queued now, up to about ``limit`` frames."""
    frames = list(first)
    while len(frames) < limit:
        try:
            frames += core.get_nowait()
        except (queue.Empty, ClosedError, ServiceError):
            break
    return frames


def _push(sink: Sink, frames: list[bytes], i_me: int, ctl: _SendControl) -> None:
    """Put ``frames`` in the sink in order (waiting for room), then flush."""
    i, n = 0, len(frames)
    while i < n and not ctl.discard:
        try:
            k = sink.publish(frames[i:] if i else frames)
        except ClosedError:  # a ValueError too: closed by stop() to wake us
            raise
        except ValueError:
            # It fitted when submitted; the interface's MTU shrank since.
            ctl.add("refused", 1)
            k = 1
        if not k:
            sink.wait_room(None)  # close() from stop() wakes it
            continue
        ctl.in_hand[i_me] -= k
        i += k
    sink.flush()


def _sender_loop(core: BatchQueue[list[bytes]], sink: Sink, name: str, i_me: int,
                 ctl: _SendControl, poll: float, done: Callable[[], None]) -> None:
    failed = False
    try:
        while not ctl.discard:
            try:
                item = core.get(poll)
            except queue.Empty:
                continue
            except (ClosedError, ServiceError):
                break  # stopped and nothing left, or another sender failed
            ctl.in_hand[i_me] = len(item)
            # Up to a ring's worth per flush: a flush per 64 frames cost
            # a syscall and a lock round per 64 frames for nothing.
            frames = _take(core, item, max(_BATCH, sink.capacity))
            ctl.in_hand[i_me] = len(frames)
            _push(sink, frames, i_me, ctl)
        if not ctl.discard:  # stopped with drain: wait for the sink too
            sink.wait_drained(max(0.0, ctl.deadline - time.monotonic()))
    except BaseException as e:  # noqa: BLE001 - handed to the producers
        # A sink closed by stop() from outside (to wake us) is no failure.
        if not (isinstance(e, ClosedError) and core.closing):
            failed = True
            core.fail(name, e, finish=True)
    finally:
        ctl.add("discarded", ctl.in_hand[i_me])
        ctl.in_hand[i_me] = 0
        if failed:
            ctl.discard = True  # the other senders give up too
            ctl.add("discarded", sum(len(item) for item in core.get_all()))
        try:
            sink.close(timeout=0)  # what is still in it now is counted as discarded
        except BaseException as e:  # noqa: BLE001
            core.fail(name, e, finish=True)
        done()


class InjectService(_ThreadService):
    """OS threads sending frames from one bounded queue through sinks.

    ``sinks``: one ``Sink`` (an ``Injector``) or a sequence of them; the
    service owns and closes them (do not send through them directly, or the
    counts no longer add up). ``capacity``: the queue bound, in frames.
    ``overflow``: ``"block"`` (a producer waits for room) or ``"drop"`` (the
    newest submission is dropped, counted in ``queue_drops``).
    ``drain_timeout``: how long ``stop(drain=True)`` waits by default.
    ``name`` prefixes the thread names. A frame must fit every sink.

    Frames are checked when they are submitted, so a bad frame raises in the
    producer and never reaches the queue. They are sent in submission order
    on each sink; with several sinks the threads share the queue (each frame
    goes out once), so order holds per sink only.

    Start with ``start()`` or ``with`` (leaving the block normally drains,
    leaving it on an exception discards). The sync face is this object:
    ``send``, ``send_nowait``, ``send_many``, ``wait_drained``;
    ``asyncio()``, ``trio()`` and ``channel()`` give the async faces.
    """

    _kind = "inject"

    def __init__(self, sinks: Sink | Sequence[Sink], *, capacity: int = 4096,
                 overflow: Overflow | str = "block", name: str | None = None,
                 drain_timeout: float = 2.0, poll_interval: float = POLL_INTERVAL) -> None:
        self._started = self._stopped = False
        ss = self._members_of(sinks, Sink, "sink")
        for s in ss:
            if not isinstance(s, Sink):
                raise ConfigError(f"not an Injector or other sink (see netring_chan.contract.Sink): {s!r}")
            if s.closed:
                raise ConfigError(f"{s!r} is closed")
        self._distinct(ss, "sink")
        super().__init__("nc-inject" if name is None else name, poll_interval, drain_timeout)
        self._core: BatchQueue[list[bytes]] = BatchQueue(capacity, overflow)
        self.sinks: tuple[Sink, ...] = tuple(ss)
        self._members = self.sinks
        self._ctl = _SendControl(len(ss))
        self._count_lock = threading.Lock()
        self._submitted = 0

    @property
    def injectors(self) -> tuple[Sink, ...]:
        """The sinks (``Injector`` objects), by their older name."""
        return self.sinks

    def _thread_main(self, i: int, name: str, done: Callable[[], None]) -> Callable[[], None]:
        core, sink, ctl, poll = self._core, self.sinks[i], self._ctl, self._poll
        return lambda: _sender_loop(core, sink, name, i, ctl, poll, done)

    def _begin_stop(self, drain: bool, deadline: float) -> float:
        if drain:
            self._ctl.deadline = deadline
        else:
            self._ctl.discard = True
        self._core.finish_close()  # producers now get ClosedError; blocked ones wake
        if not drain:
            self._wake_members()
            return time.monotonic() + _JOIN_BUDGET
        return deadline + 0.2

    def _end_stop(self, drain: bool) -> None:
        if not self._threads_done():
            self._ctl.discard = True  # still waiting for room past the deadline: give up
        super()._end_stop(drain)
        self._ctl.add("discarded", sum(len(item) for item in self._core.get_all()))

    def _wake_members(self) -> None:
        # Without waiting for queued frames: that is the sender threads' job.
        for sink in self.sinks:
            try:
                sink.close(timeout=0)
            except Exception:  # noqa: BLE001
                pass

    def _at_exit(self) -> None:
        # Send what was queued (bounded), as a user who forgot stop() most likely expects.
        self._stop_now(drain=True, timeout=min(self.drain_timeout, 0.5))

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._stop_from(sys._getframe(1), drain=exc_type is None)

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> InjectServiceStats:
        """The counters (see ``InjectServiceStats``); exact once stopped, a snapshot before."""
        self._check_not_forked()
        c = self._core.counters()
        sent = rejected = ring_full = in_sink = left_in_sink = 0
        for sink in self.sinks:
            s = sink.stats()
            sent += s.sent
            rejected += s.rejected
            ring_full += s.ring_full
            if sink.closed:
                left_in_sink += s.pending  # never confirmed: given up
            else:
                in_sink += s.pending
        ctl = self._ctl
        with ctl.lock:
            discarded, refused, in_hand = ctl.discarded, ctl.refused, sum(ctl.in_hand)
        with self._count_lock:
            submitted = self._submitted
        return InjectServiceStats(
            submitted=submitted, queue_drops=c.dropped, queued=c.queued, in_flight=in_hand + in_sink,
            sent=sent, rejected=rejected + refused, discarded=discarded + left_in_sink,
            ring_full=ring_full, peak_queued=c.peak, capacity=c.capacity)

    # -- waiting until what was submitted has gone ------------------------------------------

    def _settled(self, target: int) -> bool:
        """Whether the first ``target`` submissions are settled; raises if they never will be."""
        self._raise_if_failed()
        st = self.stats()
        # The queue is FIFO and the counters only grow: once they cover the
        # first ``target`` submissions, those are done with.
        if st.sent + st.rejected + st.queue_drops >= target:
            return True
        if self._stopped and self._threads_done():
            raise ClosedError(f"the service stopped before every frame was sent ({st.discarded} discarded)")
        return False

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Wait until every frame submitted before this call was sent (or
        rejected, or dropped at the queue). True then, False on timeout.

        Does not stop the service. Raises ``ServiceError`` if a sender thread
        failed, ``ClosedError`` if the service stopped with frames discarded.
        """
        return _wait_sync(self._drain_steps(timeout))

    async def _wait_drained_async(self, timeout: float | None, sleep: Callable[[float], Any]) -> bool:
        r = await _wait_async(self._drain_steps(timeout), sleep)
        await sleep(0)
        return r

    def _drain_steps(self, timeout: float | None) -> Steps:
        check_timeout(timeout)
        self._check_started()
        target = self.stats().submitted
        return _until(lambda: self._settled(target), deadline_after(timeout))

    # -- submission (shared by every face) -------------------------------------------------

    def _check(self, frame: object) -> bytes:
        """One frame as ``bytes`` (a copy unless it already is), or a clear exception."""
        b = frame if type(frame) is bytes else self._bytes(frame, None)
        for sink in self.sinks:
            try:
                sink.check_frame(b)
            except ValueError as e:
                raise ValueError(f"frame: {e}") from None
        return b

    @staticmethod
    def _bytes(frame: object, index: int | None) -> bytes:
        what = "frame" if index is None else f"frame {index}"
        if isinstance(frame, str):
            raise TypeError(f"{what} must be a bytes-like object, got str {frame[:20]!r}")
        try:
            return memoryview(frame).tobytes()  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{what} must be a bytes-like object, got {type(frame).__name__}") from None

    def _items(self, frames: Iterable[Frame]) -> list[list[bytes]]:
        """Every frame checked (nothing is queued if one is bad), in queue-sized chunks."""
        if isinstance(frames, (bytes, bytearray, memoryview, str)):
            raise TypeError("send_many takes an iterable of frames, not a single frame")
        given = list(frames)
        checked: list[bytes] = given if _plain_run(given, 1, sys.maxsize) == len(given) \
            else [self._bytes(f, i) for i, f in enumerate(given)]  # type: ignore[assignment]
        for sink in self.sinks:
            sink.check_frames(checked)
        # A quarter of the queue per item (at least _BATCH): every put and
        # get is a lock round and may wake the other thread, which then
        # takes the GIL; 64-frame items cost ~20 thread switches per 1000
        # frames on one CPU, 1024-frame ones ~6.
        step = min(max(_BATCH, self.capacity // 4), self.capacity)
        return [checked[i:i + step] for i in range(0, len(checked), step)]

    def _submitted_add(self, n: int) -> None:
        with self._count_lock:
            self._submitted += n

    def _admit_nowait(self, item: list[bytes]) -> bool:
        r = self._core.put_nowait(item)  # queue.Full propagates
        self._submitted_add(len(item))
        return r

    # -- the sync face ---------------------------------------------------------------------

    def send(self, frame: Frame, timeout: float | None = None) -> bool:
        """Queue one frame; True, or False if it was dropped (``overflow="drop"``).

        With ``overflow="block"`` waits up to ``timeout`` s (``None``: as
        long as it takes) for room, then raises ``queue.Full``. Raises
        ``TypeError``/``ValueError`` for a bad frame (nothing queued),
        ``ClosedError`` once stopped, ``ServiceError`` if a sender failed.
        """
        item = [self._check(frame)]
        self._check_started()
        r = self._core.put(item, timeout)
        self._submitted_add(1)
        return r

    def send_nowait(self, frame: Frame) -> bool:
        """Queue one frame if there is room now (else ``queue.Full``); False if dropped."""
        item = [self._check(frame)]
        self._check_started()
        return self._admit_nowait(item)

    def send_many(self, frames: Iterable[Frame], timeout: float | None = None) -> int:
        """Queue every frame in order; return how many were queued (the rest dropped).

        All frames are checked first: if one is bad nothing is queued.
        Frames go into the queue in chunks of up to a quarter of its
        capacity, at least 64 (each admitted or, under ``"drop"``, dropped
        whole); ``timeout`` applies to each chunk.
        If it raises part way (``queue.Full``, ``ClosedError``,
        ``ServiceError``), the chunks before stay queued.
        """
        items = self._items(frames)
        self._check_started()
        n = 0
        for item in items:
            if self._core.put(item, timeout):
                n += len(item)
            self._submitted_add(len(item))
        return n

    if TYPE_CHECKING:
        def asyncio(self) -> AsyncioSender:
            """The asyncio face, an ``AsyncioSender``; starts the service if new."""
        def trio(self) -> Sender:
            """The trio face, a ``TrioSendChannel``; starts the service if new."""
        def channel(self) -> Sender:
            """The face of the running loop (asyncio or trio, anyio on either); starts the service if new."""
