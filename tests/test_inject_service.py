"""Injection service (``InjectService``) against the real kernel.

Frames are sent from ``lab.a`` by the service and checked on ``lab.b`` with a
stdlib AF_PACKET socket (``Receiver``), byte for byte and in order. The
service's counters are compared with what the producers observed (return
values, exceptions) and with what arrived, never taken on trust. A
rate-limited qdisc (tbf) on ``lab.a`` keeps skbs, and so ring slots, alive:
with a two-slot ring it makes the ring (and then the queue) really fill.
"""

from __future__ import annotations

import asyncio
import gc
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest
import trio

from inject_helpers import SIZES, Receiver, loss_report, seq_frame, softnet_drops
from lab import Lab, sh
from service_checks import finished, our_threads
import netring_chan as nc


def tc(lab: Lab, *args: str) -> None:
    sh("ip", "netns", "exec", lab.ns, "tc", *args)


def slow_ring(lab: Lab, rate: str = "10kbit") -> None:
    """A qdisc that lets ~``rate`` through: a small ring stays full."""
    tc(lab, "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", rate, "burst", "2kb", "limit", "1mb")


def many(n: int, start: int = 0) -> list[bytes]:
    return [seq_frame(i, SIZES[i % len(SIZES)]) for i in range(start, start + n)]


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


# -- each face delivers every frame, byte-exact and in order ---------------------------------


def test_sync_face_sends_every_frame_in_order(lab: Lab) -> None:
    before = fds()
    frames = many(300)
    sn = softnet_drops()
    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=16), capacity=40, name="nc-is-sync")
        with svc:
            assert [t.name for t in our_threads(svc)] == [f"nc-is-sync-{lab.a}"]
            for f in frames[:100]:
                assert svc.send(f) is True
            buf = bytearray(frames[100])
            assert svc.send(buf)
            buf[:] = bytes(len(buf))  # reused by the producer: the queued copy is unaffected
            for f in frames[101:150]:
                while True:
                    try:
                        assert svc.send_nowait(memoryview(f))
                        break
                    except queue.Full:
                        time.sleep(0.001)
            assert svc.send_many(iter(frames[150:])) == 150
        # Leaving the block drained: everything went before stop returned.
        st = finished(svc, submitted=300, sent=300, rejected=0, queue_drops=0, discarded=0)
        got = rx.wait_for(300)
        assert got == frames, loss_report(lab, got, frames, sn)
        assert rx.settle(0.1) == frames  # nothing twice
    assert st.peak_queued <= 40
    assert fds() <= before


def test_asyncio_face_waits_for_room_without_blocking_the_loop(lab: Lab) -> None:
    frames = many(300)
    slow_ring(lab, "20mbit")  # ~0.1 s for the burst: the 8-frame queue fills
    sn = softnet_drops()

    async def main(svc: nc.InjectService) -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1

        t = asyncio.create_task(ticker())
        async with svc.asyncio() as tx:
            for f in frames[:200]:
                assert await tx.send(f)
            assert await tx.send_many(frames[200:]) == 100
        t.cancel()
        return ticks

    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=4), capacity=8, name="nc-is-aio",
                               drain_timeout=5.0)
        ticks = asyncio.run(main(svc))
        st = finished(svc, submitted=300, sent=300, queue_drops=0, discarded=0)
        got = rx.wait_for(300)
    assert got == frames, loss_report(lab, got, frames, sn)
    # The queue stayed bounded, so the producer waited, and other tasks ran meanwhile.
    assert st.peak_queued <= 8 and ticks > 0
    assert st.ring_full > 0  # the sender thread did wait for ring slots


def test_trio_face_sends_every_frame_in_order(lab: Lab) -> None:
    frames = many(300)
    slow_ring(lab, "20mbit")
    sn = softnet_drops()

    async def main(svc: nc.InjectService) -> None:
        async with svc.trio() as tx:
            for f in frames[:200]:
                assert await tx.send(f)
            assert await tx.send_many(frames[200:]) == 100
        with pytest.raises(trio.ClosedResourceError):
            await tx.send(frames[0])

    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=4), capacity=8, name="nc-is-trio",
                               drain_timeout=5.0)
        trio.run(main, svc)
        st = finished(svc, submitted=300, sent=300, queue_drops=0, discarded=0)
        got = rx.wait_for(300)
    assert got == frames, loss_report(lab, got, frames, sn)
    assert st.peak_queued <= 8


