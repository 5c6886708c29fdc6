"""The injection service: producers feed a bounded queue, OS threads send.

The mirror of the capture service (``threads.CaptureService``) for sending.
``InjectService(injectors, capacity=..., overflow="block"|"drop")`` owns one
or more ``Injector`` (TX ring) objects and runs one named daemon thread per
injector. Each thread loops::

    frames = queue.get() + whatever else is queued (up to a ring's worth)
    for f in frames: injector.send(f)     # waits for free slots when the ring is full
    injector.flush()                      # one kick of the kernel per batch

The queue and its policy (bound in frames, overflow, stop, error hand-off,
counters) are ``_queue.BatchQueue``, the same core the capture service uses,
here with producers in user code and the consumer in the thread. The faces
are thin:

* sync, on the service itself: ``send(frame, timeout)``, ``send_nowait``,
  ``send_many``, ``wait_drained(timeout)``, from any thread;
* asyncio: ``async with svc.asyncio() as tx: await tx.send(frame)`` (waits
  for room without blocking the loop);
* trio: ``async with svc.trio() as tx: await tx.send(frame)``, a
  send-channel-like object woken from the sender threads through the trio
  token.

Frames are checked when they are submitted (bytes-like, not empty, fits the
slot and the interface's MTU), so a bad frame raises in the producer and
never reaches the queue. Frames are sent in submission order on each
injector; with several injectors the threads share the queue (each frame
goes out once, on whichever injector's thread took it), so order holds per
injector only.

Stop. ``stop(drain=True)`` sends what is queued, bounded by a timeout, and
raises the thread's error if one failed; ``stop()`` discards what is queued
(counted). Both end admission at once (producers then get ``ClosedError``)
and return promptly: a thread waiting for ring slots is woken by closing its
injector. A thread that fails (e.g. the interface was deleted:
``RingError``) ends admission with the error, so every face raises
``ServiceError`` with that cause at the next submit.

Accounting, in frames. Every submitted frame is, at any moment, exactly one
of: dropped at the queue (``queue_drops``), still queued (``queued``), in a
sender thread's hands or in a TX ring not yet finished by the kernel
(``in_flight``), finished by the kernel (``sent``, from the injectors'
counters), refused (``rejected``: by the kernel, or no longer fitting the
interface when its turn came), or given up because of a stop or failure
(``discarded``: still queued then, or left in a ring when it closed — the
kernel had not confirmed those). For a stopped service ``in_flight`` is 0
and ``submitted == sent + rejected + queue_drops + discarded + queued``.
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import queue
import threading
import time
import warnings
import weakref
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterable, Sequence

from ._queue import BatchQueue, Countdown, Overflow, ServiceBase, ServiceError, wait_asyncio, wait_trio
from .errors import ClosedError, ConfigError
from .rings.inject import Injector
from .threads import _set_os_thread_name

__all__ = ["InjectService", "InjectServiceStats", "AsyncioSender", "TrioSendChannel"]

Frame = bytes | bytearray | memoryview

# How long an idle sender thread waits on the queue before it looks at the stop flags.
POLL_INTERVAL = 0.1
# Frames a sender thread takes from the queue before it flushes the ring.
_BATCH = 64
# stop() without drain: how long it waits for the threads.
_JOIN_BUDGET = 0.8
# wait_drained polls the counters (the kernel signals no completion we could wait on).
_SETTLE_POLL = 0.002


@dataclasses.dataclass(frozen=True)
class InjectServiceStats:
    """Counters of an injection service, all in frames (see the module notes).

    ``submitted``: frames the producers handed over (after validation),
    whether queued or dropped. ``queue_drops``: dropped at the queue by
    ``overflow="drop"``. ``queued``: waiting in the queue. ``in_flight``:
    taken by a sender thread, not yet finished by the kernel. ``sent``: the
    kernel finished with them (``InjectorStats.sent``). ``rejected``: refused
    by the kernel, or by the injector because the interface's MTU had
    shrunk since submission. ``discarded``: given up at stop or after a
    failure. ``ring_full``: times a sender thread found its ring full and
    waited. ``peak_queued``: the deepest the queue got while running.
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


