"""Fanout worker processes: one interface spread over several processes.

One Python process handles packets on about one core (the interpreter
lock). ``WorkerPool`` starts N worker processes; each opens its own
``Capture`` of the interface, all in one ``PACKET_FANOUT`` group, puts a
capture service over it and calls the user's target with a
``WorkerContext``. What the targets ``emit`` comes back to the parent
through one bounded queue with the capture service's policy and faces (the
pool *is* a receiving service: ``for obj in pool``, ``pool.asyncio()``,
``pool.trio()``, ``pool.channel()``); what they return is
``pool.results()``; ``pool.stats()`` adds their counters up.

Per worker the parent runs one collector thread (the one service lifecycle
of ``threads``): it starts the worker process, reads its pipe (ready, emitted
objects, stats, its end) and waits on the process sentinel, so a worker that
dies is reported at once with its exit cause. Facts this depends on:

* **Start method.** ``fork`` is refused: the child would inherit the
  parent's capture threads' locks in whatever state they were, and its open
  rings and sockets (see ``_fork``). ``spawn`` (the default) starts a fresh
  interpreter per worker, as a child of the pool's own thread: nothing of
  the parent comes along, the worker starts in the caller's network
  namespace, and nothing outlives the pool. ``forkserver`` forks each
  worker from a single-threaded server process started once per program;
  that server stays for the program's life in the network namespace of
  whichever thread first needed it, which keeps that namespace (and its
  devices) alive after it was deleted — a lab or container namespace, for
  a program that captures in several. Starting two workers takes about
  0.4 s either way here. Both import the target by name: it must be a
  module-level function, and a script must guard its entry point with
  ``if __name__ == "__main__":``.
* **No orphans.** ``PR_SET_PDEATHSIG`` fires when the *thread* that made the
  process ends, not the process. Under ``spawn`` that thread is the one
  calling ``Process.start()``: the pool starts each worker from the
  collector thread that watches it, which lives as long as the worker; under
  ``forkserver`` it is the server, which exits when the process that uses it
  is gone (end of file on its pipe), and the signal follows. The parent may
  die before the worker sets the signal: the worker checks the parent after
  setting it, and its control pipe's end of file stops it too. The kernel
  closes a dead worker's socket, so its ring and its fanout membership go
  with it.
* **Fanout group id.** The first worker joins with
  ``PACKET_FANOUT_FLAG_UNIQUEID``, so the kernel picks an id no group in the
  network namespace uses; the others join by that id. Two pools, on one
  interface or not, never share a group. (The group ends when its last
  socket closes.)
* **Network namespace.** ``setns`` is per thread, and a fork server lives in
  the namespace of whichever thread first needed it. Workers capture in the
  namespace of the thread that called ``start()``: a worker that finds
  itself elsewhere (forked by such a server) enters it (``setns``,
  CAP_SYS_ADMIN).
* **Ctrl-C** reaches every process of the foreground group. Workers ignore
  SIGINT; the parent's ``KeyboardInterrupt`` stops the pool (in ``for obj in
  pool``, on leaving ``with``, or at exit), which stops every worker.
* **One core per worker.** A sync target (``for pkt in ctx``,
  ``ctx.batches()``, ``ctx.service.get()``) reads its ring in its own
  thread: when the service's queue is empty, the take itself copies the
  next block out (in C, without the GIL) into the queue and hands it on.
  There is no copy-out thread, so a worker uses about one core (its
  control thread wakes every 50 ms) and N workers scale on N cores; a copy-out thread beside the target would add
  about a tenth of a core per worker, which a machine with a core per
  worker does not have. An async target keeps a service thread (its faces
  wait on the queue, and an event loop must not block in a read). Either
  way the worker's control thread reports the counters and stops the
  service; a stop waits for a read in progress (at most the poll interval),
  then sweeps the ring into the queue as a service thread does.

Accounting. Each worker's service keeps the capture identity
(``packets == delivered + drops + queue drops + queued + lost``; here
``delivered`` means handed to the target, and a batch taken from the ring
but not wholly handed out when the target stopped iterating is
``queued``); ``WorkerPoolStats.capture``
adds them up across workers, one ``SourceStats`` per worker, so the same
``balanced`` holds for the pool (exact for the workers that ended cleanly:
a killed worker's last report is up to 0.25 s old). The results queue has
its own: every emitted object that reached the parent was delivered,
dropped at the queue or is still queued (``emitted == delivered +
queue_drops + queued``); a worker killed mid-way takes with it the objects
it had not sent yet.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence, cast

from ._config import resolve
from ._queue import BatchQueue, Overflow
from ._sys import enter_netns, ifindex, set_parent_death_signal
from .errors import ConfigError, NetringError
from .packet import OwnedBatch, OwnedPacket
from .rings.afpacket import Capture, CaptureConfig, Fanout, FanoutFlag, FanoutMode
from .threads import POLL_INTERVAL, CaptureService, ServiceStats, SourceStats, _PullCaptureService, _ReceivingService

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

__all__ = ["WorkerPool", "WorkerContext", "WorkerError", "WorkerStats", "WorkerPoolStats"]

_START_METHODS = ("spawn", "forkserver")
_LOOPS = ("asyncio", "trio")
# Emitted objects a worker gathers before it writes them to its pipe at once;
# its control thread sends a smaller run every poll interval.
_EMIT_RUN = 256
# How often a worker reports its counters while it runs.
_STATS_EVERY = 0.25
# How long stop() gives the workers to end on their own before killing them.
_STOP_BUDGET = 1.5


class WorkerError(NetringError, RuntimeError):
    """A worker process failed, was killed or did not start.

    ``worker`` (its index), ``pid``; ``exitcode`` (negative: the signal
    number, as ``multiprocessing`` reports it; ``None`` if it never ran);
    ``signal``: the signal's name (``"SIGKILL"``) when a signal ended it;
    ``traceback``: the worker's traceback text when its target raised (the
    message ends with it too). A pool's consumers get it as the cause of a
    ``ServiceError``, like a capture thread's failure.
    """

    def __init__(self, worker: int, pid: int, what: str, *, exitcode: int | None = None,
                 traceback: str | None = None) -> None:
        msg = f"worker {worker} (pid {pid}) {what}"
        if traceback:
            msg += f"\n\nTraceback in the worker:\n{traceback.rstrip()}"
        super().__init__(msg)
        self.worker = worker
        self.pid = pid
        self.exitcode = exitcode
        self.signal = _signal_name(-exitcode) if exitcode is not None and exitcode < 0 else None
        self.traceback = traceback
        self._what = what

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by its arguments (the default passes only the message to
        # __init__ and fails), so it crosses a process boundary intact.
        return (_rebuild_worker_error, (type(self), self.worker, self.pid, self._what, self.exitcode,
                                        self.traceback))


def _rebuild_worker_error(cls: type[WorkerError], worker: int, pid: int, what: str, exitcode: int | None,
                          tb: str | None) -> WorkerError:
    return cls(worker, pid, what, exitcode=exitcode, traceback=tb)


def _signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


@dataclasses.dataclass(frozen=True)
class WorkerStats:
    """One worker's figures, so an imbalance between workers is visible.

    ``service``: the worker's capture service counters (``ServiceStats``;
    ``None`` before its first report); exact once ``final``, i.e. reported
    by the worker as it ended, else the last report (every 0.25 s).
    ``emitted``: its ``ctx.emit`` objects that reached the parent.
    ``exitcode``: ``None`` while it runs.
    """

    index: int
    pid: int
    service: ServiceStats | None
    emitted: int
    final: bool
    exitcode: int | None


@dataclasses.dataclass(frozen=True)
class WorkerPoolStats:
    """A pool's counters: per worker, and added up.

    ``capture``: the workers' capture counters added up, one ``SourceStats``
    per worker (``w0``, ``w1``...), with the same identity as one capture
    service (``capture.balanced``). ``emitted``: ``ctx.emit`` objects that
    reached the parent; ``delivered``, ``queue_drops`` (``overflow="drop"``,
    or read from a worker after ``stop()`` stopped waiting for it and closed
    the queue), ``queued``, ``peak_queued``, ``capacity``: the results queue there.
    """

    workers: tuple[WorkerStats, ...]
    capture: ServiceStats
    emitted: int
    delivered: int
    queue_drops: int
    queued: int
    peak_queued: int
    capacity: int

    @property
    def balanced(self) -> bool:
        """Both identities hold (exact once every worker ended cleanly)."""
        return self.capture.balanced and self.emitted == self.delivered + self.queue_drops + self.queued


# -- the worker process ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Everything a worker needs, pickled to it."""

    target: Callable[..., Any]
    args: tuple[Any, ...]
    interface: str
    workers: int
    mode: int
    flags: int
    capture: dict[str, Any]
    capacity: int
    overflow: str
    loop: str | None
    cpus: tuple[int, ...] | None
    parent_pid: int
    spawned: bool  # the parent is this worker's parent (spawn), not a fork server
    netns: tuple[int, int, str]  # (st_dev, st_ino, path) of the starter's network namespace
    poll: float


