"""Regression tests for failures found by trying the library as a hostile user.

Each test failed before its fix: stop() from a signal handler deadlocked; a
NUL inside a filter expression silently widened the filter; AsyncInjector
leaked its ring when the interface had vanished; nothing capped a ring's
locked memory; the bridge lost frames uncounted when its callback raised.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time

import pytest
import trio

from capture_util import fd_count
from inject_helpers import Receiver, seq_frame
from lab import Lab, sh
import netring_chan as nc

pytestmark = pytest.mark.privileged


def _run_in(lab: Lab, code: str, *args: str, timeout: float = 15.0) -> str:
    """Run ``code`` in a fresh interpreter inside the lab namespace (a hang is
    contained: the process is killed and the test fails)."""
    try:
        out = subprocess.run(["ip", "netns", "exec", lab.ns, sys.executable, "-c", textwrap.dedent(code),
                              *args], capture_output=True, text=True, timeout=timeout,
                             env={**os.environ, "PYTHONWARNINGS": "error"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung for {timeout} s: {e.stdout!r} {e.stderr!r}")
    assert out.returncode == 0, out.stderr
    return out.stdout


# -- 1. stop() from a signal handler -----------------------------------------------------

_CAPTURE_SIGNAL = """
    import signal, sys, time
    import netring_chan as nc
    iface, face = sys.argv[1], sys.argv[2]
    svc = nc.CaptureService(nc.Capture(iface, block_timeout_ms=5), capacity=1000)
    signal.signal(signal.SIGTERM, lambda *a: svc.stop())   # the usual graceful shutdown
    svc.start()
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    signal.signal(signal.SIGALRM, lambda *a: signal.raise_signal(signal.SIGTERM))
    t0 = time.monotonic()
    try:
        if face == "get":
            while True:
                svc.get()
        elif face == "iter":
            for _ in svc:
                pass
        else:
            while True:
                svc.get_batch()
    except nc.ClosedError:
        pass
    dt = time.monotonic() - t0
    time.sleep(0.2)  # let the stop finish in its helper thread
    print(round(dt, 3), svc.running, svc.stats().balanced)
"""


@pytest.mark.parametrize("face", ["get", "iter", "batch"])
def test_stop_from_a_signal_handler_while_the_consumer_waits(lab: Lab, face: str) -> None:
    dt, running, balanced = _run_in(lab, _CAPTURE_SIGNAL, lab.a, face).split()
    assert float(dt) < 1.5 and running == "False" and balanced == "True"


_INJECT_SIGNAL = """
    import signal, sys, time
    import netring_chan as nc
    svc = nc.InjectService(nc.Injector(sys.argv[1], frame_count=2), capacity=4)
    signal.signal(signal.SIGTERM, lambda *a: svc.stop())
    signal.signal(signal.SIGALRM, lambda *a: signal.raise_signal(signal.SIGTERM))
    frame = b"\\xff" * 6 + b"\\x02\\0\\0\\0\\0\\x01" + b"\\x88\\xb5" + bytes(986)
    with svc:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        t0 = time.monotonic()
        try:
            while True:
                svc.send(frame)    # blocks: the ring is held by a slow qdisc, the queue fills
        except nc.ClosedError:
            pass
        dt = time.monotonic() - t0
    time.sleep(1.2)
    st = svc.stats()
    print(round(dt, 3), st.balanced, st.discarded > 0)