class _Control:
    """Shared by the service and its threads (never a reference to the service)."""

    def __init__(self, drain_timeout: float) -> None:
        self.discard = False  # stop without draining: threads give up what they hold
        self.deadline = 0.0  # with drain: when the threads stop waiting for their rings
        self.lock = threading.Lock()
        self.discarded = 0
        self.refused = 0
        self.drain_timeout = drain_timeout

    def add_discarded(self, n: int) -> None:
        if n:
            with self.lock:
                self.discarded += n


class _Sender:
    """One sender thread's frames in hand (taken from the queue, not yet in the ring)."""

    __slots__ = ("in_hand",)

    def __init__(self) -> None:
        self.in_hand = 0


def _take(core: BatchQueue[list[bytes]], first: list[bytes]) -> list[bytes]:
    """``first`` plus what else is queued now, up to about ``_BATCH`` frames."""
    frames = list(first)
    while len(frames) < _BATCH:
        try:
            frames += core.get_nowait()
        except (queue.Empty, ClosedError, ServiceError):
            break
    return frames


def _push(inj: Injector, frames: list[bytes], me: _Sender, ctl: _Control) -> None:
    """Put ``frames`` in the ring in order (waiting for slots), then kick the kernel.

    Runs of free slots are filled by one C call (``try_send_many``); a frame
    that waits for room, or needs the full checks, goes through ``send``.
    """
    i, n = 0, len(frames)
    while i < n:
        if ctl.discard:
            break  # what is left in hand is counted as discarded by the caller
        k = inj.try_send_many(frames[i:] if i else frames)
        if not k:
            try:
                inj.send(frames[i])
            except ClosedError:  # a ValueError too: closed by stop() to wake us
                raise
            except ValueError:
                # Fitted when submitted; the interface's MTU shrank since.
                with ctl.lock:
                    ctl.refused += 1
            k = 1
        me.in_hand -= k
        i += k
    inj.flush()


def _discard_queue(core: BatchQueue[list[bytes]], ctl: _Control) -> None:
    ctl.add_discarded(sum(len(item) for item in core.drain()))


def _sender_loop(core: BatchQueue[list[bytes]], inj: Injector, name: str, me: _Sender,
                 ctl: _Control, poll: float, done: Callable[[], None]) -> None:
    _set_os_thread_name(name)
    failed = False
    try:
        while not ctl.discard:
            try:
                item = core.get(poll)
            except queue.Empty:
                continue
            except (ClosedError, ServiceError):
                break  # stopped and nothing left, or another sender failed
            me.in_hand = len(item)
            frames = _take(core, item)
            me.in_hand = len(frames)
            _push(inj, frames, me, ctl)
        if not ctl.discard:  # stopped with drain: wait for the ring too
            inj.wait_drained(max(0.0, ctl.deadline - time.monotonic()))
    except BaseException as e:  # noqa: BLE001 - handed to the producers
        # An injector closed by stop() from outside (to wake us) is no failure.
        if not (isinstance(e, ClosedError) and core.closing):
            failed = True
            core.fail(name, e, finish=True)
    finally:
        ctl.add_discarded(me.in_hand)
        me.in_hand = 0
        if failed:
            ctl.discard = True  # the other senders give up too
            _discard_queue(core, ctl)
        try:
            inj.close(timeout=0)  # what is still in the ring now is counted as discarded
        except BaseException as e:  # noqa: BLE001
            core.fail(name, e, finish=True)
        done()