def test_two_injectors_share_the_queue(lab_factory: Callable[..., Lab]) -> None:
    world = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = world.ifaces
    frames = many(400)
    with world.inside():
        with Receiver(b0) as r0, Receiver(b1) as r1:
            svc = nc.InjectService([nc.Injector(a0, frame_count=8), nc.Injector(a1, frame_count=8)],
                                   capacity=64, name="nc-is-two")
            with svc:
                assert sorted(t.name for t in our_threads(svc)) == [f"nc-is-two-{a0}", f"nc-is-two-{a1}"]
                for f in frames:
                    svc.send(f)
            finished(svc, submitted=400, sent=400, discarded=0)
            wait_for(lambda: len(r0.frames) + len(r1.frames) >= 400)
            g0, g1 = r0.settle(0.1), r1.settle(0.1)
    # Each frame went out exactly once, on one of the two, in order on each.
    assert sorted(g0 + g1) == sorted(frames)
    pos = {f: i for i, f in enumerate(frames)}
    for g in (g0, g1):
        assert [pos[f] for f in g] == sorted(pos[f] for f in g)


# -- overflow, stop and drain ----------------------------------------------------------------


def test_drop_policy_counts_what_it_dropped(lab: Lab) -> None:
    frames = [seq_frame(i, 1000) for i in range(200)]
    slow_ring(lab, "2mbit")  # ~250 frames/s: the 10-frame queue overflows at once
    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=10, overflow="drop")
        with svc:
            results = [svc.send(f) for f in frames]
            svc.stop(drain=True, timeout=5.0)
        kept = [f for f, ok in zip(frames, results) if ok]
        st = finished(svc, submitted=200, queue_drops=results.count(False), discarded=0,
                      sent=len(kept))
        got = rx.wait_for(len(kept))
        assert rx.settle(0.1) == got
    assert 0 < results.count(False) < 200
    assert got == kept  # exactly the admitted frames, in order
    assert st.peak_queued <= 10


def test_block_policy_send_timeout_and_send_nowait(lab: Lab) -> None:
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=5)
    with svc:
        ok = 0
        with pytest.raises(queue.Full):
            while True:
                svc.send(seq_frame(ok, 1000), timeout=0.1)
                ok += 1
        with pytest.raises(queue.Full):
            svc.send_nowait(seq_frame(0, 1000))
        assert ok >= 5
        svc.stop()
    # The two refused sends were never submitted.
    st = finished(svc, submitted=ok, queue_drops=0)
    assert st.discarded >= 5


def test_stop_with_full_queue_and_stalled_ring_is_prompt(lab: Lab) -> None:
    before = fds()
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=20)
    admitted = 0
    errors: list[BaseException] = []

    def producer() -> None:
        nonlocal admitted
        try:
            while True:
                svc.send(seq_frame(admitted, 1000))
                admitted += 1
        except BaseException as e:  # noqa: BLE001 - checked by the test thread
            errors.append(e)

    with svc:
        p = threading.Thread(target=producer)
        p.start()
        wait_for(lambda: svc.stats().queued == 20)
        time.sleep(0.1)  # the producer now waits for room, the sender thread for ring slots
        assert p.is_alive()
        t0 = time.monotonic()
        svc.stop()
        dt = time.monotonic() - t0
        p.join(1.0)
    assert dt < 1.0, dt
    assert not p.is_alive() and len(errors) == 1 and isinstance(errors[0], nc.ClosedError)
    st = finished(svc, submitted=admitted, queue_drops=0, rejected=0)
    assert st.discarded >= 20  # at least the full queue was given up, and counted
    with pytest.raises(nc.ClosedError):
        svc.send(seq_frame(0, 100))
    assert fds() <= before


def test_drain_is_bounded_by_its_timeout(lab: Lab) -> None:
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=50)
    with svc:
        assert svc.send_many(seq_frame(i, 1000) for i in range(50)) == 50
        t0 = time.monotonic()
        svc.stop(drain=True, timeout=0.3)
        dt = time.monotonic() - t0
    assert 0.3 <= dt < 1.0, dt
    st = finished(svc, submitted=50)
    assert st.discarded > 0 and st.sent < 50


