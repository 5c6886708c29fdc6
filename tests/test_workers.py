"""WorkerPool: fanout worker processes on a real veth, and their failures."""

from __future__ import annotations

import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from typing import Any, Iterator

import pytest

import netring_chan as nc
import worker_targets as wt
from capture_util import hwaddr, ipv4_frame, send_in_order
from lab import Lab, _setns

RING = dict(block_size=1 << 16, block_count=8, block_timeout_ms=5, filter="udp")
HERE = os.path.dirname(os.path.abspath(__file__))
# The namespace this module was imported in (collection runs outside every lab).
_OUTSIDE = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def flows(lab: Lab, nflows: int, per_flow: int) -> list[bytes]:
    """Interleaved frames of ``nflows`` UDP/IPv4 flows (distinct 5-tuples,
    lab-only addresses), each carrying its flow and sequence number."""
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    return [ipv4_frame(dst, src, f"10.9.{f}.1", f"10.8.{f % 5}.2", 1000 + f, 3000 + 7 * f,
                       wt.TAG + struct.pack("!II", f, k))
            for k in range(per_flow) for f in range(nflows)]


def collect(pool: nc.WorkerPool, want: int, timeout: float = 10.0) -> list[Any]:
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        try:
            got += pool.get_batch(0.1)
        except queue.Empty:
            pass
    return got


def gone(pid: int) -> bool:
    """The process has exited (absent, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped before the open, or between it and the read
        return True


def wait_gone(pids: Iterator[int] | list[int] | tuple[int, ...], timeout: float) -> list[int]:
    """The pids still running after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if p]
    while left and time.monotonic() < deadline:
        left = [p for p in left if not gone(p)]
        time.sleep(0.02)
    return left


def descendants() -> list[tuple[int, str]]:
    """(pid, command line) of every live process below this one, less
    multiprocessing's own helpers (the fork server, the resource tracker)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if fields[0] != "Z":
                parent[int(d)] = int(fields[1])
    out = []
    for pid in parent:
        p = pid
        while p in parent and p != os.getpid():
            p = parent[p]
        if p == os.getpid() and pid != p:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except FileNotFoundError:
                continue
            # The helpers are our children; workers are the fork server's
            # (with its command line) or ours (spawn).
            if parent[pid] != os.getpid() or ("forkserver" not in cmd and "resource_tracker" not in cmd):
                out.append((pid, cmd))
    return out


def packet_sockets_on(ifname: str) -> int:
    """AF_PACKET sockets bound to ``ifname`` in this thread's namespace."""
    idx = socket.if_nametoindex(ifname)
    with open("/proc/thread-self/net/packet") as f:
        rows = [line.split() for line in f.read().splitlines()[1:]]
    return sum(1 for r in rows if int(r[4]) == idx)


def forkserver_outside_labs() -> None:
    """Start multiprocessing's fork server (if it is not running) outside
    every lab. It lives as long as this test session, in the network
    namespace of the thread that started it: started from a test inside a
    lab, it would keep that lab's namespace alive after the lab deleted it.
    Its workers then enter the lab's namespace themselves (see workers.py)."""
    import multiprocessing.forkserver

    def run() -> None:
        _setns(_OUTSIDE)
        multiprocessing.forkserver.ensure_running()

    t = threading.Thread(target=run)
    t.start()
    t.join()