_live: weakref.WeakSet[InjectService] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    # At interpreter exit, send what was queued (bounded), as a user who
    # forgot stop() most likely expects; never raise or hang here.
    for svc in list(_live):
        try:
            svc.stop(drain=True, timeout=min(svc.drain_timeout, 0.5))
        except Exception:  # noqa: BLE001
            pass


class InjectService(ServiceBase):
    """OS threads sending frames from one bounded queue through TX rings.

    ``injectors``: one ``Injector`` or a sequence of them; the service owns
    and closes them (do not send through them directly, or the counts no
    longer add up). ``capacity``: the queue bound, in frames. ``overflow``:
    ``"block"`` (a producer waits for room) or ``"drop"`` (the newest
    submission is dropped, counted in ``queue_drops``). ``drain_timeout``:
    how long ``stop(drain=True)`` waits by default. ``name`` prefixes the
    thread names. A frame must fit every injector (slot size and MTU).

    Start with ``start()`` or ``with`` (leaving the block normally drains,
    leaving it on an exception discards). The sync face is this object:
    ``send``, ``send_nowait``, ``send_many``, ``wait_drained``; ``asyncio()``
    and ``trio()`` give the others.
    """

    def __init__(self, injectors: Injector | Sequence[Injector], *, capacity: int = 4096,
                 overflow: Overflow | str = "block", name: str | None = None,
                 drain_timeout: float = 2.0, poll_interval: float = POLL_INTERVAL) -> None:
        self._started = False
        self._stopped = False
        injs: list[Any] = [injectors] if isinstance(injectors, Injector) else list(injectors)
        if not injs:
            raise ConfigError("InjectService needs at least one Injector")
        for inj in injs:
            if not isinstance(inj, Injector):
                raise ConfigError(f"not an Injector: {inj!r}")
            if inj.closed:
                raise ConfigError(f"{inj!r} is closed")
        if len({id(i) for i in injs}) != len(injs):
            raise ConfigError("the same Injector was passed twice; one thread sends through each")
        if not isinstance(drain_timeout, (int, float)) or isinstance(drain_timeout, bool) or drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be a number >= 0 (seconds), got {drain_timeout!r}")
        if not isinstance(poll_interval, (int, float)) or not 0 < poll_interval <= 0.5:
            raise ConfigError(f"poll_interval must be in (0, 0.5] seconds, got {poll_interval!r}")
        self._core: BatchQueue[list[bytes]] = BatchQueue(capacity, overflow)
        self.injectors: tuple[Injector, ...] = tuple(injs)
        self.name = name or "nc-inject"
        self.drain_timeout = float(drain_timeout)
        self._poll = float(poll_interval)
        self._ctl = _Control(self.drain_timeout)
        self._senders = [_Sender() for _ in injs]
        self._threads: list[threading.Thread] = []
        self._count_lock = threading.Lock()
        self._submitted = 0

    # -- life cycle --------------------------------------------------------------------

    def _thread_name(self, i: int) -> str:
        return f"{self.name}-{self.injectors[i].interface}"

    def start(self) -> InjectService:
        """Start one thread per injector. Idempotent; a stopped service cannot restart."""
        if self._stopped:
            raise ClosedError("the service was stopped; make a new one")
        if self._started:
            return self
        self._started = True
        done = Countdown(len(self.injectors), self._core)
        for i, inj in enumerate(self.injectors):
            name = self._thread_name(i)
            self._threads.append(threading.Thread(
                target=_sender_loop, name=name, daemon=True,
                args=(self._core, inj, name, self._senders[i], self._ctl, self._poll, done)))
        _live.add(self)
        for t in self._threads:
            t.start()
        return self

    def _threads_done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def _close_injectors(self) -> None:
        # Wakes a thread waiting for ring slots (it gets ClosedError).
        for inj in self.injectors:
            try:
                inj.close(timeout=0)
            except Exception:  # noqa: BLE001
                pass

    def _begin_stop(self, drain: bool, timeout: float | None) -> float | None:
        """End admission and tell the threads; the deadline to wait for them (None: stopped)."""
        if self._stopped:
            return None
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError(f"timeout must be >= 0 or None, got {timeout!r}")
        self._stopped = True
        _live.discard(self)
        now = time.monotonic()
        if drain:
            self._ctl.deadline = now + (self.drain_timeout if timeout is None else float(timeout))
        else:
            self._ctl.discard = True
        self._core.finish_close()  # producers now get ClosedError; blocked ones wake
        if not drain:
            self._close_injectors()
            return now + _JOIN_BUDGET
        return self._ctl.deadline + 0.2

    def _end_stop(self) -> None:
        if not self._threads_done():
            # Still waiting for ring slots past the deadline: give up, wake it.
            self._ctl.discard = True
            self._close_injectors()
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join(0.15)
        if not self._started:
            self._close_injectors()
        _discard_queue(self._core, self._ctl)

    def _raise_if_failed(self) -> None:
        if self._core.error is not None:
            raise self._core._end()  # ServiceError from the thread's exception

    def stop(self, drain: bool = False, timeout: float | None = None) -> None:
        """Stop sending, close the injectors. Idempotent.

        ``drain=False``: what is still queued or in hand is discarded
        (counted) and the call returns within about a second, whatever the
        rings do. ``drain=True``: the threads send what is queued and wait
        for the rings, for at most ``timeout`` s (default ``drain_timeout``),
        then whatever is left is discarded; raises ``ServiceError`` if a
        sender thread failed (only the call that stops: a second ``stop``
        does nothing). Producers get ``ClosedError`` from then on.
        """
        deadline = self._begin_stop(drain, timeout)
        if deadline is not None:
            me = threading.current_thread()
            for t in self._threads:
                if t is not me:
                    t.join(max(0.0, deadline - time.monotonic()))
            self._end_stop()
            if drain:
                self._raise_if_failed()

    async def _stop_async(self, drain: bool, sleep: Callable[[float], Any]) -> None:
        deadline = self._begin_stop(drain, None)
        if deadline is not None:
            while not self._threads_done() and time.monotonic() < deadline:
                await sleep(0.005)
            self._end_stop()
            if drain:
                self._raise_if_failed()

    def __enter__(self) -> InjectService:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(drain=exc_type is None)

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_stopped", True):
            warnings.warn(f"unstopped {self!r}", ResourceWarning, source=self)
            self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        ifs = ",".join(i.interface for i in self.injectors)
        return f"<InjectService {self.name!r} on {ifs} {state}>"

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> InjectServiceStats:
        """The counters (see ``InjectServiceStats``); exact once stopped, a snapshot before."""
        c = self._core.counters()
        sent = rejected = ring_full = in_ring = left_in_ring = 0
        for inj in self.injectors:
            s = inj.stats()
            sent += s.sent
            rejected += s.rejected
            ring_full += s.ring_full
            if inj.closed:
                left_in_ring += s.pending  # never confirmed by the kernel: given up
            else:
                in_ring += s.pending
        in_hand = sum(s.in_hand for s in self._senders)
        with self._ctl.lock:
            discarded, refused = self._ctl.discarded, self._ctl.refused
        with self._count_lock:
            submitted = self._submitted
        return InjectServiceStats(
            submitted=submitted, queue_drops=c.dropped, queued=c.queued, in_flight=in_hand + in_ring,
            sent=sent, rejected=rejected + refused, discarded=discarded + left_in_ring,
            ring_full=ring_full, peak_queued=c.peak, capacity=c.capacity)

    # -- waiting until what was submitted has gone ------------------------------------------

    def _settled(self, target: int) -> bool:
        """Whether ``target`` submissions are settled; raises if they never will be."""
        if self._core.error is not None:
            raise self._core._end()
        st = self.stats()
        # The queue is FIFO and the counters only grow: once they cover the
        # first ``target`` submissions, those are done with (with several
        # injectors, frames taken later may finish first: then it is the count).
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
        self._check_started()
        target = self.stats().submitted
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._settled(target):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(_SETTLE_POLL)
        return True

    async def _wait_drained_async(self, timeout: float | None, sleep: Callable[[float], Any]) -> bool:
        self._check_started()
        target = self.stats().submitted
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._settled(target):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await sleep(_SETTLE_POLL)
        await sleep(0)
        return True

    # -- submission (shared by every face) -------------------------------------------------

    def _check(self, frame: object, what: str = "frame") -> bytes:
        """The frame as ``bytes`` (a copy unless it already is), or a clear exception."""
        if isinstance(frame, bytes):
            b = frame
        elif isinstance(frame, str):
            raise TypeError(f"{what} must be a bytes-like object, got str {frame[:20]!r}")
        else:
            try:
                b = memoryview(frame).tobytes()  # type: ignore[arg-type]
            except TypeError:
                raise TypeError(f"{what} must be a bytes-like object, got {type(frame).__name__}") from None
        for inj in self.injectors:
            try:
                inj._check_len(len(b), b)  # reads the 802.1Q TPID at [12:14] if needed
            except ValueError as e:
                raise ValueError(f"{what}: {e}") from None
        return b

    def _items(self, frames: Iterable[Frame]) -> list[list[bytes]]:
        """Every frame checked (nothing is queued if one is bad), in queue-sized chunks."""
        if isinstance(frames, (bytes, bytearray, memoryview, str)):
            raise TypeError("send_many takes an iterable of frames, not a single frame")
        checked = [self._check(f, f"frame {i}") for i, f in enumerate(frames)]
        step = min(_BATCH, self.capacity)
        return [checked[i:i + step] for i in range(0, len(checked), step)]

    def _submitted_add(self, n: int) -> None:
        with self._count_lock:
            self._submitted += n

    def _admit_nowait(self, item: list[bytes]) -> bool:
        r = self._core.put_nowait(item)  # queue.Full propagates
        self._submitted_add(len(item))
        return r

    def _check_started(self) -> None:
        if not self._started:
            raise ClosedError("the service is not started: use `with svc:` or svc.start()")

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
        Frames go into the queue in chunks of up to 64 (each admitted or,
        under ``"drop"``, dropped whole); ``timeout`` applies to each chunk.
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

    # -- the other faces -------------------------------------------------------------------

    def asyncio(self) -> AsyncioSender:
        """The asyncio face (see ``AsyncioSender``); starts the service if new."""
        if not self._stopped:
            self.start()
        return AsyncioSender(self)

    @asynccontextmanager
    async def trio(self) -> AsyncIterator[TrioSendChannel]:
        """``async with svc.trio() as tx``: start (if new), send, and stop on exit."""
        import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

        if not self._stopped:
            self.start()
        tx = TrioSendChannel(self)
        ok = False
        try:
            yield tx
            ok = True
        finally:
            with trio.CancelScope(shield=True):
                if ok:
                    await tx.aclose()
                else:
                    await tx._close(drain=False)