def test_drain_sends_what_was_queued_and_discard_does_not(lab: Lab) -> None:
    frames = [seq_frame(i, 1000) for i in range(100)]
    slow_ring(lab, "4mbit")  # ~500 frames/s: the queue still holds most at stop
    sn = softnet_drops()
    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=100)
        with svc:
            assert svc.send_many(frames) == 100
            assert svc.stats().sent < 50  # most are still waiting at stop
            svc.stop(drain=True, timeout=5.0)
        finished(svc, submitted=100, sent=100, discarded=0)
        got = rx.wait_for(100)
        assert got == frames, loss_report(lab, got, frames, sn)

        more = [seq_frame(i, 1000) for i in range(100, 200)]
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=100)
        with svc:
            assert svc.send_many(more) == 100
            assert svc.stats().sent < 50
            svc.stop()
        st = finished(svc, submitted=100)
        got = rx.settle(0.3)[100:]
    # Discarded frames never left; frames the kernel had taken may still
    # leave after stop (counted as discarded: never confirmed), in order.
    assert st.discarded > 50
    assert got == more[:len(got)]
    assert st.sent <= len(got) <= st.sent + 2  # at most the two ring slots were unconfirmed


def test_wait_drained_without_stopping(lab: Lab) -> None:
    frames = [seq_frame(i, 1000) for i in range(180)]
    slow_ring(lab, "4mbit")  # ~500 frames/s: 60 frames take ~0.1 s
    sn = softnet_drops()
    with Receiver(lab.b) as rx:
        svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=100)
        with svc:
            assert svc.send_many(frames[:60]) == 60
            assert svc.wait_drained(0.01) is False  # still going
            assert svc.wait_drained(5.0) is True
            assert svc.stats().sent == 60 and svc.running

            async def aio() -> bool:
                tx = svc.asyncio()  # not `async with`: that would stop the service
                assert await tx.send_many(frames[60:120]) == 60
                return await tx.wait_drained(5.0)

            assert asyncio.run(aio())
            assert svc.stats().sent == 120

            async def tr() -> None:
                async with svc.trio() as tx:
                    assert await tx.send_many(frames[120:]) == 60
                    assert await tx.wait_drained(5.0)
                    assert svc.stats().sent == 180 and svc.running

            trio.run(tr)
        finished(svc, submitted=180, sent=180, discarded=0)
        got = rx.wait_for(180)
    assert got == frames, loss_report(lab, got, frames, sn)


def test_wait_drained_ends_when_stopped(lab: Lab) -> None:
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=50)
    with svc:
        svc.send_many(seq_frame(i, 1000) for i in range(20))
        assert svc.wait_drained(0.1) is False  # the ring is stalled
        threading.Timer(0.2, svc.stop).start()
        t0 = time.monotonic()
        with pytest.raises(nc.ClosedError, match="discarded"):
            svc.wait_drained()
        assert time.monotonic() - t0 < 1.5
    assert finished(svc, submitted=20).discarded > 0


# -- errors reach the producer -------------------------------------------------------------


def _check_error(err: BaseException, svc: nc.InjectService, ifname: str) -> None:
    assert isinstance(err, nc.ServiceError)
    assert isinstance(err.__cause__, nc.RingError)
    assert ifname in str(err)
    assert svc.error is err.__cause__


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_interface_deleted_raises_in_the_producer(lab: Lab, face: str) -> None:
    before = fds()
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=8), capacity=16)
    deleter = threading.Timer(0.2, lab.ip, ("link", "del", lab.a))
    deleter.start()
    submitted = 0
    t0 = time.monotonic()

    if face == "sync":
        with pytest.raises(nc.ServiceError) as ei:
            with svc:
                while time.monotonic() - t0 < 3:
                    svc.send(seq_frame(submitted, 100))
                    submitted += 1
                    time.sleep(0.0005)
    elif face == "asyncio":
        async def aio() -> None:
            nonlocal submitted
            async with svc.asyncio() as tx:
                while time.monotonic() - t0 < 3:
                    await tx.send(seq_frame(submitted, 100))
                    submitted += 1
                    await asyncio.sleep(0.0005)

        with pytest.raises(nc.ServiceError) as ei:
            asyncio.run(aio())
    else:
        async def tr() -> None:
            nonlocal submitted
            async with svc.trio() as tx:
                while time.monotonic() - t0 < 3:
                    await tx.send(seq_frame(submitted, 100))
                    submitted += 1
                    await trio.sleep(0.0005)

        with pytest.raises(nc.ServiceError) as ei:
            trio.run(tr)
    assert time.monotonic() - t0 < 1.5
    assert submitted > 0
    _check_error(ei.value, svc, lab.a)
    svc.stop()
    finished(svc, submitted=submitted)
    with pytest.raises(nc.ServiceError):  # every later submission gets it too
        svc.send_many([seq_frame(0, 100)])
    deleter.join()  # its `ip` subprocess's pipes are fds too
    assert fds() <= before


