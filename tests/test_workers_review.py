"""WorkerPool under review: the failures a user of multiprocessing would try."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

import netring_chan as nc
import worker_targets as wt
from capture_util import send_in_order
from lab import Lab
from test_workers import HERE, RING, check_split, collect, flows, gone, wait_gone


def test_exception_whose_str_raises_still_reports_its_traceback(lab: Lab) -> None:
    with nc.WorkerPool(wt.raise_bad_str, lab.a, 1, capture=RING) as pool:
        with pytest.raises(nc.ServiceError) as ei:
            pool.get(5.0)
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError), err
    assert err.traceback is not None and "raise_bad_str" in err.traceback
    assert "BadStr" in str(err)
    assert wait_gone(pool.pids, 2.0) == []


_EXIT_WITHOUT_STOP = """
import sys
import time
sys.path.insert(0, {here!r})
from lab import inside
import netring_chan as nc
import worker_targets as wt
if __name__ == "__main__":
    with inside({ns!r}):
        pool = nc.WorkerPool(wt.mark_at_end, {ifname!r}, 2, args=({path!r},),
                             capture=dict(block_size=1 << 16, block_count=4))
        pool.start()
        assert len([pool.get(10) for _ in range(2)]) == 2
        {fork}
    print(" ".join(map(str, pool.pids)), flush=True)
    # the program ends without stopping the pool: at exit, the pool stops it
"""


@pytest.mark.parametrize("fork", [False, True])
def test_exit_without_stop_stops_workers_cleanly(lab: Lab, tmp_path: os.PathLike[str], fork: bool) -> None:
    """At interpreter exit (and at the exit of a child forked from the
    program), the workers are stopped by the pool, not terminated by
    multiprocessing's exit handler before the pool could stop them."""
    path = os.path.join(os.fspath(tmp_path), "end")
    child = ("pid = os.fork()\n        if pid == 0: sys.exit(0)\n        os.waitpid(pid, 0)\n"
             "        import time; time.sleep(0.3); assert pool.error is None, pool.error") if fork else ""
    code = _EXIT_WITHOUT_STOP.format(here=HERE, ns=lab.ns, ifname=lab.a, path=path, fork=child)
    code = code.replace("import sys\n", "import os, sys\n", 1)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pids = [int(x) for x in r.stdout.split()]
    assert wait_gone(pids, 2.0) == []
    for i in range(2):
        assert os.path.exists(f"{path}.{i}"), f"worker {i} did not end cleanly: {r.stderr}"


def reaped(pid: int) -> bool:
    """No process ``pid`` at all: exited and reaped (not a zombie)."""
    return not os.path.exists(f"/proc/{pid}")