class AsyncioSender:
    """The asyncio face: ``await send(frame)``, ``await send_many(frames)``, ``send_nowait``.

    A full queue (``overflow="block"``) makes ``send`` wait without blocking
    the loop, woken by the sender threads; cancelling a waiting ``send``
    queues nothing. ``async with`` / ``aclose()`` stop the service: leaving
    normally drains (raising ``ServiceError`` if a sender failed), leaving
    on an exception discards; the loop is not blocked either way.
    """

    def __init__(self, svc: InjectService) -> None:
        self._svc = svc
        self._core = svc._core

    async def send(self, frame: Frame) -> bool:
        """Queue one frame (True), or False if dropped; see ``InjectService.send``."""
        item = [self._svc._check(frame)]
        try:  # fast path: room now (no listener, no future)
            return self._svc._admit_nowait(item)
        except queue.Full:
            return await wait_asyncio(self._core, lambda: self._svc._admit_nowait(item))

    async def send_many(self, frames: Iterable[Frame]) -> int:
        """Queue every frame in order; how many were queued. All are checked first.

        If cancelled, the chunks queued before the cancellation stay queued.
        """
        n = 0
        for item in self._svc._items(frames):
            if await wait_asyncio(self._core, functools.partial(self._svc._admit_nowait, item)):
                n += len(item)
        return n

    def send_nowait(self, frame: Frame) -> bool:
        """Queue one frame if there is room now (else ``queue.Full``)."""
        return self._svc.send_nowait(frame)

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """``InjectService.wait_drained`` without blocking the loop."""
        return await self._svc._wait_drained_async(timeout, asyncio.sleep)

    async def aclose(self) -> None:
        """Stop the service, sending what is queued (bounded by ``drain_timeout``)."""
        await self._svc._stop_async(True, asyncio.sleep)

    async def __aenter__(self) -> AsyncioSender:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        await self._svc._stop_async(exc_type is None, asyncio.sleep)