def test_error_raised_by_a_draining_stop(lab: Lab) -> None:
    """Frames queued before the failure are not silently lost: stop(drain=True) raises."""
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=50)
    with svc:
        assert svc.send_many(seq_frame(i, 1000) for i in range(30)) == 30
        lab.ip("link", "del", lab.a)
        wait_for(lambda: svc.error is not None, 2.0)
        with pytest.raises(nc.ServiceError):
            svc.wait_drained(1.0)
        with pytest.raises(nc.ServiceError) as ei:
            svc.stop(drain=True)
    _check_error(ei.value, svc, lab.a)
    st = finished(svc, submitted=30)
    assert st.discarded > 0


# -- cancellation ------------------------------------------------------------------------------


def test_asyncio_cancelled_send_queues_nothing(lab: Lab) -> None:
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=4)

    async def main() -> None:
        async with svc.asyncio() as tx:
            while svc.stats().queued < 4:  # paced, so the thread takes what it can first
                await tx.send(seq_frame(0, 1000))
                await asyncio.sleep(0.01)
            before = svc.stats()
            task = asyncio.create_task(tx.send(seq_frame(1, 1000)))
            await asyncio.sleep(0.05)
            assert not task.done()  # waiting for room
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = svc.stats()
            assert after.submitted == before.submitted
            raise KeyError("leave the block")  # leaving on an exception discards

    with pytest.raises(KeyError):
        asyncio.run(main())
    finished(svc)


def test_trio_cancelled_send_queues_nothing(lab: Lab) -> None:
    slow_ring(lab)
    svc = nc.InjectService(nc.Injector(lab.a, frame_count=2), capacity=4, drain_timeout=0.2)

    async def main() -> None:
        async with svc.trio() as tx:
            while svc.stats().queued < 4:
                await tx.send(seq_frame(0, 1000))
                await trio.sleep(0.01)
            before = svc.stats().submitted
            with trio.move_on_after(0.05) as scope:
                await tx.send(seq_frame(1, 1000))
            assert scope.cancelled_caught
            assert svc.stats().submitted == before
            with pytest.raises(trio.WouldBlock):
                tx.send_nowait(seq_frame(1, 1000))
            t0 = time.monotonic()
        # Leaving with frames stuck in a stalled ring: the drain gives up in time.
        assert time.monotonic() - t0 < svc.drain_timeout + 0.5

    trio.run(main)
    assert finished(svc).discarded > 0


# -- bad input and misuse ---------------------------------------------------------------------


