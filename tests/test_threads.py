"""The capture service against the real kernel: a veth pair in a private netns.

Frames are crafted and sent by the stdlib AF_PACKET socket of tests/lab.py
(from the b end); the service captures on the a end, bound to the lab
EtherType so nothing else is counted.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import threading
import time
from typing import Any, Callable

import pytest
import trio

from service_checks import our_threads
import netring_chan as nc
from lab import ETH_P_LAB, Lab, frame, mac

pytestmark = pytest.mark.privileged

# Small blocks hand batches over quickly; 10 ms retire timer keeps stop fast.
SMALL = dict(block_size=1 << 16, block_count=8, block_timeout_ms=10, protocol=ETH_P_LAB)
# A tiny ring that fills at once, for back-pressure tests. 4 KiB blocks of
# these 300-400 byte frames hold at most 10 packets, below every capacity used.
TINY = dict(block_size=4096, block_count=2, block_timeout_ms=10, protocol=ETH_P_LAB)


def frames(n: int, start: int = 0, size: int | None = None) -> list[bytes]:
    """Distinct frames; varying sizes unless ``size`` is given."""
    out = []
    for i in range(start, start + n):
        body = i.to_bytes(4, "big")
        ln = size if size is not None else 46 + (i * 37) % 1400
        out.append(frame(mac(1), mac(2), (body * (ln // 4 + 1))[:ln]))
    return out


def service(lab: Lab, n_sources: int = 1, **kw: Any) -> nc.CaptureService:
    opts = dict(SMALL)
    opts.update(kw.pop("ring", {}))
    return nc.CaptureService(nc.Capture(lab.a, **opts), **kw)


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def assert_balanced(svc: nc.CaptureService, sent: int | None = None) -> nc.ServiceStats:
    st = svc.stats()
    assert st.kernel_packets == st.delivered + st.kernel_drops + st.queue_drops + st.queued, st
    assert st.balanced
    if sent is not None:
        assert st.kernel_packets == sent, st
    return st


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


# -- every face receives N frames byte-exact and in order ------------------------------

N = 400


def test_sync_get_exact_in_order(lab: Lab) -> None:
    sent = frames(N)
    svc = service(lab, capacity=4096, name="nc-t-sync")
    with svc:
        assert [t.name for t in our_threads(svc)] == [f"nc-t-sync-{lab.a}"]
        lab.send(sent)
        got = [svc.get(2.0) for _ in range(N)]
        with pytest.raises(queue.Empty):
            svc.get_nowait()
    assert [bytes(p.data) for p in got] == sent
    assert all(p.wire_len == len(f) and p.protocol == ETH_P_LAB for p, f in zip(got, sent))
    st = assert_balanced(svc, N)
    assert st.delivered == N and st.queued == 0 and st.kernel_drops == 0
    assert not our_threads(svc)


def test_sync_iteration_and_batches(lab: Lab) -> None:
    sent = frames(N)
    with service(lab, capacity=4096) as svc:
        lab.send(sent[:200])
        got = []
        for p in svc:
            got.append(bytes(p.data))
            if len(got) == 150:
                break  # mid-batch: the rest goes back to the head of the queue
        lab.send(sent[200:])
        for p in svc:
            got.append(bytes(p.data))
            if len(got) == 250:
                break
        for b in svc.batches(timeout=1.0):
            assert isinstance(b, nc.OwnedBatch)
            got += b.datas()
            if len(got) == N:
                break
    assert got == sent
    st = assert_balanced(svc, N)
    assert st.delivered == N


def test_asyncio_exact_in_order(lab: Lab) -> None:
    sent = frames(N)
    svc = service(lab, capacity=4096)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.asyncio() as rx:
            lab.send(sent[:100])
            got += [bytes((await rx.get()).data) for _ in range(50)]
            lab.send(sent[100:])
            async for p in rx:
                got.append(bytes(p.data))
                if len(got) == 300:
                    break
            while len(got) < N:
                got += (await asyncio.wait_for(rx.get_batch(), 2.0)).datas()
        return got

    assert asyncio.run(main()) == sent
    st = assert_balanced(svc, N)
    assert st.delivered == N
    assert not our_threads(svc)


def test_trio_exact_in_order(lab: Lab) -> None:
    sent = frames(N)
    svc = service(lab, capacity=4096)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.trio() as rx:
            lab.send(sent)
            with trio.fail_after(3):
                got.append(bytes((await rx.receive()).data))
                async for p in rx:
                    got.append(bytes(p.data))
                    if len(got) == 300:
                        break
                while len(got) < N:
                    got += (await rx.receive_batch()).datas()
        with pytest.raises(trio.ClosedResourceError):
            await rx.receive()
        return got

    assert trio.run(main) == sent
    st = assert_balanced(svc, N)
    assert st.delivered == N
    assert not our_threads(svc)


def test_end_of_stream_in_every_face(lab: Lab) -> None:
    """After stop, consumers get what is queued and then the end."""
    sent = frames(30)
    svc = service(lab, capacity=4096)
    svc.start()
    lab.send(sent)
    wait_for(lambda: svc.stats().queued == 30)
    svc.stop()
    assert [bytes(p.data) for p in svc] == sent  # the queued packets, then the end
    with pytest.raises(nc.ClosedError):
        svc.get(1.0)

    async def aio() -> None:
        rx = svc.asyncio()
        with pytest.raises(nc.ClosedError):
            await rx.get()
        assert [p async for p in rx] == []

    async def tr() -> None:
        async with svc.trio() as rx:
            with pytest.raises(trio.EndOfChannel):
                await rx.receive()

    with pytest.raises(nc.ClosedError):
        svc.start()  # no restart
    asyncio.run(aio())
    assert_balanced(svc, 30)


# -- overflow policies and exact accounting ---------------------------------------------


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_block_policy_stalled_consumer(lab: Lab, face: str) -> None:
    """The queue stays within its bound, the kernel drops, stop is prompt, the sum is exact."""
    sent = frames(600, size=300)
    svc = service(lab, capacity=40, overflow="block", ring=TINY)
    svc.start()
    lab.send(sent)
    # Everything the kernel will ever count for these frames is counted once
    # the ring is full and the thread waits for room.
    wait_for(lambda: svc.stats().kernel_packets == 600)
    st = svc.stats()
    assert st.queued <= 40 and st.peak_queued <= 40 and st.kernel_drops > 0

    t0 = time.monotonic()
    if face == "sync":
        svc.stop()
    elif face == "asyncio":
        async def aio() -> None:
            async with svc.asyncio():
                pass  # never reads: closing stops the service with a full queue
        asyncio.run(aio())
    else:
        async def tr() -> None:
            async with svc.trio():
                pass
        trio.run(tr)
    assert time.monotonic() - t0 < 1.0
    assert not our_threads(svc)

    st = assert_balanced(svc, 600)
    assert st.peak_queued <= 40
    assert st.kernel_drops > 0 and st.kernel_freezes > 0 and st.queue_drops == 0
    # What was queued (and what the ring still held at stop) is drained in order.
    rest = [d for b in svc.get_all() for d in b.datas()]
    assert len(rest) == st.queued == 600 - st.kernel_drops
    idx = [int.from_bytes(d[14:18], "big") for d in rest]
    assert idx == sorted(idx)
    assert [bytes(d) for d in rest] == [sent[i] for i in idx]
    st = assert_balanced(svc, 600)
    assert st.queued == 0 and st.delivered == len(rest)


def test_drop_policy_counts_queue_drops(lab: Lab) -> None:
    sent = frames(600, size=300)
    # A ring big enough for all 600 frames: only the queue can drop.
    svc = service(lab, capacity=40, overflow="drop", ring=dict(block_size=4096, block_count=128))
    with svc:
        lab.send(sent)
        wait_for(lambda: (lambda s: s.queued + s.queue_drops == 600)(svc.stats()))
        got = [bytes(p.data) for p in (svc.get(1.0) for _ in range(svc.stats().queued))]
    st = assert_balanced(svc, 600)
    assert st.queue_drops > 0 and st.kernel_drops == 0 and st.peak_queued <= 40
    assert st.delivered == len(got) == 600 - st.queue_drops
    # Whole batches were dropped when they did not fit; what was kept is in order.
    idx = [int.from_bytes(d[14:18], "big") for d in got]
    assert idx == sorted(idx) and [sent[i] for i in idx] == got
    assert idx[:10] == list(range(10))  # the oldest were kept


def test_batch_larger_than_capacity_is_admitted_alone(lab: Lab) -> None:
    sent = frames(50, size=100)
    svc = service(lab, capacity=5, overflow="drop")
    with svc:
        lab.send(sent)
        got: list[bytes] = []
        while len(got) < 50 - svc.stats().queue_drops:
            got += svc.get_batch(1.0).datas()
    st = assert_balanced(svc, 50)
    assert got == sent[:len(got)] or len(got) + st.queue_drops == 50


# -- stop is prompt ----------------------------------------------------------------------


def test_stop_while_idle_in_poll(lab: Lab) -> None:
    before = fds()
    for face in ("sync", "asyncio", "trio"):
        svc = service(lab, capacity=100)
        svc.start()
        time.sleep(0.25)  # the thread sits in poll
        t0 = time.monotonic()
        if face == "sync":
            svc.stop()
        elif face == "asyncio":
            async def aio() -> None:
                async with svc.asyncio():
                    await asyncio.sleep(0.05)
            asyncio.run(aio())
            t0 += 0.05
        else:
            async def tr() -> None:
                async with svc.trio():
                    await trio.sleep(0.05)
            trio.run(tr)
            t0 += 0.05
        assert time.monotonic() - t0 < 1.0, face
        assert not our_threads(svc)
        assert all(s.closed for s in svc.sources)
        assert_balanced(svc, 0)
    assert fds() == before


def test_stop_from_another_thread_wakes_waiting_consumer(lab: Lab) -> None:
    svc = service(lab, capacity=100)
    with svc:
        threading.Timer(0.2, svc.stop).start()
        t0 = time.monotonic()
        with pytest.raises(nc.ClosedError):
            svc.get()  # waits without a timeout
        assert time.monotonic() - t0 < 1.2


def test_ctrl_c_in_sync_consumer_stops_cleanly(lab: Lab) -> None:
    assert threading.current_thread() is threading.main_thread()
    svc = service(lab, capacity=100)
    svc.start()
    lab.send(frames(5))
    got = []
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        for p in svc:
            got.append(p)
    assert time.monotonic() - t0 < 1.5
    assert len(got) == 5
    assert not svc.running and not our_threads(svc)
    assert_balanced(svc, 5)


# -- errors travel -------------------------------------------------------------------------


def _delete_link_soon(lab: Lab, delay: float = 0.2) -> threading.Timer:
    t = threading.Timer(delay, lab.ip, ("link", "del", lab.a))
    t.start()
    return t


def _check_error(err: BaseException, svc: nc.CaptureService) -> None:
    assert isinstance(err, nc.ServiceError)
    assert isinstance(err.__cause__, nc.RingError)
    assert lab_name(svc) in str(err)
    assert "interface went down or was removed" in str(err)


def lab_name(svc: nc.CaptureService) -> str:
    return svc.sources[0].interface  # type: ignore[no-any-return]


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_interface_removed_raises_in_consumer(lab: Lab, face: str) -> None:
    svc = service(lab, capacity=1000)
    sent = frames(10)
    before = fds()
    if face == "sync":
        with svc:
            lab.send(sent)
            got = [bytes(svc.get(1.0).data) for _ in range(10)]
            _delete_link_soon(lab)
            t0 = time.monotonic()
            with pytest.raises(nc.ServiceError) as ei:
                while True:
                    svc.get(3.0)
            assert time.monotonic() - t0 < 1.2
    elif face == "asyncio":
        async def aio() -> tuple[list[bytes], pytest.ExceptionInfo[nc.ServiceError], float]:
            async with svc.asyncio() as rx:
                lab.send(sent)
                got = [bytes((await rx.get()).data) for _ in range(10)]
                _delete_link_soon(lab)
                t0 = time.monotonic()
                with pytest.raises(nc.ServiceError) as ei:
                    async for _ in rx:
                        pass
                return got, ei, time.monotonic() - t0
        got, ei, dt = asyncio.run(aio())
        assert dt < 1.2
    else:
        async def tr() -> tuple[list[bytes], pytest.ExceptionInfo[nc.ServiceError], float]:
            async with svc.trio() as rx:
                lab.send(sent)
                got = [bytes((await rx.receive()).data) for _ in range(10)]
                _delete_link_soon(lab)
                t0 = time.monotonic()
                with pytest.raises(nc.ServiceError) as ei:
                    async for _ in rx:
                        pass
                return got, ei, time.monotonic() - t0
        got, ei, dt = trio.run(tr)
        assert dt < 1.2
    assert got == sent
    _check_error(ei.value, svc)
    assert svc.error is ei.value.__cause__
    assert not our_threads(svc)
    assert fds() <= before  # the socket, eventfd and mapping are gone


def test_error_in_one_source_stops_the_others(lab_factory: Callable[..., Lab]) -> None:
    world = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = world.ifaces
    with world.inside():
        svc = nc.CaptureService([nc.Capture(a0, **SMALL), nc.Capture(a1, **SMALL)], capacity=1000)
        with svc:
            world.send(frames(5), b1)
            assert len(svc.get_batch(1.0)) == 5
            world.ip("link", "del", a0)
            with pytest.raises(nc.ServiceError) as ei:
                svc.get(2.0)
            assert a0 in str(ei.value)
            wait_for(lambda: not our_threads(svc), 1.0)
        assert all(s.closed for s in svc.sources)


# -- cancellation ------------------------------------------------------------------------------


def test_asyncio_task_cancellation(lab: Lab) -> None:
    before = fds()
    sent = frames(20)
    svc = service(lab, capacity=1000)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.asyncio() as rx:
            async def consume() -> None:
                async for p in rx:
                    got.append(bytes(p.data))

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.1)
            lab.send(sent)
            await asyncio.sleep(0.3)
            task.cancel()  # waiting in janus' async get
            with pytest.raises(asyncio.CancelledError):
                await task
            # Nothing was lost to the cancelled wait: more frames still arrive.
            lab.send(frames(3, start=20))
            got += [bytes((await asyncio.wait_for(rx.get(), 2.0)).data) for _ in range(3)]
        return got

    assert asyncio.run(main()) == sent + frames(3, start=20)
    assert not our_threads(svc)
    assert fds() == before
    assert_balanced(svc, 23)


def test_trio_cancel_scope(lab: Lab) -> None:
    before = fds()
    sent = frames(20)
    svc = service(lab, capacity=1000)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.trio() as rx:
            lab.send(sent)
            with trio.move_on_after(0.3) as scope:
                async for p in rx:
                    got.append(bytes(p.data))
            assert scope.cancelled_caught
            lab.send(frames(3, start=20))
            with trio.fail_after(2):
                got += [bytes((await rx.receive()).data) for _ in range(3)]
            with trio.move_on_after(0.05):
                await rx.receive()  # cancelled while waiting for the thread
        return got

    assert trio.run(main) == sent + frames(3, start=20)
    assert not our_threads(svc)
    assert fds() == before
    assert_balanced(svc, 23)


# -- two sources into one service ----------------------------------------------------------


def test_two_interfaces_one_service(lab_factory: Callable[..., Lab]) -> None:
    world = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = world.ifaces
    f0, f1 = frames(100), frames(100, start=1000)
    with world.inside():
        svc = nc.CaptureService([nc.Capture(a0, **SMALL), nc.Capture(a1, **SMALL)],
                                capacity=1000, name="nc-t-two")
        with svc:
            assert sorted(t.name for t in our_threads(svc)) == [f"nc-t-two-{a0}", f"nc-t-two-{a1}"]
            world.send(f0, b0)
            world.send(f1, b1)
            per: dict[int, list[bytes]] = {0: [], 1: []}
            while len(per[0]) + len(per[1]) < 200:
                b = svc.get_batch(2.0)
                per[b.source] += b.datas()
    assert per == {0: f0, 1: f1}
    st = assert_balanced(svc, 200)
    assert [s.packets for s in st.sources] == [100, 100]
    assert [s.name for s in st.sources] == [f"nc-t-two-{a0}", f"nc-t-two-{a1}"]


def test_two_fanout_members_one_service(lab: Lab) -> None:
    fan = nc.Fanout(nc.FanoutMode.LB)
    c0 = nc.Capture(lab.a, fanout=fan, **SMALL)
    c1 = nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.LB, group_id=c0.fanout_group_id), **SMALL)
    sent = frames(200)
    svc = nc.CaptureService([c0, c1], capacity=1000)
    with svc:
        lab.send(sent)
        got: list[nc.OwnedPacket] = []
        while len(got) < 200:
            got += list(svc.get_batch(2.0))
    assert sorted(bytes(p.data) for p in got) == sorted(sent)
    st = assert_balanced(svc, 200)
    assert all(s.packets > 0 for s in st.sources)  # round robin used both members


# -- bad input and life cycle --------------------------------------------------------------------


def test_bad_arguments(lab: Lab) -> None:
    cap = nc.Capture(lab.a, **SMALL)
    try:
        with pytest.raises(nc.ConfigError, match="capacity"):
            nc.CaptureService(cap, capacity=0)
        with pytest.raises(nc.ConfigError, match="'sometimes'"):
            nc.CaptureService(cap, overflow="sometimes")
        with pytest.raises(nc.ConfigError, match="not a capture source"):
            nc.CaptureService([cap, "eth0"])  # type: ignore[list-item]
        with pytest.raises(nc.ConfigError, match="at least one"):
            nc.CaptureService([])
        with pytest.raises(nc.ConfigError, match="twice"):
            nc.CaptureService([cap, cap])
        svc = nc.CaptureService(cap)
        with pytest.raises(nc.ClosedError, match="not started"):
            svc.get(0)
        with pytest.raises(ValueError):
            svc.start().get_batch(-1)
    finally:
        svc.stop()
    assert cap.closed


def test_unstopped_service_warns_and_stops(lab: Lab) -> None:
    svc = service(lab)
    svc.start()
    cap = svc.sources[0]
    name = svc.name
    with pytest.warns(ResourceWarning, match="unstopped"):
        del svc
        import gc
        gc.collect()
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith(name)], 1.0)
    assert cap.closed


def test_os_thread_name(lab: Lab) -> None:
    with service(lab, name="nc-osname") as svc:
        t = our_threads(svc)[0]

        def comm() -> str:
            with open(f"/proc/self/task/{t.native_id}/comm") as f:
                return f.read().strip()

        want = f"nc-osname-{lab.a}"[:15]  # the kernel keeps 15 bytes
        wait_for(lambda: comm() == want, 1.0)  # the thread names itself first thing
        assert comm() == want


# -- interpreter exit ------------------------------------------------------------------------------

_EXIT_SCRIPT = """
import sys, time
import netring_chan as nc
cap = nc.Capture(sys.argv[1], block_size=4096, block_count=2, block_timeout_ms=10, protocol=0x88B5)
svc = nc.CaptureService(cap, capacity=5, overflow="block")
svc.start()
print("up", flush=True)
sys.stdin.readline()
time.sleep(0.3)  # the thread now waits for room (frames sent) or sits in poll
print(svc.stats().kernel_packets, flush=True)
"""


@pytest.mark.parametrize("traffic", [0, 300])
def test_interpreter_exit_with_running_service(lab: Lab, traffic: int) -> None:
    """Nothing hangs at exit: neither a thread in poll nor one blocked on a full queue."""
    import subprocess
    import sys

    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, "-c", _EXIT_SCRIPT, lab.a],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "error"})
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "up\n"
        lab.send(frames(traffic, size=300))
        t0 = time.monotonic()
        out, err = proc.communicate("\n", timeout=10)
        dt = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and err == "", err
    assert int(out) == traffic
    assert dt < 0.3 + 1.5


@pytest.mark.parametrize("overflow", ["block", "drop"])
def test_exact_accounting_when_stopped_under_live_traffic(lab: Lab, overflow: str) -> None:
    """Stop while frames keep arriving: the sum still holds exactly."""
    svc = service(lab, capacity=200, overflow=overflow, ring=TINY)
    stop_sending = threading.Event()
    sent = [0]
    payload = frames(1, size=300)[0]

    def blast() -> None:
        with lab.sender() as s:
            while not stop_sending.is_set():
                s.send(payload)
                sent[0] += 1

    sender = threading.Thread(target=blast)
    svc.start()
    sender.start()
    try:
        got = 0
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            got += len(svc.get_batch(1.0))  # a consumer slower than the sender
            time.sleep(0.002)
        t0 = time.monotonic()
        svc.stop()
        assert time.monotonic() - t0 < 1.0
    finally:
        stop_sending.set()
        sender.join()
    st = assert_balanced(svc)
    assert 0 < st.kernel_packets <= sent[0]
    assert st.kernel_drops + st.queue_drops > 0
    assert st.delivered == got


def test_delivered_counts_only_what_was_handed_out(lab: Lab) -> None:
    """A face left mid-batch puts the rest back: delivered counts packets handed out."""
    sent = frames(50, size=100)
    svc = service(lab, capacity=1000)
    svc.start()
    lab.send(sent)
    wait_for(lambda: svc.stats().queued == 50)

    async def aio() -> list[bytes]:
        got = []
        async for p in svc.asyncio():  # never closed: abandoned after the break
            got.append(bytes(p.data))
            if len(got) == 10:
                break
        return got

    got = asyncio.run(aio())
    assert svc.stats().delivered == 10 and svc.stats().queued == 40

    async def tr() -> list[bytes]:
        rx = nc.TrioReceiveChannel(svc)
        return [bytes((await rx.receive()).data) for _ in range(5)]

    got += trio.run(tr)
    got += [bytes(svc.get(1.0).data) for _ in range(5)]
    svc.stop()
    st = assert_balanced(svc, 50)
    assert (st.delivered, st.queued) == (20, 30)
    got += [d for b in svc.get_all() for d in b.datas()]
    assert got == sent