def check_split(got: list[Any], nflows: int, per_flow: int) -> dict[int, int]:
    """Every frame once, every flow in one worker, in order; flow -> worker."""
    assert len(got) == nflows * per_flow
    by_flow: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for w, f, s in got:
        by_flow[f].append((w, s))
    assert sorted(by_flow) == list(range(nflows))
    owner = {}
    for f, seen in by_flow.items():
        workers = {w for w, _ in seen}
        assert len(workers) == 1, f"flow {f} split across workers {workers}"
        assert [s for _, s in seen] == list(range(per_flow)), f"flow {f} out of order or incomplete"
        owner[f] = workers.pop()
    return owner


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_flows_split_across_two_workers(lab: Lab, method: str) -> None:
    nflows, per_flow = 32, 20
    frames = flows(lab, nflows, per_flow)
    if method == "forkserver":
        forkserver_outside_labs()
    with nc.WorkerPool(wt.record, lab.a, 2, start_method=method, capture=RING) as pool:
        assert pool.group_id is not None
        send_in_order(lab, frames)
        got = collect(pool, len(frames))
    owner = check_split(got, nflows, per_flow)
    assert set(owner.values()) == {0, 1}, "hash fanout gave every flow to one worker"
    res = pool.results()
    assert [r["index"] for r in res] == [0, 1]
    st = pool.stats()
    assert st.balanced and all(w.final and w.exitcode == 0 for w in st.workers)
    # The aggregated capture counters are the sum of the workers' and match what arrived.
    assert st.capture.delivered == len(frames) == sum(r["seen"] for r in res)
    assert st.capture.kernel_packets == st.capture.delivered and st.capture.kernel_drops == 0
    for i, w in enumerate(st.workers):
        assert w.service is not None and w.service.delivered == res[i]["seen"] == w.emitted
        assert w.service.delivered == sum(1 for f in owner.values() if f == i) * per_flow
    assert st.emitted == st.delivered == len(frames)
    assert wait_gone(pool.pids, 2.0) == []


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_async_target(lab: Lab, loop: str) -> None:
    nflows, per_flow = 16, 10
    frames = flows(lab, nflows, per_flow)
    with nc.WorkerPool(wt.record_async, lab.a, 2, loop=loop, capture=RING) as pool:
        send_in_order(lab, frames)
        got = collect(pool, len(frames))
    check_split(got, nflows, per_flow)
    res = pool.results()
    assert {r["loop"] for r in res} == {loop}
    assert sum(r["seen"] for r in res) == len(frames)
    assert pool.stats().balanced


def test_results_through_async_faces(lab: Lab) -> None:
    import trio

    frames = flows(lab, 8, 5)

    async def main() -> list[Any]:
        got: list[Any] = []
        with nc.WorkerPool(wt.record, lab.a, 2, capture=RING) as pool:
            send_in_order(lab, frames)
            async with pool.channel() as rx:
                with trio.move_on_after(10):
                    async for obj in rx:
                        got.append(obj)
                        if len(got) == len(frames):
                            break
        return got

    check_split(trio.run(main), 8, 5)


def test_results_queue_drop_policy_counts_what_it_drops(lab: Lab) -> None:
    nflows, per_flow = 16, 25
    frames = flows(lab, nflows, per_flow)
    with nc.WorkerPool(wt.record, lab.a, 2, capacity=10, overflow="drop", capture=RING) as pool:
        send_in_order(lab, frames)
        deadline = time.monotonic() + 10
        while pool.stats().emitted < len(frames) and time.monotonic() < deadline:
            time.sleep(0.05)  # nobody reads: runs of results are dropped at the full queue
    st = pool.stats()
    assert st.emitted == len(frames) and st.queue_drops > 0
    assert st.queued + st.delivered == len(frames) - st.queue_drops
    assert st.balanced
    assert pool.overflow is nc.Overflow.DROP and pool.capacity == 10


def test_killed_worker_is_reported_within_a_second(lab: Lab) -> None:
    pool = nc.WorkerPool(wt.idle, lab.a, 2, capture=RING)
    with pool:
        hello = collect(pool, 2)
        assert sorted(h[1] for h in hello) == [0, 1]
        victim = pool.pids[1]
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        with pytest.raises(nc.ServiceError) as ei:
            while True:
                pool.get(2.0)
        took = time.monotonic() - t0
    assert took < 1.0, took
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError)
    assert (err.worker, err.pid, err.signal, err.exitcode) == (1, victim, "SIGKILL", -signal.SIGKILL)
    assert "SIGKILL" in str(err)
    assert pool.worker_errors[1] is err and pool.worker_errors[0] is None
    # The other worker was stopped cleanly and returned.
    assert pool.results()[0] == 0
    assert wait_gone(pool.pids, 2.0) == []


def test_worker_exception_travels_with_its_traceback(lab: Lab) -> None:
    got = []
    with nc.WorkerPool(wt.fail_on_first, lab.a, 2, capture=RING) as pool:
        with pytest.raises(nc.ServiceError) as ei:
            while True:
                got.append(pool.get(5.0))
    assert got == [("before", 1)]
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError) and err.worker == 1 and err.signal is None
    assert err.exitcode == 1
    assert err.traceback is not None and "fail_on_first" in err.traceback
    assert "ValueError: boom in worker 1" in str(err)


def test_start_failure_raises_and_stops_the_rest(lab: Lab) -> None:
    # A filter the kernel accepts in the parent's check but a worker cannot
    # open is hard to make; an interface removed between check and start is not.
    pool = nc.WorkerPool(wt.idle, lab.a, 2, capture=RING)
    lab.ip("link", "del", lab.a)
    with pytest.raises(nc.WorkerError) as ei:
        pool.start()
    assert "InterfaceNotFoundError" in str(ei.value) or "no such" in str(ei.value)
    assert not pool.running
    assert wait_gone(pool.pids, 2.0) == []