"""


def test_stop_from_a_signal_handler_while_a_producer_waits(lab: Lab) -> None:
    lab.ip("link", "set", lab.a, "up")
    sh("ip", "netns", "exec", lab.ns, "tc", "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "10kbit",
       "burst", "2kb", "limit", "1mb")
    dt, balanced, discarded = _run_in(lab, _INJECT_SIGNAL, lab.a).split()
    assert float(dt) < 1.5 and balanced == "True" and discarded == "True"


# -- 2. a NUL inside a filter expression -------------------------------------------------


def test_a_nul_in_a_filter_expression_is_refused(lab: Lab) -> None:
    base = fd_count()
    for bad in ("tcp\0port 80", "ether proto 0x88b5\0"):
        with pytest.raises(nc.FilterError, match="NUL"):
            nc.compile_filter(bad)
        with pytest.raises(nc.FilterError, match="NUL"):
            nc.Capture(lab.a, filter=bad)
        with nc.Capture(lab.a) as cap, pytest.raises(nc.FilterError, match="NUL"):
            cap.set_filter(bad)
    assert fd_count() == base


# -- 3. AsyncInjector when the interface vanished ----------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_async_injector_releases_its_ring_after_the_interface_vanished(lab: Lab, loop: str) -> None:
    sh("ip", "netns", "exec", lab.ns, "tc", "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "10kbit",
       "burst", "2kb", "limit", "1mb")
    base = fd_count()
    holder: list[nc.AsyncInjector] = []

    async def main() -> None:
        async with nc.AsyncInjector(lab.a, frame_count=8, drain_timeout=5.0) as inj:
            holder.append(inj)
            await inj.send_many([seq_frame(i, 1000) for i in range(8)])  # stuck behind the qdisc
            lab.ip("link", "del", lab.a)

    t0 = time.monotonic()
    try:
        asyncio.run(main()) if loop == "asyncio" else trio.run(main)
    except nc.RingError:
        pass  # the interface is gone: saying so is fine, leaking is not
    assert time.monotonic() - t0 < 3.0
    assert holder[0].closed and holder[0].injector.closed
    assert fd_count() == base


# -- 4. a ceiling on ring memory ---------------------------------------------------------


def test_rings_beyond_a_share_of_memory_are_refused_and_can_be_allowed(lab: Lab) -> None:
    base = fd_count()
    with pytest.raises(nc.ConfigError, match=r"4096 x 4194304 = 17179869184 bytes.*max_ring_bytes="):
        nc.Capture(lab.a, block_size=4 << 20, block_count=4096)
    with pytest.raises(nc.ConfigError, match="max_ring_bytes=1048576"):
        nc.Capture(lab.a, block_size=1 << 20, block_count=2, max_ring_bytes=1 << 20)
    with pytest.raises(nc.ConfigError, match="slots.*max_ring_bytes="):
        nc.Injector(lab.a, frame_size=1 << 20, frame_count=1 << 20)
    with pytest.raises(nc.ConfigError, match="max_ring_bytes must be a positive int"):
        nc.Capture(lab.a, max_ring_bytes=True)
    with nc.Capture(lab.a, block_size=1 << 20, block_count=2, max_ring_bytes=2 << 20) as cap:
        assert cap.block_count == 2
    assert fd_count() == base


# -- 5. the bridge's accounting when its callback raises --------------------------------


@pytest.mark.parametrize("fail_at", [0, 3])
def test_bridge_counts_every_frame_when_the_callback_raises(lab_factory: type[Lab], fail_at: int) -> None:
    lab = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = lab.ifaces
    sent = [seq_frame(i, 200) for i in range(10)]
    seen: list[int] = []

    def cb(pkt: nc.Packet, d: nc.BridgeDirection) -> None:
        seq = int.from_bytes(bytes(pkt.data[14:18]), "big")
        seen.append(seq)
        if seq == fail_at:
            raise KeyError(f"callback failed at {seq}")

    with lab.inside(), Receiver(b1) as rx:
        with nc.Bridge(a0, a1, cb, capture_options={"block_timeout_ms": 50}) as br:
            with lab.sender(b0) as s:
                for f in sent:
                    s.send(f)
            time.sleep(0.2)  # one block holds them all (50 ms timer)
            with pytest.raises(KeyError):
                br.run_for(2.0)
            st = br.stats().a_to_b
        got = rx.wait_for(fail_at, timeout=2.0)
    assert st.balanced, st
    assert st.forwarded == fail_at and st.lost >= 1 and st.received == st.forwarded + st.lost
    assert got == sent[:fail_at]  # what the callback passed before failing still went out
    assert seen[-1] == fail_at


# -- process boundaries -------------------------------------------------------------------

_FORK = """
    import os, sys, warnings
    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
    import netring_chan as nc
    iface = sys.argv[1]
    frame = b"\\xff" * 6 + b"\\x02\\0\\0\\0\\0\\x01" + b"\\x88\\xb5" + bytes(46)
    cap = nc.Capture(iface, block_timeout_ms=5)
    svc = nc.CaptureService(nc.Capture(iface, block_timeout_ms=5)).start()
    inj = nc.Injector(iface)
    isvc = nc.InjectService(nc.Injector(iface)).start()
    held = None
    inj.send(frame, flush=True)
    while held is None:
        held = cap.next_batch_blocking(1.0)   # a block the parent holds across the fork
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        out = []
        for name, f in [("Capture", cap.next_batch), ("stats", cap.stats), ("service", lambda: svc.get(0.1)),
                        ("service stats", svc.stats), ("Injector", lambda: inj.send(frame)),
                        ("InjectService", lambda: isvc.send(frame))]:
            try:
                f()
                out.append(name + ":no-error")
            except nc.ClosedError as e:
                out.append(name + (":ok" if "fork" in str(e) else ":" + str(e)))
        del held                              # the child's copy: must not release the parent's block
        cap.close(); svc.stop(); inj.close(); isvc.stop()
        os.write(w, " ".join(out).encode())
        os._exit(0)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    child = os.read(r, 4096).decode()
    # The parent is undisturbed: its held block is still its own, everything works.
    data = bytes(held[0].data)
    held.release()
    inj.send(frame, flush=True)
    ok_send = inj.wait_drained(1.0)
    got = svc.get(2.0)
    cap.close(); inj.close(); isvc.stop(); svc.stop()
    print(status, child, data == frame, ok_send, bytes(got.data) == frame, svc.stats().balanced)