def test_object_the_parent_cannot_unpickle_fails_the_worker_and_reaps_it(lab: Lab) -> None:
    with nc.WorkerPool(wt.emit_no_load, lab.a, 1, capture=RING) as pool:
        with pytest.raises(nc.ServiceError) as ei:
            pool.get(5.0)
        pid = pool.pids[0]
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError) and "could not be served" in str(err)
    assert "cannot be rebuilt" in str(err)
    deadline = time.monotonic() + 2
    while not reaped(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert reaped(pid), "the killed worker was left a zombie"
    assert err.exitcode == -9


_STARTING = """
import sys
import time
sys.path.insert(0, {here!r})
from lab import inside
import netring_chan as nc
import worker_targets as wt
if __name__ == "__main__":
    with inside({ns!r}):
        pool = nc.WorkerPool(wt.idle, {ifname!r}, 2, start_method={method!r},
                             capture=dict(block_size=1 << 16, block_count=4))
        print("starting", flush=True)
        try:
            pool.start()
        except KeyboardInterrupt:
            print("interrupted", " ".join(map(str, pool.pids)), flush=True)
            raise
        print("started", flush=True)
        for _ in pool:
            pass
"""


def tagged(tag: str) -> list[int]:
    """Live (not zombie) processes whose environment carries ``tag``."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{d}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if tag.encode() in env and state != "Z":
            out.append(int(d))
    return out


def _starting(lab: Lab, method: str, tag: str) -> subprocess.Popen[str]:
    code = _STARTING.format(here=HERE, ns=lab.ns, ifname=lab.a, method=method)
    env = dict(os.environ, NC_REVIEW_TAG=tag)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "starting"
    return proc


@pytest.mark.parametrize("method, delay", [("spawn", 0.0), ("spawn", 0.1), ("spawn", 0.25), ("spawn", 0.5),
                                           ("forkserver", 0.1), ("forkserver", 0.4)])
def test_parent_killed_during_start_leaves_no_worker(lab: Lab, method: str, delay: float) -> None:
    tag = f"nc-review-{os.getpid()}-{method}-{delay}"
    proc = _starting(lab, method, tag)
    try:
        time.sleep(delay)
        proc.kill()
        proc.wait(5)
        deadline = time.monotonic() + 3
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tagged(tag) == []
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_ctrl_c_during_start_stops_every_worker(lab: Lab, delay: float) -> None:
    tag = f"nc-review-int-{os.getpid()}-{delay}"
    proc = _starting(lab, "spawn", tag)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
        assert proc.returncode != 0
        assert "KeyboardInterrupt" in err, err
        deadline = time.monotonic() + 2
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tagged(tag) == []
    finally:
        proc.kill()
        proc.communicate()


def test_results_through_the_asyncio_face(lab: Lab) -> None:
    import asyncio

    frames = flows(lab, 8, 5)

    async def main() -> list[Any]:
        got: list[Any] = []
        with nc.WorkerPool(wt.record, lab.a, 2, capture=RING) as pool:
            send_in_order(lab, frames)
            rx = pool.asyncio()
            async def take() -> None:
                async for obj in rx:
                    got.append(obj)
                    if len(got) == len(frames):
                        break
            await asyncio.wait_for(take(), 10)
        return got

    check_split(asyncio.run(main()), 8, 5)


def test_stop_with_a_full_block_queue_nobody_reads(lab: Lab) -> None:
    frames = flows(lab, 16, 40)
    pool = nc.WorkerPool(wt.record, lab.a, 2, capacity=8, capture=RING)
    pool.start()
    send_in_order(lab, frames)
    time.sleep(0.5)  # the collectors wait for room, the workers' emits wait on their pipes
    t0 = time.monotonic()
    pool.stop()
    assert time.monotonic() - t0 < 2.0
    st = pool.stats()
    assert st.balanced, st
    assert all(e is None for e in pool.worker_errors), pool.worker_errors
    # Nothing lost: everything the workers saw was emitted and is still queued.
    assert st.emitted == st.capture.delivered == len(frames)
    assert len([o for b in pool.get_all() for o in b]) == len(frames)
    assert wait_gone(pool.pids, 1.0) == []


def test_stop_from_a_signal_handler_while_iterating(lab: Lab) -> None:
    got = []
    with nc.WorkerPool(wt.idle, lab.a, 2, capture=RING) as pool:
        old = signal.signal(signal.SIGALRM, lambda *a: pool.stop())
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            t0 = time.monotonic()
            for obj in pool:
                got.append(obj)
            took = time.monotonic() - t0
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    assert len(got) == 2 and took < 3.0
    assert pool.results() == [0, 1] and pool.stats().balanced


def test_stop_twice_from_two_threads(lab: Lab) -> None:
    import threading

    pool = nc.WorkerPool(wt.idle, lab.a, 2, capture=RING).start()
    ts = [threading.Thread(target=pool.stop) for _ in range(2)]
    for t in ts:
        t.start()
    pool.stop()
    for t in ts:
        t.join(5)
    assert not any(t.is_alive() for t in ts)
    assert pool.results() == [0, 1] and pool.stats().balanced
    pool.stop()


_INTERACTIVE = """
import netring_chan as nc
def target(ctx):
    pass
try:
    nc.WorkerPool(target, "lo", 2)
except nc.ConfigError as e:
    print("ConfigError:", e)
"""


@pytest.mark.unprivileged
def test_target_in_main_without_a_file_is_refused_in_the_parent() -> None:
    # `python -c` (or a REPL, a notebook): the worker could not import it and
    # would only exit with code 1.
    r = subprocess.run([sys.executable, "-c", _INTERACTIVE], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "ConfigError: target 'target' is defined in __main__ without a file" in r.stdout, r.stdout



def test_a_stopped_pool_cannot_restart(lab: Lab) -> None:
    # As a CaptureService: start() after stop() says so, rather than
    # returning a pool whose iteration ends at once.
    pool = nc.WorkerPool(wt.idle, lab.a, 1, capture=RING)
    pool.start()
    pool.stop()
    with pytest.raises(nc.ClosedError, match="stopped"):
        pool.start()
    with pytest.raises(nc.ClosedError, match="stopped"):
        with pool:
            pass


def test_pool_inherited_by_a_forked_child(lab: Lab) -> None:
    import warnings

    with nc.WorkerPool(wt.idle, lab.a, 2, capture=RING) as pool:
        assert len(collect(pool, 2)) == 2
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            code = 0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    assert pool.stop() is False
                    for call in (pool.stats, lambda: pool.get(0), pool.start):
                        try:
                            call()
                        except nc.ClosedError:
                            pass
                        else:
                            code = 3
                    del call
            except BaseException:  # noqa: BLE001
                code = 2
            os.write(w, bytes([code]))
            os._exit(0)
        os.close(w)
        assert os.read(r, 1) == b"\0"
        os.close(r)
        os.waitpid(pid, 0)
        time.sleep(0.3)
        # The parent's pool is undisturbed.
        assert pool.running and pool.error is None
        assert not any(gone(p) for p in pool.pids)  # both still run
    assert pool.results() == [0, 1] and pool.stats().balanced


def test_results_identity_holds_when_a_killed_worker_left_objects_behind(lab: Lab) -> None:
    # The collector is still reading the killed worker's pipe when stop()
    # closes the results queue: what it reads then cannot be queued, and
    # must not be counted as emitted-and-queued either.
    pool = nc.WorkerPool(wt.stubborn_emitter, lab.a, 1, capture=RING)
    pool.start()
    time.sleep(0.3)
    pool.stop()
    for t in pool._threads:  # the collector finishes reading what the worker wrote
        t.join(10.0)
    assert not any(t.is_alive() for t in pool._threads)
    st = pool.stats()
    assert st.emitted == st.delivered + st.queue_drops + st.queued, st
    assert st.balanced and st.emitted == 1200


@pytest.mark.parametrize("how, words", [
    ("segv", "was killed by SIGSEGV"),
    ("sys.exit", "failed: SystemExit: 3"),
    ("os._exit", "exited with code 0 without reporting an end"),
    ("unpicklable-return", "return value (function) cannot be pickled"),
])
def test_worker_ends_badly_and_the_parent_says_how(lab: Lab, how: str, words: str) -> None:
    got = []
    t0 = time.monotonic()
    with nc.WorkerPool(wt.ends_badly, lab.a, 1, args=(how,), capture=RING) as pool:
        with pytest.raises(nc.ServiceError) as ei:
            while True:
                got.append(pool.get(5.0))
    assert time.monotonic() - t0 < 5.0
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError) and words in str(err), err
    if how in ("sys.exit", "unpicklable-return"):
        # A signal or os._exit skips the flush: what it had not sent yet is gone (documented).
        assert got == [("before", how)]
    assert wait_gone(pool.pids, 1.0) == []


def test_target_that_returns_at_once_ends_the_stream(lab: Lab) -> None:
    with nc.WorkerPool(wt.ends_badly, lab.a, 2, args=("return-at-once",), capture=RING) as pool:
        got = list(pool)  # ends when both workers ended
    assert got == [("before", "return-at-once")] * 2
    assert pool.results() == ["done", "done"] and pool.stats().balanced


def test_a_stopped_pool_holds_no_fd(lab: Lab) -> None:
    def fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    def run() -> nc.WorkerPool:
        pool = nc.WorkerPool(wt.idle, lab.a, 2, capture=RING)
        pool.start()
        pool.stop()
        for t in pool._threads:  # the collectors: they close what they hold as they end
            t.join(2.0)
        return pool

    run()  # multiprocessing's resource tracker starts once, and keeps its pipe
    before = fds()
    kept = [run() for _ in range(2)]
    assert fds() - before == set(), "a stopped pool still holds descriptors"
    assert all(p.results() == [0, 1] for p in kept)


@pytest.mark.unprivileged
def test_worker_error_pickles() -> None:
    # A pool run inside a process pool task (concurrent.futures,
    # multiprocessing) raises it there: it must cross back intact.
    import pickle

    e = nc.WorkerError(1, 4242, "failed: ValueError: x", exitcode=-9, traceback="Traceback...\nValueError: x")
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is nc.WorkerError and str(e2) == str(e)
    assert (e2.worker, e2.pid, e2.exitcode, e2.signal, e2.traceback) == (1, 4242, -9, "SIGKILL", e.traceback)


@pytest.mark.unprivileged
@pytest.mark.parametrize("kw, words", [
    (dict(args=5), "args must be a tuple of the target's arguments after ctx, got 5"),
    (dict(args="eth0"), "args must be a tuple of the target's arguments after ctx, got 'eth0'"),
    (dict(capture=5), "capture must be a dict of CaptureConfig fields, got 5"),
    (dict(cpus="twice the same"), "cpus: each worker needs a CPU of its own, got [{c}, {c}]"),
])
def test_more_bad_arguments(kw: dict[str, Any], words: str) -> None:
    c = min(os.sched_getaffinity(0))
    if "cpus" in kw:
        kw = dict(cpus=[c, c])
        words = words.format(c=c)
    with pytest.raises(nc.ConfigError) as ei:
        nc.WorkerPool(wt.idle, "lo", 2, **kw)
    assert words in str(ei.value)


_STOPPING = """
import sys
sys.path.insert(0, {here!r})
from lab import inside
import netring_chan as nc
import worker_targets as wt
if __name__ == "__main__":
    with inside({ns!r}):
        pool = nc.WorkerPool(wt.stubborn, {ifname!r}, 2, capture=dict(block_size=1 << 16, block_count=4))
        pool.start()
        print("stopping", flush=True)
        pool.stop()
        print("stopped", flush=True)
"""


def test_parent_killed_during_stop_leaves_no_worker(lab: Lab) -> None:
    # The workers ignore the stop, so the parent dies inside stop()'s budget.
    tag = f"nc-review-stop-{os.getpid()}"
    code = _STOPPING.format(here=HERE, ns=lab.ns, ifname=lab.a)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, NC_REVIEW_TAG=tag))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "stopping"
        time.sleep(0.3)
        assert len(tagged(tag)) >= 3  # the parent and its two workers
        proc.kill()
        proc.wait(5)
        deadline = time.monotonic() + 3
        while tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tagged(tag) == []
    finally:
        proc.kill()
        proc.communicate()


def test_killed_worker_whose_own_child_lives_on_is_reported(lab: Lab) -> None:
    # The child inherits the worker's end of the process sentinel (spawn) and
    # of its pipe: neither signals the worker's death while the child lives.
    grandchild = 0
    try:
        with nc.WorkerPool(wt.fork_and_idle, lab.a, 1, capture=RING) as pool:
            _, grandchild = pool.get(10)
            victim = pool.pids[0]
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(nc.ServiceError) as ei:
                while True:
                    pool.get(3.0)
            took = time.monotonic() - t0
        assert took < 1.0, took
        err = ei.value.__cause__
        assert isinstance(err, nc.WorkerError) and err.signal == "SIGKILL"
    finally:
        if grandchild:
            os.kill(grandchild, signal.SIGKILL)


@pytest.mark.unprivileged
@pytest.mark.parametrize("name", ["", 0, False])
def test_a_name_that_is_no_name_is_refused_not_replaced(tmp_path: os.PathLike[str], name: Any) -> None:
    # ``name or default`` took these for "no name" and used the default.
    with pytest.raises(nc.ConfigError, match=f"name must be a non-empty str, got {name!r}"):
        nc.WorkerPool(wt.idle, "lo", 2, name=name)
    path = os.path.join(os.fspath(tmp_path), "x.pcap")
    nc.open_writer(path).close()
    reader = nc.open_reader(path)
    try:
        with pytest.raises(nc.ConfigError, match=f"name must be a non-empty str, got {name!r}"):
            nc.CaptureService(reader, name=name)
    finally:
        reader.close()
    with nc.open_writer(path) as sink:
        with pytest.raises(nc.ConfigError, match=f"name must be a non-empty str, got {name!r}"):
            nc.InjectService(sink, name=name)


def test_a_return_value_is_pickled_once(lab: Lab) -> None:
    # The worker checked that its result pickles, then sent it, pickled again:
    # a large result cost twice what it needs to at the end.
    with nc.WorkerPool(wt.return_pickled, lab.a, 1, capture=RING) as pool:
        assert list(pool) == []
    res = pool.results()[0]
    assert isinstance(res, wt.Pickled) and res.times == 1