def test_stop_leaves_no_process_socket_or_namespace(lab_factory: type[Lab]) -> None:
    lab = lab_factory()
    with lab.inside():
        before = descendants()
        pool = nc.WorkerPool(wt.idle, lab.a, 2, capture=RING)
        pool.start()
        assert packet_sockets_on(lab.a) == 2
        assert set(pool.pids) <= {pid for pid, _ in descendants()}
        pids = pool.pids
        t0 = time.monotonic()
        pool.stop()
        assert time.monotonic() - t0 < 1.5
        assert wait_gone(pids, 1.0) == []
        assert packet_sockets_on(lab.a) == 0
        assert pool.results() == [0, 1] and pool.stats().balanced
        assert not [p for p in pool._st.procs if p is not None and p.is_alive()]
        assert descendants() == before
    lab.close()
    assert lab.ns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_worker_that_ignores_stop_is_killed(lab: Lab) -> None:
    pool = nc.WorkerPool(wt.stubborn, lab.a, 1, capture=RING)
    pool.start()
    t0 = time.monotonic()
    pool.stop()
    assert time.monotonic() - t0 < 2.5
    assert wait_gone(pool.pids, 1.0) == []
    err = pool.worker_errors[0]
    assert err is not None and err.signal == "SIGKILL" and "had not stopped" in str(err)


def test_two_pools_never_share_a_group(lab: Lab) -> None:
    nflows, per_flow = 8, 5
    frames = flows(lab, nflows, per_flow)
    with nc.WorkerPool(wt.record, lab.a, 2, capture=RING) as p1, \
            nc.WorkerPool(wt.record, lab.a, 2, capture=RING) as p2:
        assert p1.group_id != p2.group_id
        send_in_order(lab, frames)
        g1, g2 = collect(p1, len(frames)), collect(p2, len(frames))
    # Each group gets its own copy of every frame.
    check_split(g1, nflows, per_flow)
    check_split(g2, nflows, per_flow)


def test_cpu_pinning(lab: Lab) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pick = [cpus[-1], cpus[0]]
    with nc.WorkerPool(wt.idle, lab.a, 2, cpus=pick, capture=RING) as pool:
        hello = collect(pool, 2)
    assert {h[1]: h[3] for h in hello} == {0: [pick[0]], 1: [pick[1]]}


_PARENT = """
import sys, time
sys.path.insert(0, {here!r})
from lab import inside
import netring_chan as nc
import worker_targets as wt
if __name__ == "__main__":
    with inside({ns!r}):
        pool = nc.WorkerPool(wt.idle, {ifname!r}, 2, start_method={method!r}, capture=dict(block_size=1 << 16, block_count=4))
        pool.start()
        print(" ".join(map(str, pool.pids)), flush=True)
        for obj in pool:
            pass
        print("stopped", flush=True)
"""


def _parent(lab: Lab, method: str) -> tuple[subprocess.Popen[str], list[int]]:
    code = _PARENT.format(here=HERE, ns=lab.ns, ifname=lab.a, method=method)
    # The same interpreter and environment, so the same netring_chan (an
    # installed one under nox, the tree under PYTHONPATH).
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    pids = [int(x) for x in line.split()]
    assert len(pids) == 2, line
    return proc, pids


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_parent_killed_workers_exit(lab: Lab, method: str) -> None:
    proc, pids = _parent(lab, method)
    try:
        assert not any(gone(p) for p in pids)
        proc.kill()
        proc.wait(5)
        assert wait_gone(pids, 3.0) == []
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


def test_ctrl_c_in_parent_stops_all(lab: Lab) -> None:
    proc, pids = _parent(lab, "forkserver")
    try:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) != 0  # KeyboardInterrupt, after stopping the pool
        assert wait_gone(pids, 2.0) == []
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- arguments (no root needed) -------------------------------------------------------