"""


def test_a_forked_child_gets_a_clear_error_and_the_parent_is_undisturbed(lab: Lab) -> None:
    lab.ip("link", "set", lab.b, "promisc", "on")
    out = _run_in(lab, _FORK, lab.a).split()
    assert out[0] == "0", out
    child = " ".join(out[1:-4])
    for name in ("Capture", "stats", "service", "service stats", "Injector", "InjectService"):
        assert f"{name}:ok" in child, child
    assert out[-4:] == ["True", "True", "True", "True"], out


def test_zero_copy_views_say_why_they_do_not_pickle() -> None:
    import pickle

    from netring_chan.testing import MemorySource

    with MemorySource([seq_frame(i, 60) for i in range(3)]) as src:
        batch = src.next_batch()
        assert batch is not None
        with batch:
            for obj, use in ((batch, "to_owned"), (batch[0], "to_owned")):
                with pytest.raises(TypeError, match=use):
                    pickle.dumps(obj)
            owned = pickle.loads(pickle.dumps(batch.to_owned()))
        assert [p.data for p in owned] == [seq_frame(i, 60) for i in range(3)]


# -- one cause, one error ------------------------------------------------------------------


def test_a_vanished_interface_reads_the_same_everywhere(lab_factory: type[Lab]) -> None:
    """Capture, injection and the bridge all report a deleted interface as
    RingError(ENETDOWN) 'interface went down or was removed'."""
    import errno

    errors: list[BaseException] = []
    lab = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = lab.ifaces
    with lab.inside():
        cap = nc.Capture(a0, block_timeout_ms=5)
        inj = nc.Injector(a0, frame_count=4)
        br = nc.Bridge(a1, b1)
        lab.ip("link", "del", a0)
        lab.ip("link", "del", a1)
        try:
            cap.next_batch_blocking(1.0)
        except nc.RingError as e:
            errors.append(e)
        try:
            inj.send(seq_frame(0, 60), flush=True)
            inj.flush()
        except nc.RingError as e:
            errors.append(e)
        try:
            br.run_for(1.0)
        except nc.RingError as e:
            errors.append(e)
        for o in (cap, inj, br):
            o.close()
    assert len(errors) == 3, errors
    for e in errors:
        assert isinstance(e, nc.RingError) and e.errno == errno.ENETDOWN, repr(e)
        assert "interface went down or was removed" in str(e), str(e)