def test_bad_frames_raise_at_submit_and_queue_nothing(lab: Lab) -> None:
    svc = nc.InjectService(nc.Injector(lab.a), capacity=10)
    too_long = seq_frame(0, 100) + bytes(1500)  # 1600 > MTU 1500 + 14
    with svc:
        cases: list[tuple[Any, type[Exception], str]] = [
            (b"", ValueError, "empty"),
            (b"\x01" * 10, ValueError, "shorter than"),
            (too_long, ValueError, "1600 bytes exceeds"),
            ("not bytes", TypeError, "bytes-like"),
            (1234, TypeError, "bytes-like.*int"),
            ([1, 2, 3], TypeError, "bytes-like.*list"),
        ]
        for bad, exc, msg in cases:
            with pytest.raises(exc, match=msg):
                svc.send(bad)
            with pytest.raises(exc, match=msg):
                svc.send_nowait(bad)
        with pytest.raises(ValueError, match="frame 2: empty"):
            svc.send_many([seq_frame(0, 100), seq_frame(1, 100), b""])
        with pytest.raises(TypeError, match="iterable of frames"):
            svc.send_many(seq_frame(0, 100))

        async def aio() -> None:
            tx = svc.asyncio()
            with pytest.raises(ValueError, match="empty"):
                await tx.send(b"")
            with pytest.raises(ValueError, match="frame 1: .*exceeds"):
                await tx.send_many([seq_frame(0, 100), too_long])

        async def tr() -> None:
            tx = nc.TrioSendChannel(svc)
            with pytest.raises(TypeError, match="bytes-like"):
                await tx.send(object())  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="empty"):
                tx.send_nowait(b"")

        asyncio.run(aio())
        trio.run(tr)
        assert svc.stats().submitted == 0 and svc.stats().queued == 0
    finished(svc, submitted=0, sent=0)


def test_bad_configuration(lab: Lab) -> None:
    with nc.Injector(lab.a) as inj:
        for kw, msg in [({"capacity": 0}, "capacity"), ({"capacity": 2.5}, "capacity"),
                        ({"overflow": "spill"}, "overflow"), ({"drain_timeout": -1}, "drain_timeout"),
                        ({"poll_interval": 0}, "poll_interval")]:
            with pytest.raises(nc.ConfigError, match=msg):
                nc.InjectService(inj, **kw)
        with pytest.raises(nc.ConfigError, match="twice"):
            nc.InjectService([inj, inj])
        with pytest.raises(nc.ConfigError, match="at least one"):
            nc.InjectService([])
        with pytest.raises(nc.ConfigError, match="not an Injector"):
            nc.InjectService(["eth0"])  # type: ignore[list-item]
    with pytest.raises(nc.ConfigError, match="closed"):
        nc.InjectService(inj)
    svc = nc.InjectService(nc.Injector(lab.a))
    with pytest.raises(nc.ClosedError, match="not started"):
        svc.send(seq_frame(0, 100))
    svc.stop()  # never started: closes its injector
    assert svc.injectors[0].closed
    with pytest.raises(nc.ClosedError, match="stopped"):
        svc.start()


def test_unstopped_service_warns_and_stops(lab: Lab) -> None:
    svc = nc.InjectService(nc.Injector(lab.a), name="nc-is-gc")
    svc.start()
    inj = svc.injectors[0]
    with pytest.warns(ResourceWarning, match="unstopped"):
        del svc
        gc.collect()
    assert inj.closed
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("nc-is-gc")], 1.0)


# -- interpreter exit ---------------------------------------------------------------------------

_EXIT_SCRIPT = """
import sys, threading
import netring_chan as nc
from inject_helpers import seq_frame
svc = nc.InjectService(nc.Injector(sys.argv[1], frame_count=2), capacity=20)
svc.start()
n = int(sys.argv[2])
def produce():
    try:
        for i in range(n):
            svc.send(seq_frame(i, 1000))
    except nc.ClosedError:  # stopped at exit while waiting for room
        pass
threading.Thread(target=produce, daemon=True).start()
print("up", flush=True)
sys.stdin.readline()
"""


@pytest.mark.parametrize("stalled", [False, True])
def test_interpreter_exit_with_running_service(lab: Lab, stalled: bool) -> None:
    """Nothing hangs at exit; frames queued on a working ring are sent on the way out."""
    n = 200 if stalled else 15
    if stalled:
        slow_ring(lab)
    with Receiver(lab.b) as rx:
        env = {**os.environ, "PYTHONWARNINGS": "error",
               "PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, "-c", _EXIT_SCRIPT, lab.a, str(n)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "up\n"
            time.sleep(0.2)  # stalled: the producer thread is blocked on the full queue
            t0 = time.monotonic()
            out, err = proc.communicate("\n", timeout=10)
            dt = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0 and err == "", err
        assert dt < 1.5, dt
        if not stalled:
            assert rx.wait_for(n) == [seq_frame(i, 1000) for i in range(n)]