@pytest.mark.unprivileged
@pytest.mark.parametrize("kw, words", [
    (dict(workers=0), "workers must be an int in 1..256, got 0"),
    (dict(workers=True), "workers must be an int"),
    (dict(mode="bogus"), "mode must be a FanoutMode or one of"),
    (dict(start_method="fork"), "start_method='fork' is refused"),
    (dict(start_method="threads"), "start_method must be 'spawn' or 'forkserver', got 'threads'"),
    (dict(cpus=[0, 99999]), "cpus: CPU 99999 is not available"),
    (dict(cpus=[0]), "cpus must give one CPU per worker (2), got 1"),
    (dict(cpus=["0", 0]), "cpus: a CPU number must be an int, got '0'"),
    (dict(loop="curio"), "loop must be 'asyncio' or 'trio', got 'curio'"),
    (dict(loop="trio"), "loop='trio' needs an async def target"),
    (dict(capture=dict(block_size=1000)), "block_size must be a power of two"),
    (dict(capture=dict(colour="red")), "colour"),
    (dict(capture=dict(fanout=None)), "'fanout' is the pool's to set"),
    (dict(overflow="maybe"), "overflow must be 'block' or 'drop', got 'maybe'"),
    (dict(worker_capacity=0), "worker_capacity must be a positive int (packets), got 0"),
    (dict(worker_overflow="x"), "worker_overflow must be 'block' or 'drop', got 'x'"),
    (dict(capacity=-1), "capacity must be a positive int"),
    (dict(defrag="yes"), "defrag must be a bool"),
    (dict(start_timeout=0), "start_timeout must be a number of seconds > 0"),
])
def test_bad_arguments(kw: dict[str, Any], words: str) -> None:
    args = dict(workers=2)
    args.update(kw)
    with pytest.raises(nc.ConfigError) as ei:
        nc.WorkerPool(wt.idle, "lo", **args)  # type: ignore[arg-type]
    assert words in str(ei.value)


@pytest.mark.unprivileged
def test_bad_target_and_interface() -> None:
    with pytest.raises(nc.ConfigError, match="picklable"):
        nc.WorkerPool(lambda ctx: None, "lo")
    with pytest.raises(nc.ConfigError, match="target must be a callable"):
        nc.WorkerPool("record", "lo")  # type: ignore[arg-type]
    with pytest.raises(nc.InterfaceNotFoundError):
        nc.WorkerPool(wt.idle, "nc-no-such-if0")


def test_two_workers_write_one_parquet_dataset(lab: Lab, tmp_path: Any) -> None:
    """Each worker writes its own Parquet shards into one hive-partitioned
    dataset; DuckDB and pyarrow read it back: every frame once, bytes as
    sent, every flow in exactly one worker's shards, rows = delivered."""
    duckdb = pytest.importorskip("duckdb")
    pads = pytest.importorskip("pyarrow.dataset")
    nflows, per_flow = 24, 15
    frames = flows(lab, nflows, per_flow)
    root = str(tmp_path / "dataset")
    with nc.WorkerPool(wt.write_shards, lab.a, 2, args=(root,), capture=RING) as pool:
        deadline = time.monotonic() + 10
        while pool.stats().capture.delivered == 0 and time.monotonic() < deadline:
            send_in_order(lab, frames[:1])  # the first frame also proves both services run
            time.sleep(0.05)
        send_in_order(lab, frames[1:])
        while pool.stats().capture.delivered < len(frames) and time.monotonic() < deadline:
            time.sleep(0.02)
    res = pool.results()
    delivered = pool.stats().capture.delivered
    assert sum(r["packets"] for r in res) == delivered
    assert all(len(r["files"]) >= 2 for r in res if r["packets"] > 60), "no rotation"

    glob = os.path.join(root, "**", "*.parquet")
    con = duckdb.connect()
    rows = con.execute(f"SELECT worker, data FROM read_parquet('{glob}', hive_partitioning=true)").fetchall()
    assert len(rows) == delivered
    sent = {bytes(f) for f in frames}
    got = [bytes(d) for _, d in rows]
    # Every frame of the test is in the dataset exactly once (the first one
    # may have been sent more than once while waiting for the services).
    tagged = [d for d in got if wt.flow_seq(d) is not None]
    count = Counter(tagged)
    assert set(count) == sent
    assert all(n == 1 for d, n in count.items() if d != frames[0])
    owner: dict[int, set[int]] = defaultdict(set)
    for worker, d in rows:
        fs = wt.flow_seq(bytes(d))
        if fs is not None:
            owner[fs[0]].add(int(worker))
    assert sorted(owner) == list(range(nflows))
    assert all(len(ws) == 1 for ws in owner.values()), owner
    assert {w for ws in owner.values() for w in ws} == {0, 1}

    table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == delivered
    assert sorted(table.column("data").to_pylist()) == sorted(got)


# -- a sync target reads its ring in its own thread -------------------------------------


