"""WorkerPool under review: the failures a user of multiprocessing would try."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

import netring_chan as nc
import worker_targets as wt
from lab import Lab
from test_workers import HERE, RING, wait_gone


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