class TrioSendChannel:
    """The trio face: a send channel of frames, with the interface of ``trio.abc.SendChannel``.

    ``send`` waits for room (a checkpoint, cancellable: a cancelled send
    queues nothing); ``send_nowait`` raises ``trio.WouldBlock`` when it would
    wait. After ``aclose()`` sends raise ``trio.ClosedResourceError``;
    ``ServiceError`` if a sender thread failed, ``ClosedError`` if the
    service was stopped elsewhere. Closing the channel stops the service,
    draining what is queued (bounded by ``drain_timeout``).
    """

    def __init__(self, svc: InjectService) -> None:
        import trio  # type: ignore[import-untyped]  # lazy: importing netring_chan does not import trio

        self._svc = svc
        self._core = svc._core
        self._closed = False
        self._trio: Any = trio

    def _check_open(self) -> None:
        if self._closed:
            raise self._trio.ClosedResourceError("the send channel was closed")

    async def send(self, frame: Frame) -> bool:
        """Queue one frame (True), or False if dropped (``overflow="drop"``)."""
        self._check_open()
        item = [self._svc._check(frame)]
        lowlevel = self._trio.lowlevel
        await lowlevel.checkpoint_if_cancelled()
        try:  # fast path: room now; still a full checkpoint, as trio requires
            r = self._svc._admit_nowait(item)
        except queue.Full:
            return await wait_trio(self._core, lambda: self._svc._admit_nowait(item))
        await lowlevel.cancel_shielded_checkpoint()
        return r

    async def send_many(self, frames: Iterable[Frame]) -> int:
        """Queue every frame in order; how many were queued. All are checked first."""
        self._check_open()
        n = 0
        for item in self._svc._items(frames):
            if await wait_trio(self._core, functools.partial(self._svc._admit_nowait, item)):
                n += len(item)
        return n

    def send_nowait(self, frame: Frame) -> bool:
        """Queue one frame if there is room now, else ``trio.WouldBlock``."""
        self._check_open()
        try:
            return self._svc.send_nowait(frame)
        except queue.Full:
            raise self._trio.WouldBlock from None

    async def wait_drained(self, timeout: float | None = None) -> bool:
        """``InjectService.wait_drained`` as a trio checkpoint (cancellable)."""
        return await self._svc._wait_drained_async(timeout, self._trio.sleep)

    async def _close(self, drain: bool) -> None:
        trio = self._trio
        if not self._closed:
            self._closed = True
            await self._svc._stop_async(drain, trio.sleep)
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the channel and stop the service, draining what is queued."""
        await self._close(drain=True)

    async def __aenter__(self) -> TrioSendChannel:
        return self

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        with self._trio.CancelScope(shield=True):
            await self._close(drain=exc_type is None)