@pytest.mark.parametrize("how", ["packets", "batches", "async"])
def test_sync_target_reads_without_a_copy_out_thread(lab: Lab, how: str) -> None:
    """A sync target's worker has its main thread and its control thread only,
    while it reads; an async target's service keeps its thread (the control:
    the check can tell them apart)."""
    frames = flows(lab, 4, 5)
    target, args = (wt.report_threads_async, ()) if how == "async" else (wt.report_threads, (how,))
    with nc.WorkerPool(target, lab.a, 1, args=args, capture=RING) as pool:
        send_in_order(lab, frames)
        got = collect(pool, 1)
    assert len(got) == 1, got
    _, _, names, count = got[0]
    if how == "async":
        assert f"w0-{lab.a}" in names, names
    else:
        assert (names, count) == (["MainThread", "w0-control"], 2)
    st = pool.stats()
    assert st.balanced and pool.results() == [len(frames)] == [st.capture.delivered]


@pytest.mark.parametrize("how", ["packets", "batches"])
def test_sync_target_accounting_is_exact_with_packets_left_unread(lab: Lab, how: str) -> None:
    """Break out of the iteration (mid-batch for packets), leave more in the
    ring; after a clean stop every packet is delivered or queued, exactly."""
    n1, n2, k = 40, 30, 3
    first, more = flows(lab, 1, n1), flows(lab, 2, n2 // 2)
    # A long block timeout: the first frames land in one block, so k packets end mid-batch.
    ring = dict(RING, block_timeout_ms=150)
    with nc.WorkerPool(wt.read_some, lab.a, 1, args=(n1, k, how), capture=ring) as pool:
        send_in_order(lab, first)
        got = collect(pool, 1)
        assert len(got) == 1, got
        read = got[0][1]
        assert read == k if how == "packets" else 0 < read <= n1
        # Never read: swept into the queue at stop. Stopped at once, while
        # the block they are in is still open: the worker's last report must
        # wait for the sweep (up to two block timeouts).
        send_in_order(lab, more)
    st = pool.stats()
    w = st.workers[0]
    assert w.final and w.exitcode == 0 and pool.results() == [read]
    c = st.capture
    assert c.kernel_packets == c.delivered + c.kernel_drops + c.queue_drops + c.queued + c.lost, c
    assert (c.kernel_packets, c.delivered, c.queued, c.kernel_drops, c.queue_drops, c.lost) == \
        (n1 + n2, read, n1 + n2 - read, 0, 0, 0)


def test_stop_is_prompt_while_a_sync_target_iterates_an_idle_ring(lab: Lab) -> None:
    pool = nc.WorkerPool(wt.idle_until_stopped, lab.a, 2, capture=RING)
    with pool:
        assert sorted(collect(pool, 2)) == [("hello", 0), ("hello", 1)]
        time.sleep(0.3)  # both targets wait in their rings now
        t0 = time.monotonic()
    took = time.monotonic() - t0
    ends = pool.results()
    assert all(isinstance(t, float) for t in ends), ends
    # The iterations ended within the poll interval and the ring's sweep of the stop.
    assert max(ends) - t0 < 0.5, [t - t0 for t in ends]
    assert took < 1.5
    st = pool.stats()
    assert st.balanced and all(w.final for w in st.workers)


def test_a_plain_target_asking_for_an_async_face_is_told_what_to_do(lab: Lab) -> None:
    with nc.WorkerPool(wt.sync_asks_for_a_loop, lab.a, 1, capture=RING) as pool:
        with pytest.raises(nc.ServiceError) as ei:
            pool.get(5.0)
    err = ei.value.__cause__
    assert isinstance(err, nc.WorkerError) and "ConfigError" in str(err)
    assert "'sync_asks_for_a_loop' is a plain function" in str(err) and "async def" in str(err), str(err)


def test_a_target_that_never_reads_leaves_its_ring_counted(lab: Lab) -> None:
    """The target never reads, so its service never starts: at stop what the
    ring holds is swept into the queue and counted, as for a started one."""
    n = 24
    with nc.WorkerPool(wt.never_read, lab.a, 1, args=(n,), capture=RING) as pool:
        send_in_order(lab, flows(lab, 3, n // 3))
        assert collect(pool, 1) == [("held", n)]
    st = pool.stats()
    c = st.capture
    assert st.workers[0].final and pool.results() == [0]
    assert c.balanced and (c.kernel_packets, c.delivered, c.queued) == (n, 0, n), c