class _Link:
    """The worker's end of its pipe: one writer at a time, runs of emitted objects."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()  # one message at a time on the pipe
        self.buf_lock = threading.Lock()
        self.buf: list[bytes] = []

    def send(self, msg: tuple[Any, ...]) -> None:
        with self.lock:
            self.conn.send(msg)

    def flush_locked(self) -> None:
        # buf_lock held. Blocks while the pipe is full: back-pressure from the
        # parent's queue (overflow="block") reaches the target here.
        run, self.buf = self.buf, []
        if run:
            self.send(("items", run))


class WorkerContext:
    """What a worker's target gets: its capture service, ``emit``, who it is.

    ``service``: the worker's ``CaptureService`` over its own ``Capture``
    (one member of the pool's fanout group). It starts on first use —
    ``for pkt in ctx``, ``ctx.batches()``, ``ctx.service.channel()`` (an
    async target), or ``ctx.service.start()`` — so a target can prepare
    (open its own sink) while the ring holds what arrives. Iteration ends
    when the pool stops (then return: the value goes to
    ``pool.results()``). For a sync target the service has no thread: its
    sync face (``for pkt in ctx``, ``batches()``, ``service.get()``)
    reads the ring in the target's own thread, so the worker runs on one
    core (see the module notes), and it has no async face; an async
    target's service has its thread and every face. Counters and stop
    are the same either way. ``index`` (0..``workers``-1), ``workers``,
    ``interface``, ``group_id`` (the fanout group), ``pid``. To write a
    shard per worker, open a sink of your own under ``partition(directory)``.
    """

    def __init__(self, spec: _Spec, index: int, service: CaptureService, group_id: int,
                 link: _Link) -> None:
        self.index = index
        self.workers = spec.workers
        self.interface = spec.interface
        self.group_id = group_id
        self.pid = os.getpid()
        self.service = service
        self._link = link
        self._stop = threading.Event()
        self._lock = threading.Lock()  # a stop and the service's start, one at a time

    @property
    def stopping(self) -> bool:
        """Whether the pool asked this worker to stop (its service is stopping)."""
        return self._stop.is_set()

    def emit(self, obj: Any) -> None:
        """Send ``obj`` to the parent (``for obj in pool``), in order.

        ``obj`` must be picklable (a ``TypeError`` here says why not). Objects
        travel in runs; a run waits while the parent's queue is full and its
        policy is ``"block"``.
        """
        try:
            data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - pickle raises many kinds
            raise TypeError(f"emit: {type(obj).__name__} object cannot be pickled: {e}") from None
        link = self._link
        with link.buf_lock:
            link.buf.append(data)
            if len(link.buf) >= _EMIT_RUN:
                link.flush_locked()

    def partition(self, directory: str | os.PathLike[str]) -> str:
        """``directory/worker=<index>`` (made if missing): where this worker
        writes its own shard of a dataset (hive-style partition by worker)."""
        path = os.path.join(os.fspath(directory), f"worker={self.index}")
        os.makedirs(path, exist_ok=True)
        return path

    def _start(self) -> bool:
        """Start the service unless the pool stopped this worker first."""
        with self._lock:
            if self._stop.is_set():
                return False
            self.service.start()
            return True

    def __iter__(self) -> Iterator[OwnedPacket]:
        return self.service.packets() if self._start() else iter(())

    def batches(self, timeout: float | None = None) -> Iterator[OwnedBatch]:
        """The service's owned batches until the pool stops (starts it if new)."""
        return self.service.batches(timeout) if self._start() else iter(())

    def __repr__(self) -> str:
        return f"<WorkerContext {self.index}/{self.workers} on {self.interface} pid {self.pid}>"


def _parent_gone(spec: _Spec) -> bool:
    if spec.spawned:
        return os.getppid() != spec.parent_pid
    try:
        os.kill(spec.parent_pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _worker_main(spec: _Spec, index: int, conn: Connection) -> None:
    """The worker process: set up, run the target, report, exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops the pool
    set_parent_death_signal(signal.SIGKILL)
    # The parent may have died before the line above: then no signal comes.
    if _parent_gone(spec):
        os._exit(0)
    link = _Link(conn)
    svc: CaptureService | None = None
    try:
        dev, ino, path = spec.netns
        st = os.stat("/proc/thread-self/ns/net")
        if (st.st_dev, st.st_ino) != (dev, ino):
            enter_netns(path)
        if spec.cpus is not None:
            os.sched_setaffinity(0, {spec.cpus[index]})
        gid = None
        if index > 0:  # the first worker made the group: wait for its id
            msg = conn.recv()  # EOFError: the parent is gone
            if msg[0] != "go":
                link.send(("done", pickle.dumps(None), None))
                return
            gid = msg[1]
        cap = Capture(spec.interface, fanout=Fanout(FanoutMode(spec.mode), gid, FanoutFlag(spec.flags)),
                      **spec.capture)
        # Started by the target's first read (iteration, channel()), so a
        # target can prepare first while the ring holds what arrives. A sync
        # target reads the ring in its own thread (one core per worker); an
        # async one through a service thread, so its loop never blocks.
        kind = CaptureService if spec.loop is not None else _PullCaptureService
        svc = kind(cap, capacity=spec.capacity, overflow=spec.overflow, name=f"w{index}",
                   poll_interval=spec.poll)
        if isinstance(svc, _PullCaptureService):
            svc._async_hint = (f"the worker target {getattr(spec.target, '__qualname__', spec.target)!r} is a plain "
                               "function, so it reads in its own thread; make it an `async def` to read "
                               "ctx.service through an event loop (asyncio or trio: WorkerPool's loop)")
        group_id = cap.fanout_group_id
        assert group_id is not None
        ctx = WorkerContext(spec, index, svc, group_id, link)
        link.send(("ready", group_id))
        threading.Thread(target=_control, args=(link, ctx, spec.poll),
                         name=f"w{index}-control", daemon=True).start()
        if spec.loop == "trio":
            import trio  # type: ignore[import-untyped]

            result = trio.run(spec.target, ctx, *spec.args)
        elif spec.loop == "asyncio":
            import asyncio

            result = asyncio.run(spec.target(ctx, *spec.args))
        else:
            result = spec.target(ctx, *spec.args)
        with link.buf_lock:
            link.flush_locked()
        # Not stop(): called from library code it hands the stop to a helper
        # thread and returns at once, and the counters sent below must come
        # after the ring's sweep. _stop_now stops, or waits for the stop the
        # control thread began.
        svc._stop_now()
        try:  # pickled here once (not again by the pipe), so its error is the target's
            data = pickle.dumps(result, pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"the target's return value ({type(result).__name__}) cannot be pickled: {e}") from None
        link.send(("done", data, svc.stats()))
    except BaseException as e:  # noqa: BLE001 - reported to the parent with its traceback
        text = traceback.format_exc()
        stats = None
        try:  # what it emitted before it failed still goes
            with link.buf_lock:
                link.flush_locked()
        except BaseException:  # noqa: BLE001
            pass
        if svc is not None:
            try:
                svc._stop_now()
                stats = svc.stats()
            except BaseException:  # noqa: BLE001
                pass
        try:
            what = f"{type(e).__name__}: {e}"
        except BaseException:  # noqa: BLE001 - its __str__ raised: the traceback still goes
            what = f"{type(e).__name__} (its str() raised)"
        try:
            link.send(("error", what, text, stats))
        except BaseException:  # noqa: BLE001 - the parent is gone: nobody to tell
            pass
        sys.exit(1)


def _control(link: _Link, ctx: WorkerContext, poll: float) -> None:
    """In the worker: wait for stop (or the parent's end), flush emitted runs, report counters."""
    last = 0.0
    while True:
        try:
            if link.conn.poll(poll) and link.conn.recv()[0] == "stop":
                break
        except (EOFError, OSError):
            break  # the parent is gone
        # Never wait here for the target's thread: this thread must see stop.
        if link.buf_lock.acquire(False):
            try:
                link.flush_locked()
            except OSError:
                break
            finally:
                link.buf_lock.release()
        now = time.monotonic()
        if now - last >= _STATS_EVERY and link.lock.acquire(False):
            last = now
            try:
                link.conn.send(("stats", ctx.service.stats()))
            except OSError:
                break
            finally:
                link.lock.release()
    with ctx._lock:
        ctx._stop.set()
    ctx.service._stop_now()  # the target's iteration ends; it returns (see _worker_main)


# -- the parent ----------------------------------------------------------------------


class _Results(list):  # type: ignore[type-arg]
    """A run of one worker's emitted objects: an item of the results queue."""

    __slots__ = ("source",)

    def __init__(self, objs: list[Any], source: int) -> None:
        super().__init__(objs)
        self.source = source


class _State:
    """Shared by the pool and its collector threads (never a reference to the pool)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.lock = threading.Lock()
        self.conns: list[Connection | None] = [None] * n
        self.send_locks = [threading.Lock() for _ in range(n)]
        self.procs: list[BaseProcess | None] = [None] * n
        self.pids = [0] * n
        self.started = [False] * n
        self.told_stop = [False] * n
        self.killed = [False] * n
        self.ready = [threading.Event() for _ in range(n)]  # set when ready, or on failure
        self.was_ready = [False] * n  # it said it captures
        self.group_id: int | None = None
        self.stats: list[ServiceStats | None] = [None] * n
        self.emitted = [0] * n
        self.late = [0] * n  # emitted objects read after stop closed the queue (queue drops)
        self.final = [False] * n
        self.results: list[Any] = [None] * n
        self.exitcodes: list[int | None] = [None] * n
        self.errors: list[WorkerError | None] = [None] * n

    def tell(self, i: int, msg: tuple[Any, ...]) -> None:
        """Send ``msg`` to worker ``i`` if its pipe is open; never raises."""
        with self.send_locks[i]:
            c = self.conns[i]
            if c is not None:
                try:
                    c.send(msg)
                except (OSError, ValueError):
                    pass

    def stop(self, i: int) -> None:
        if not self.told_stop[i]:
            self.told_stop[i] = True
            self.tell(i, ("stop",))

    def kill(self, i: int) -> None:
        with self.lock:  # not while its collector closes it (reaped: nothing to kill)
            p = self.procs[i]
            # Never os.kill(0 or None): pid 0 is our own process group. A worker
            # not yet reaped (exitcode None) keeps its pid, even as a zombie.
            if p is not None and p.pid and p.exitcode is None:
                self.killed[i] = True
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


class _WorkerHandle:
    """A member of the pool's service: one worker (label ``w<i>``); closing kills it."""

    def __init__(self, st: _State, i: int) -> None:
        self._st = st
        self._i = i
        self.label = f"w{i}"

    def close(self) -> None:
        self._st.kill(self._i)


def _collect(st: _State, i: int, mp: Any, spec: _Spec, core: BatchQueue[Any], name: str,
             poll: float, done: Callable[[], None]) -> None:
    """A collector thread: start worker ``i``, relay its messages, report its end."""
    conn: Connection | None = None
    msg: tuple[Any, ...] = ()
    error: tuple[str, str] | None = None
    try:
        conn, child = mp.Pipe(duplex=True)
        with st.send_locks[i]:
            st.conns[i] = conn
        proc = mp.Process(target=_worker_main, args=(spec, i, child), name=name, daemon=True)
        st.procs[i] = proc
        # Started from this thread, which outlives the worker: PR_SET_PDEATHSIG
        # follows the thread that made the process (see the module notes).
        proc.start()
        # This thread reaps the worker, not multiprocessing: its exit handler
        # would SIGTERM a daemon worker before the pool's own atexit stop
        # could end it cleanly, and would do so in any child forked from
        # this process (which inherits the list) as that child exits.
        multiprocessing.process._children.discard(proc)  # type: ignore[attr-defined]
        child.close()
        st.pids[i] = proc.pid or 0
        with st.lock:
            st.started[i] = True
            gid = st.group_id
        if i > 0 and gid is not None:
            st.tell(i, ("go", gid))
        if core.closing:
            st.stop(i)
        sentinel = proc.sentinel
        eof = False
        while True:
            ready = multiprocessing.connection.wait([sentinel] if eof else [conn, sentinel], poll)
            if core.closing:
                st.stop(i)
            if not eof and conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    eof = True
                    continue
                error = _handle(st, i, msg, core) or error
                continue
            # The sentinel alone is not enough: a child the worker forked
            # holds its end (spawn) and keeps it silent after the worker died.
            if sentinel in ready or proc.exitcode is not None:
                while not eof:  # what it wrote before it ended
                    try:
                        if not conn.poll(0):
                            break
                        msg = conn.recv()
                    except (EOFError, OSError):
                        break
                    error = _handle(st, i, msg, core) or error
                break
        proc.join()
        code = proc.exitcode
        st.exitcodes[i] = code
        with st.lock:
            st.procs[i] = None
        proc.close()  # its sentinel pipe: a stopped pool holds no descriptor
        clean = st.final[i] and code == 0 and error is None
        if not clean:
            pid = st.pids[i]
            if error is not None:
                err = WorkerError(i, pid, f"failed: {error[0]}", exitcode=code, traceback=error[1])
            elif code is not None and code < 0:
                how = f"was killed by {_signal_name(-code)}"
                if st.killed[i]:
                    how += f" (it had not stopped {_STOP_BUDGET} s after it was asked to)"
                err = WorkerError(i, pid, how, exitcode=code)
            else:
                err = WorkerError(i, pid, f"exited with code {code} without reporting an end", exitcode=code)
            st.errors[i] = err
            core.fail(name, err)
    except BaseException as e:  # noqa: BLE001 - handed to the consumers
        # This thread cannot go on watching the worker (it could not be
        # started, or sent what the parent cannot unpickle): end it.
        st.kill(i)
        p = st.procs[i]
        if p is not None and p.pid is not None:
            p.join(1.0)  # reaped here (see above), or it stays a zombie
            st.exitcodes[i] = p.exitcode
            if p.exitcode is not None:
                with st.lock:
                    st.procs[i] = None
                p.close()
        if st.errors[i] is None:
            err = WorkerError(i, st.pids[i], f"could not be served: {type(e).__name__}: {e}",
                              exitcode=st.exitcodes[i])
            err.__cause__ = e
            st.errors[i] = err
            core.fail(name, err)
    finally:
        st.ready[i].set()
        with st.send_locks[i]:
            st.conns[i] = None
        if conn is not None:
            conn.close()
        done()


def _handle(st: _State, i: int, msg: tuple[Any, ...], core: BatchQueue[Any]) -> tuple[str, str] | None:
    """One message from worker ``i``; returns ``(summary, traceback)`` if it failed."""
    kind = msg[0]
    if kind == "items":
        objs = [pickle.loads(b) for b in msg[1]]
        st.emitted[i] += len(objs)
        try:
            core.put(_Results(objs, i))
        except Exception:  # noqa: BLE001 - closed after a stop gave up waiting: dropped, counted
            st.late[i] += len(objs)
    elif kind == "stats":
        st.stats[i] = msg[1]
    elif kind == "ready":
        st.was_ready[i] = True
        st.ready[i].set()
        if i == 0:
            with st.lock:
                st.group_id = msg[1]
                others = [j for j in range(1, st.n) if st.started[j]]
            for j in others:
                st.tell(j, ("go", msg[1]))
    elif kind == "done":
        st.results[i] = pickle.loads(msg[1])
        if msg[2] is not None:
            st.stats[i] = msg[2]
        st.final[i] = True
    elif kind == "error":
        if msg[3] is not None:
            st.stats[i] = msg[3]
            st.final[i] = True
        return (msg[1], msg[2])
    return None


def _check_cpus(cpus: object, workers: int) -> tuple[int, ...] | None:
    if cpus is None:
        return None
    try:
        cl = list(cpus)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(f"cpus must be a sequence of CPU numbers, one per worker, got {cpus!r}") from None
    if len(cl) != workers:
        raise ConfigError(f"cpus must give one CPU per worker ({workers}), got {len(cl)}: {cl!r}")
    allowed = os.sched_getaffinity(0)
    for c in cl:
        if not isinstance(c, int) or isinstance(c, bool):
            raise ConfigError(f"cpus: a CPU number must be an int, got {c!r}")
        if c not in allowed:
            raise ConfigError(f"cpus: CPU {c} is not available to this process (allowed: {sorted(allowed)})")
    if len(set(cl)) != len(cl):
        raise ConfigError(f"cpus: each worker needs a CPU of its own, got {cl!r}")
    return tuple(cl)


def _check_mode(mode: object) -> FanoutMode:
    if isinstance(mode, str):
        try:
            return FanoutMode[mode.upper()]
        except KeyError:
            pass
    elif isinstance(mode, int) and not isinstance(mode, bool):
        try:
            return FanoutMode(mode)
        except ValueError:
            pass
    names = ", ".join(repr(m.name.lower()) for m in FanoutMode)
    raise ConfigError(f"mode must be a FanoutMode or one of {names}, got {mode!r}")


class WorkerPool(_ReceivingService):
    """N worker processes capturing one interface in one fanout group.

    ``WorkerPool(target, "eth0", workers=4)``: each worker opens its own
    ``Capture`` of ``interface`` (options: ``capture``, a dict of
    ``CaptureConfig`` fields), joins the pool's fanout group (``mode``: hash
    by default, so a flow stays in one worker and in order; ``defrag``, on by
    default for hash as Suricata does, reassembles IP fragments before
    hashing), puts a capture service over it (``worker_capacity``,
    ``worker_overflow``) and calls ``target(ctx, *args)`` with a
    ``WorkerContext``. A plain target reads ``for pkt in ctx`` or
    ``ctx.batches()`` in its own thread, with no copy-out thread beside it,
    so each worker uses one core and N workers scale on N cores (a read
    goes only into an empty queue, so ``worker_overflow`` never drops
    there: a worker that falls behind leaves the packets in its ring,
    whose drops count them). An ``async def`` target runs under ``loop``
    (``"asyncio"``, the default for one, or ``"trio"``) and reads
    ``ctx.service.channel()``, filled by a service thread. The target must
    be picklable by name (a module-level function).

    Results: ``ctx.emit(obj)`` objects come out of this pool as from a
    capture service — ``for obj in pool``, ``get``, ``get_batch`` (a list of
    one worker's objects), the async faces ``asyncio()``, ``trio()``,
    ``channel()`` — through one queue of ``capacity`` objects with
    ``overflow`` ``"block"`` (a full queue holds the workers' ``emit``) or
    ``"drop"`` (counted). Objects of one worker keep their order. The
    targets' return values are ``results()`` once they ended.

    ``start()`` (or ``with``) returns when every worker captures (or raises
    the ``WorkerError`` of one that could not, within ``start_timeout``);
    ``stop()`` asks every worker to stop, gives them 1.5 s and kills the
    rest. A worker that fails or dies ends the pool: the others are stopped
    and consumers get ``ServiceError`` from a ``WorkerError`` (signal or
    traceback), within a second (a collector holding a run of results for
    a full ``"block"`` queue reports once there is room, or at stop).
    ``start_method``: ``"spawn"`` (default) or ``"forkserver"``; ``"fork"``
    is refused (see the module notes for why). ``cpus``: one distinct CPU number per
    worker to pin it to. ``stats()``: per worker and added up.
    """

    def __init__(self, target: Callable[..., Any], interface: str, workers: int = 2, *,
                 args: Sequence[Any] = (), mode: FanoutMode | str = "hash", defrag: bool | None = None,
                 start_method: str = "spawn", loop: str | None = None,
                 cpus: Sequence[int] | None = None, capture: dict[str, Any] | None = None,
                 capacity: int = 65536, overflow: Overflow | str = "block",
                 worker_capacity: int = 65536, worker_overflow: Overflow | str = "block",
                 name: str | None = None, start_timeout: float = 30.0,
                 poll_interval: float = POLL_INTERVAL, drain_timeout: float = 2.0) -> None:
        self._started = self._stopped = False
        if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 256:
            raise ConfigError(f"workers must be an int in 1..256, got {workers!r}")
        if start_method == "fork":
            raise ConfigError("start_method='fork' is refused: a forked worker would inherit the parent's "
                              "capture threads' locks and its open rings; use 'spawn' or 'forkserver'")
        if start_method not in _START_METHODS:
            raise ConfigError(f"start_method must be 'spawn' or 'forkserver', got {start_method!r}")
        if not callable(target):
            raise ConfigError(f"target must be a callable taking a WorkerContext, got {target!r}")
        is_async = inspect.iscoroutinefunction(target)
        if loop is None and is_async:
            loop = "asyncio"
        if loop is not None:
            if loop not in _LOOPS:
                raise ConfigError(f"loop must be 'asyncio' or 'trio', got {loop!r}")
            if not is_async:
                raise ConfigError(f"loop={loop!r} needs an async def target, got {target!r}")
        fmode = _check_mode(mode)
        if defrag is None:
            defrag = fmode is FanoutMode.HASH
        if not isinstance(defrag, bool):
            raise ConfigError(f"defrag must be a bool, got {defrag!r}")
        if capture is not None and not isinstance(capture, Mapping):
            raise ConfigError(f"capture must be a dict of CaptureConfig fields, got {capture!r}")
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise ConfigError(f"args must be a tuple of the target's arguments after ctx, got {args!r}")
        opts = dict(capture or {})
        if "fanout" in opts:
            raise ConfigError("capture: 'fanout' is the pool's to set (use mode= and defrag=)")
        resolve(CaptureConfig, None, opts, "WorkerPool capture")  # every option checked here, not in a worker
        try:
            BatchQueue(worker_capacity, worker_overflow)  # the workers' services' checks, here
        except ConfigError as e:
            raise ConfigError(f"worker_{e}") from None
        if not isinstance(start_timeout, (int, float)) or isinstance(start_timeout, bool) or not start_timeout > 0:
            raise ConfigError(f"start_timeout must be a number of seconds > 0, got {start_timeout!r}")
        cpu_list = _check_cpus(cpus, workers)
        if not isinstance(interface, str) or not interface:
            raise ConfigError(f"interface must be a non-empty str, got {interface!r}")
        ifindex(interface)  # InterfaceNotFoundError now rather than in every worker
        super().__init__("nc-workers" if name is None else name, poll_interval, drain_timeout)
        self._receiving(capacity, overflow)
        self.interface = interface
        self.workers = workers
        self.start_method = start_method
        self.start_timeout = float(start_timeout)
        flags = FanoutFlag.DEFRAG if defrag else FanoutFlag.NONE
        self._spec_args: dict[str, Any] = dict(
            target=target, args=tuple(args), interface=interface, workers=workers, mode=int(fmode),
            flags=int(flags), capture=opts, capacity=worker_capacity, overflow=Overflow(worker_overflow).value,
            loop=loop, cpus=cpu_list, parent_pid=os.getpid(), spawned=start_method == "spawn",
            poll=min(self._poll, 0.05))
        try:
            pickle.dumps((target, tuple(args)))
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"target and args must be picklable (a module-level function): {e}") from None
        # Pickled by name, it would fail only in each worker (which imports
        # __main__ from its file): an interactive session or `python -c` has none.
        if getattr(target, "__module__", None) == "__main__" \
                and not getattr(sys.modules.get("__main__"), "__file__", None):
            raise ConfigError(f"target {getattr(target, '__qualname__', target)!r} is defined in __main__ "
                              "without a file (an interactive session or python -c), which a worker "
                              "cannot import: define it in a module")
        self._st = _State(workers)
        self._members = tuple(_WorkerHandle(self._st, i) for i in range(workers))
        self._spec: _Spec | None = None

    # -- start and stop ------------------------------------------------------------------

    def start(self) -> WorkerPool:
        """Start the workers; return when every one captures (idempotent).

        Raises the ``WorkerError`` of a worker that failed to start (or did
        not within ``start_timeout``), after stopping the others.
        """
        if self._started and not self._stopped:
            self._check_not_forked()
            return self
        if self._stopped:
            super().start()  # ClosedError: a stopped pool does not restart
        st = os.stat("/proc/thread-self/ns/net")
        netns = (st.st_dev, st.st_ino, f"/proc/{os.getpid()}/task/{threading.get_native_id()}/ns/net")
        self._spec = _Spec(netns=netns, **self._spec_args)
        self._mp = multiprocessing.get_context(self.start_method)
        super().start()
        deadline = time.monotonic() + self.start_timeout
        try:
            for i in range(self.workers):
                # In slices, so that Ctrl-C gets through.
                while not self._st.ready[i].wait(0.05):
                    self._raise_start_error()
                    if time.monotonic() > deadline:
                        raise WorkerError(i, self._st.pids[i], f"did not start within {self.start_timeout} s")
            self._raise_start_error()
        except BaseException:
            self._stop_now()
            raise
        return self

    def _raise_start_error(self) -> None:
        # Only a worker that never captured fails the start; a later failure
        # reaches the consumers as any failure does.
        for e, up in zip(self._st.errors, self._st.was_ready):
            if e is not None and not up:
                raise e

    def _thread_main(self, i: int, name: str, done: Callable[[], None]) -> Callable[[], None]:
        st, mp, spec, core, poll = self._st, self._mp, self._spec, self._core, self._poll
        assert spec is not None
        return lambda: _collect(st, i, mp, spec, cast("BatchQueue[Any]", core), name, poll, done)

    def _begin_stop(self, drain: bool, deadline: float) -> float:
        self._core.begin_close()
        for i in range(self.workers):
            self._st.stop(i)
        return time.monotonic() + _STOP_BUDGET

    @property
    def group_id(self) -> int | None:
        """The fanout group's id (the kernel picked it), once started."""
        return self._st.group_id

    @property
    def pids(self) -> tuple[int, ...]:
        """The workers' process ids (0 for one not started)."""
        return tuple(self._st.pids)

    def results(self) -> list[Any]:
        """What each worker's target returned, by worker index (``None`` for
        one that has not ended, failed or was killed: see ``worker_errors``)."""
        return list(self._st.results)

    @property
    def worker_errors(self) -> tuple[WorkerError | None, ...]:
        """Each worker's ``WorkerError``, or ``None`` if it has not failed."""
        return tuple(self._st.errors)

    # -- stats ---------------------------------------------------------------------------

    def stats(self) -> WorkerPoolStats:
        """Per-worker and added-up counters (see ``WorkerPoolStats``); exact once
        stopped for the workers that ended cleanly, a snapshot before."""
        self._check_not_forked()
        st = self._st
        per = []
        sources = []
        qd = dl = qd_q = peak = cap = 0
        for i in range(self.workers):
            s = st.stats[i]
            per.append(WorkerStats(i, st.pids[i], s, st.emitted[i], st.final[i], st.exitcodes[i]))
            if s is None:
                sources.append(SourceStats(f"w{i}", 0, 0, 0, 0))
                continue
            sources.append(SourceStats(f"w{i}", s.kernel_packets, s.kernel_drops, s.kernel_freezes, s.lost))
            qd += s.queue_drops
            dl += s.delivered
            qd_q += s.queued
            peak = max(peak, s.peak_queued)
            cap += s.capacity
        c = self._core.counters()
        return WorkerPoolStats(
            workers=tuple(per), capture=ServiceStats(tuple(sources), qd, dl, qd_q, peak, cap),
            emitted=sum(st.emitted), delivered=c.delivered, queue_drops=c.dropped + sum(st.late), queued=c.queued,
            peak_queued=c.peak, capacity=c.capacity)

    # -- the sync face: emitted objects ---------------------------------------------------

    def get(self, timeout: float | None = None) -> Any:
        """The next emitted object; waits up to ``timeout`` s (``queue.Empty``
        on timeout, ``ClosedError`` at the end, ``ServiceError`` if a worker failed)."""
        return super().get(timeout)

    def get_nowait(self) -> Any:
        """The next emitted object if one is queued, else ``queue.Empty``."""
        return super().get_nowait()

    def get_batch(self, timeout: float | None = None) -> Any:
        """The next run of one worker's emitted objects (a list)."""
        return list(super().get_batch(timeout))

    def packets(self, timeout: float | None = None) -> Iterator[Any]:
        """The emitted objects until the end (or ``timeout`` s without any)."""
        return super().packets(timeout)

    def __iter__(self) -> Iterator[Any]:
        return self.packets()

    def __repr__(self) -> str:
        state = "running" if self.running else ("stopped" if self._stopped else "not started")
        return f"<WorkerPool {self.name!r} {self.workers} workers on {self.interface} {state}>"
