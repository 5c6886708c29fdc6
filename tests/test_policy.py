"""The service policy, without root and without a network.

``CaptureService`` over ``MemorySource`` and ``InjectService`` over
``MemorySink`` (``netring_chan.testing``): the queue bound, both overflow
policies, prompt and draining stops, error hand-off in every face,
cancellation, give-back of a batch left mid-way, clones, and the exact
accounting after every run. Everything here runs as an unprivileged user
(CI runs ``-m unprivileged`` once more as ``nobody``): import nothing that
needs root, and never use the ``lab`` fixtures.
"""

from __future__ import annotations

import asyncio
import errno
import queue
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import trio

from service_checks import finished, our_threads
import netring_chan as nc
from netring_chan.testing import MemorySink, MemorySource

pytestmark = pytest.mark.unprivileged

PPB = 4  # packets per MemorySource block: one block is one batch


def frames(n: int, start: int = 0, size: int = 60) -> list[bytes]:
    """Distinct frames; the index is in bytes 14..18."""
    out = []
    for i in range(start, start + n):
        body = i.to_bytes(4, "big")
        out.append(b"\x02" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + (body * size)[:size - 14])
    return out


def index(data: Any) -> int:
    return int.from_bytes(bytes(data)[14:18], "big")


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def balanced(svc: nc.CaptureService, packets: int | None = None) -> nc.ServiceStats:
    st = svc.stats()
    assert st.kernel_packets == st.delivered + st.kernel_drops + st.queue_drops + st.queued + st.lost, st
    assert st.balanced
    if packets is not None:
        assert st.kernel_packets == packets, st
    return st


_names = iter(range(10**6))


def capture(src: MemorySource, **kw: Any) -> nc.CaptureService:
    kw.setdefault("name", f"nc-pol{next(_names)}")
    return nc.CaptureService(src, **kw)


def inject(sink: MemorySink, **kw: Any) -> nc.InjectService:
    kw.setdefault("name", f"nc-pin{next(_names)}")
    return nc.InjectService(sink, **kw)


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    before = {t for t in threading.enumerate() if t.name.startswith("nc-p")}
    yield
    wait_for(lambda: not ({t for t in threading.enumerate() if t.name.startswith("nc-p")} - before), 2.0)


# == capture ==============================================================================


def test_capture_in_order_within_capacity() -> None:
    sent = frames(40)
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=8)
    got: list[bytes] = []
    with svc:
        for k in range(0, 40, PPB):
            src.push(sent[k:k + PPB])
        while len(got) < 40:
            got.append(bytes(svc.get(2.0).data))
            time.sleep(0.001)  # a slow consumer: the queue fills
        with pytest.raises(queue.Empty):
            svc.get(0.05)
    assert got == sent
    st = balanced(svc, 40)
    assert (st.delivered, st.queued, st.kernel_drops, st.queue_drops) == (40, 0, 0, 0)
    assert 0 < st.peak_queued <= 8 == st.capacity
    assert src.closed and not our_threads(svc)


def test_capture_block_overflow_fills_the_source_and_stop_is_prompt() -> None:
    """overflow="block": the thread waits for room, the source fills and drops
    (the kernel-drops analogue), the queue never exceeds its bound, and stop()
    with a full queue nobody reads returns within a second."""
    sent = frames(40)
    src = MemorySource(packets_per_block=PPB, max_blocks=2)
    svc = capture(src, capacity=8, overflow="block")
    svc.start()
    for k in range(10):
        src.push(sent[PPB * k:PPB * (k + 1)])
        # Let the thread take what it can before the next block arrives.
        wait_for(lambda: src.pending == 0 or svc.stats().queued == 8)
        if k == 2:
            wait_for(lambda: src.pending == 0)  # the third batch is in the thread's hands
    st = svc.stats()
    # 8 queued, 4 held by the thread waiting for room, 2 blocks (8) in the source, 20 dropped.
    assert (st.queued, st.kernel_packets, st.kernel_drops, st.queue_drops) == (8, 40, 20, 0), st
    assert st.peak_queued == 8
    assert src.pending == 2

    t0 = time.monotonic()
    svc.stop()
    assert time.monotonic() - t0 < 1.0
    assert not our_threads(svc) and src.closed
    st = balanced(svc, 40)
    # The held batch and what the source held are queued (beyond the bound) for draining.
    assert (st.queued, st.delivered, st.kernel_drops, st.peak_queued) == (20, 0, 20, 8), st
    rest = [bytes(d) for b in svc.get_all() for d in b.datas()]
    assert rest == sent[:20]
    st = balanced(svc, 40)
    assert (st.queued, st.delivered) == (0, 20)


def test_capture_drop_overflow_counts_queue_drops() -> None:
    sent = frames(40)
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=8, overflow="drop")
    with svc:
        src.push(sent)  # 10 blocks at once; nobody reads
        wait_for(lambda: svc.stats().queued + svc.stats().queue_drops == 40)
        st = svc.stats()
        assert (st.queued, st.queue_drops, st.kernel_drops, st.peak_queued) == (8, 32, 0, 8), st
        got = [bytes(svc.get(1.0).data) for _ in range(8)]
    assert got == sent[:8]  # the oldest batches were kept, whole
    st = balanced(svc, 40)
    assert (st.delivered, st.queued, st.queue_drops) == (8, 0, 32)


def test_capture_batch_larger_than_capacity_is_admitted_alone() -> None:
    sent = frames(10)
    src = MemorySource(packets_per_block=5)
    svc = capture(src, capacity=3, overflow="drop")
    with svc:
        src.push(sent)  # two batches of 5
        wait_for(lambda: svc.stats().queued + svc.stats().queue_drops == 10)
        st = svc.stats()
        assert (st.queued, st.queue_drops, st.peak_queued) == (5, 5, 5), st
        assert svc.get_batch(1.0).datas() == sent[:5]
    balanced(svc, 10)


def test_capture_stop_drain_waits_for_a_consumer() -> None:
    sent = frames(20)
    src = MemorySource(sent, packets_per_block=PPB)
    svc = capture(src, capacity=100)
    svc.start()
    wait_for(lambda: svc.stats().queued == 20)
    got: list[bytes] = []

    def consume() -> None:
        time.sleep(0.2)  # stop(drain=True) is already waiting
        for p in svc:  # until the end of the stream
            got.append(bytes(p.data))
            time.sleep(0.002)

    t = threading.Thread(target=consume)
    t.start()
    t0 = time.monotonic()
    svc.stop(drain=True, timeout=3.0)
    dt = time.monotonic() - t0
    t.join(2.0)
    assert not t.is_alive()
    assert 0.2 <= dt < 2.0, dt
    assert got == sent
    st = balanced(svc, 20)
    assert (st.delivered, st.queued) == (20, 0)


def test_capture_stop_drain_is_bounded_when_nobody_reads() -> None:
    sent = frames(20)
    src = MemorySource(sent, packets_per_block=PPB)
    svc = capture(src, capacity=100)
    svc.start()
    wait_for(lambda: svc.stats().queued == 20)
    t0 = time.monotonic()
    svc.stop(drain=True, timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.28 <= dt < 1.0, dt
    assert not our_threads(svc)
    st = balanced(svc, 20)
    assert (st.delivered, st.queued) == (0, 20)
    assert [bytes(p.data) for p in svc] == sent  # still drainable after the stop


def test_capture_wait_drained_does_not_stop() -> None:
    src = MemorySource(frames(8), packets_per_block=PPB)
    with capture(src, capacity=100) as svc:
        wait_for(lambda: svc.stats().queued == 8)
        assert svc.wait_drained(0.1) is False
        svc.get_batch(1.0)
        svc.get_batch(1.0)
        assert svc.wait_drained(0.1) is True
        assert svc.running
    balanced(svc, 8)


# -- errors are handed to the consumer, in every face --------------------------------------


def _error_source(mode: str) -> MemorySource:
    # fail_at=3: the third batch raises EIO; vanish_at=2: the interface goes
    # once two batches were taken (the ring's blocks are still handed out).
    if mode == "fail":
        return MemorySource(packets_per_block=PPB, fail_at=3)
    return MemorySource(packets_per_block=PPB, vanish_at=2)


def _consume_until_error(svc: nc.CaptureService, src: MemorySource, sent: list[bytes],
                         face: str) -> tuple[list[bytes], BaseException]:
    if face == "sync":
        got: list[bytes] = []
        with svc:
            src.push(sent)
            with pytest.raises(nc.ServiceError) as ei:
                while True:
                    got.append(bytes(svc.get(2.0).data))
        return got, ei.value
    if face == "asyncio":
        async def aio() -> tuple[list[bytes], BaseException]:
            got: list[bytes] = []
            async with svc.asyncio() as rx:
                src.push(sent)
                with pytest.raises(nc.ServiceError) as ei:
                    async for p in rx:
                        got.append(bytes(p.data))
            return got, ei.value
        return asyncio.run(asyncio.wait_for(aio(), 5.0))

    async def tr() -> tuple[list[bytes], BaseException]:
        got: list[bytes] = []
        with trio.fail_after(5):
            async with svc.trio() as rx:
                src.push(sent)
                with pytest.raises(nc.ServiceError) as ei:
                    async for p in rx:
                        got.append(bytes(p.data))
        return got, ei.value
    return trio.run(tr)


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
@pytest.mark.parametrize("mode", ["fail", "vanish"])
def test_capture_source_error_reaches_the_consumer(face: str, mode: str) -> None:
    sent = frames(20)  # five batches
    src = _error_source(mode)
    svc = capture(src, capacity=100)
    got, err = _consume_until_error(svc, src, sent, face)
    assert isinstance(err, nc.ServiceError)
    assert isinstance(err.__cause__, nc.RingError)
    assert svc.error is err.__cause__
    assert svc.sources[0].label in str(err) and svc.name in str(err)
    if mode == "fail":
        assert err.__cause__.errno == errno.EIO
        assert got == sent[:8]  # the two batches before the failing one
    else:
        assert err.__cause__.errno == errno.ENETDOWN
        assert got == sent  # what the ring held when the interface went, then the error
    assert not our_threads(svc) and src.closed
    st = svc.stats()
    assert (st.kernel_packets, st.delivered, st.queued, st.kernel_drops, st.queue_drops) == \
        (20, len(got), 0, 0, 0), st
    assert st.balanced  # fail: the failing batch and those behind it count as lost


def test_capture_balanced_after_a_failed_batch() -> None:
    src = MemorySource(packets_per_block=PPB, fail_at=3)
    svc = capture(src, capacity=100)
    with svc:
        src.push(frames(20))
        with pytest.raises(nc.ServiceError):
            while True:
                svc.get(2.0)
    st = balanced(svc, 20)
    assert st.lost == 20 - st.delivered > 0


def test_vanished_source_counts_no_later_push() -> None:
    src = MemorySource(frames(8), packets_per_block=PPB, vanish_at=1)
    with src:
        assert len(src.next_batch() or ()) == PPB  # the interface goes now
        assert src.push(frames(4, start=8)) == 0
        assert len(src.next_batch() or ()) == PPB  # the ring still had this one
        with pytest.raises(nc.RingError) as ei:
            src.next_batch()
        assert ei.value.errno == errno.ENETDOWN
        assert src.stats() == nc.RxStats(8, 0, 0)


# -- cancellation loses nothing ------------------------------------------------------------


def _pusher(src: MemorySource, sent: list[bytes], delay: float = 0.002) -> threading.Thread:
    def run() -> None:
        for k in range(0, len(sent), 2):
            src.push(sent[k:k + 2])
            time.sleep(delay)

    t = threading.Thread(target=run)
    t.start()
    return t


def test_asyncio_cancelled_waiting_receive_loses_nothing() -> None:
    sent = frames(40)
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=1000)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.asyncio() as rx:
            for _ in range(3):
                # Receives cancelled while they wait in the queue, before anything arrives.
                task = asyncio.ensure_future(rx.receive())
                await asyncio.sleep(0.02)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(rx.receive_batch(), 0.01)
            t = _pusher(src, sent)
            while len(got) < len(sent):
                got.append(bytes((await asyncio.wait_for(rx.receive(), 2.0)).data))
            await asyncio.get_running_loop().run_in_executor(None, t.join)
        return got

    assert asyncio.run(main()) == sent
    st = balanced(svc, 40)
    assert (st.delivered, st.queued) == (40, 0)


def test_asyncio_receive_cancelled_after_taking_a_batch_loses_nothing() -> None:
    """A cancellation that lands after the batch was taken from the queue (at
    the schedule point that follows the take) gives the batch back."""
    sent = frames(PPB)
    src = MemorySource(sent, packets_per_block=PPB)  # one batch
    svc = capture(src, capacity=100)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.asyncio() as rx:
            while svc.stats().queued < PPB:
                await asyncio.sleep(0.005)
            task = asyncio.ensure_future(rx.receive())
            await asyncio.sleep(0)  # the task runs: it takes the batch and reaches its next await
            task.cancel()
            try:
                got.append(bytes((await task).data))
            except asyncio.CancelledError:
                pass
            while len(got) < PPB:
                try:
                    got.append(bytes((await asyncio.wait_for(rx.receive(), 0.3)).data))
                except asyncio.TimeoutError:
                    break
        return got

    assert asyncio.run(main()) == sent


def test_trio_cancelled_receive_loses_nothing() -> None:
    sent = frames(120)
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=1000)

    async def main() -> tuple[list[bytes], int]:
        got: list[bytes] = []
        cancels = 0
        async with svc.trio() as rx:
            with trio.move_on_after(0.05) as scope:
                await rx.receive()
            assert scope.cancelled_caught
            t = _pusher(src, sent)
            deadline = time.monotonic() + 5
            while len(got) < len(sent) and time.monotonic() < deadline:
                with trio.move_on_after(0.0005) as scope:
                    got.append(bytes((await rx.receive()).data))
                cancels += scope.cancelled_caught
            await trio.to_thread.run_sync(t.join)
        return got, cancels

    got, cancels = trio.run(main)
    assert cancels > 0
    assert got == sent
    st = balanced(svc, 120)
    assert (st.delivered, st.queued) == (120, 0)


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_cancelled_receive_batch_keeps_the_rest_of_a_batch(flavour: str) -> None:
    """``receive()`` leaves a batch part-read; a ``receive_batch()`` cancelled at
    its schedule point must leave that rest in place, not drop it."""
    import anyio

    sent = frames(2 * PPB)
    svc = capture(MemorySource(sent, packets_per_block=PPB), capacity=100)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with svc.channel() as rx:
            with anyio.fail_after(2):
                got.append(bytes((await rx.receive()).data))
            with anyio.CancelScope() as scope:
                scope.cancel()
                await rx.receive_batch()
            assert scope.cancelled_caught
            with anyio.fail_after(2):
                while len(got) < len(sent):
                    got.extend(bytes(p.data) for p in await rx.receive_batch())
        return got

    assert anyio.run(main, backend=flavour) == sent
    st = balanced(svc, 2 * PPB)
    assert (st.delivered, st.queued) == (2 * PPB, 0)


def test_trio_faces_are_checkpoints_whether_or_not_they_wait() -> None:
    """Every trio receive and send is a checkpoint, on the path that finds a
    batch or room at once as on the one that waits; one cancelled before it
    starts takes or queues nothing."""
    import trio.testing

    src = MemorySource(packets_per_block=PPB)
    rsvc = capture(src, capacity=100)
    sink = MemorySink(capacity=4)
    tsvc = inject(sink, capacity=4)

    async def main() -> None:
        with trio.fail_after(5):
            await faces()

    async def faces() -> None:
        async with rsvc.trio() as rx, tsvc.trio() as tx:
            src.push(frames(3 * PPB))
            while rsvc.stats().queued < 3 * PPB:
                await trio.sleep(0.005)
            with trio.testing.assert_checkpoints():
                assert len(await rx.receive_batch()) == PPB  # ready: no wait
            with trio.CancelScope() as scope:
                scope.cancel()
                await rx.receive_batch()
            assert rsvc.stats().delivered == PPB
            with trio.testing.assert_checkpoints():
                assert len(await rx.receive_batch()) == PPB
            with trio.testing.assert_checkpoints():
                assert len(await rx.receive_batch()) == PPB
            with trio.testing.assert_checkpoints():  # empty: waits for the push
                trio.lowlevel.current_trio_token().run_sync_soon(src.push, frames(PPB))
                assert len(await rx.receive_batch()) == PPB

            with trio.testing.assert_checkpoints():
                assert await tx.send(frames(1)[0])  # room: no wait
            with trio.testing.assert_checkpoints():
                assert await tx.send_many(frames(2)) == 2
            submitted = tsvc.stats().submitted
            with trio.CancelScope() as scope:
                scope.cancel()
                await tx.send(frames(1)[0])
            with trio.CancelScope() as scope:
                scope.cancel()
                await tx.send_many(frames(2))
            assert tsvc.stats().submitted == submitted

    trio.run(main)
    assert list(sink.sent) == frames(1) + frames(2)
    balanced(rsvc, 4 * PPB)


# -- a per-packet consumer that stops mid-batch gives the rest back ------------------------


@pytest.mark.parametrize("face", ["sync-get", "sync-iter", "asyncio", "trio"])
def test_consumer_stopping_mid_batch_gives_the_rest_back(face: str) -> None:
    sent = frames(10)
    src = MemorySource(sent, packets_per_block=5)
    svc = capture(src, capacity=100)
    svc.start()
    wait_for(lambda: svc.stats().queued == 10)
    if face == "sync-get":
        got = [bytes(svc.get(1.0).data) for _ in range(3)]
        svc.stop()  # the rest of the sync face's batch goes back
    elif face == "sync-iter":
        got = []
        for p in svc:
            got.append(bytes(p.data))
            if len(got) == 3:
                break
        assert (svc.stats().delivered, svc.stats().queued) == (3, 7)
        svc.stop()
    elif face == "asyncio":
        async def aio() -> list[bytes]:
            async with svc.asyncio() as rx:
                return [bytes((await rx.receive()).data) for _ in range(3)]
        got = asyncio.run(aio())
    else:
        async def tr() -> list[bytes]:
            async with svc.trio() as rx:
                return [bytes((await rx.receive()).data) for _ in range(3)]
        got = trio.run(tr)
    assert not svc.running
    st = balanced(svc, 10)
    assert (st.delivered, st.queued) == (3, 7), st
    got += [bytes(d) for b in svc.get_all() for d in b.datas()]
    assert got == sent
    st = balanced(svc, 10)
    assert (st.delivered, st.queued) == (10, 0)


# -- trio faces: channel types and clones ------------------------------------------------------


def test_trio_faces_are_trio_channels() -> None:
    cap = capture(MemorySource(), capacity=10)
    inj = inject(MemorySink())

    async def main() -> None:
        async with cap.trio() as rx, inj.trio() as tx:
            assert isinstance(rx, trio.abc.ReceiveChannel)
            assert isinstance(tx, trio.abc.SendChannel)
            assert not isinstance(rx, trio.abc.SendChannel)

    trio.run(main)
    assert not cap.running and not inj.running
    balanced(cap, 0)
    finished(inj, submitted=0)


def test_trio_clones_share_the_stream() -> None:
    sent = frames(100)
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=1000)

    async def main() -> tuple[list[int], list[int], list[bytes]]:
        a: list[int] = []
        b: list[int] = []
        rx = svc.trio()
        other = rx.clone()
        assert isinstance(other, trio.abc.ReceiveChannel) and other is not rx

        async def take(ch: Any, into: list[int]) -> None:
            async for p in ch:
                into.append(index(p.data))
                await trio.sleep(0)  # let the other task in between packets

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(take, rx, a)
                nursery.start_soon(take, other, b)
                for k in range(0, 100, PPB):
                    src.push(sent[k:k + PPB])
                    await trio.sleep(0.001)
                while len(a) + len(b) < 100:
                    await trio.sleep(0.005)
                nursery.cancel_scope.cancel()

        # Closing one clone does not stop the service.
        await other.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await other.receive()
        assert svc.running
        more = frames(4, start=100)
        src.push(more)
        with trio.fail_after(2):
            late = [bytes((await rx.receive()).data) for _ in range(4)]
        # Closing the last one does.
        await rx.aclose()
        assert not svc.running
        return a, b, late

    a, b, late = trio.run(main)
    assert sorted(a + b) == list(range(100))  # every packet exactly once between them
    assert a == sorted(a) and b == sorted(b)  # each in order
    assert late == frames(4, start=100)
    assert not our_threads(svc)
    st = balanced(svc, 104)
    assert (st.delivered, st.queued) == (104, 0)


def test_trio_closing_a_clone_wakes_its_waiting_receive() -> None:
    src = MemorySource(packets_per_block=PPB)
    svc = capture(src, capacity=100)

    async def main() -> list[str]:
        rx = svc.trio()
        other = rx.clone()
        outcome: list[str] = []

        async def waiter() -> None:
            try:
                await other.receive()
                outcome.append("packet")
            except trio.ClosedResourceError:
                outcome.append("closed")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.sleep(0.05)  # the waiter waits in the empty queue
            await other.aclose()
            with trio.move_on_after(0.5):
                while not outcome:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        await rx.aclose()
        return outcome

    assert trio.run(main) == ["closed"]
    balanced(svc, 0)


# == injection ==============================================================================


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_inject_every_frame_in_order(face: str) -> None:
    sent = frames(150)
    sink = MemorySink(capacity=8)
    svc = inject(sink, capacity=16)
    if face == "sync":
        with svc:
            for f in sent[:50]:
                assert svc.send(f, timeout=2.0) is True
            for f in sent[50:80]:
                while True:
                    try:
                        assert svc.send_nowait(bytearray(f)) is True
                        break
                    except queue.Full:
                        time.sleep(0.001)
            assert svc.send_many(iter(sent[80:]), timeout=2.0) == 70
    elif face == "asyncio":
        async def aio() -> None:
            async with svc.asyncio() as tx:
                for f in sent[:80]:
                    assert await tx.send(f) is True
                assert await tx.send_many(sent[80:]) == 70
        asyncio.run(asyncio.wait_for(aio(), 5.0))
    else:
        async def tr() -> None:
            with trio.fail_after(5):
                async with svc.trio() as tx:
                    for f in sent[:80]:
                        assert await tx.send(f) is True
                    assert await tx.send_many(sent[80:]) == 70
        trio.run(tr)
    # Leaving the block normally drained: everything went before it returned.
    assert list(sink.sent) == sent
    st = finished(svc, submitted=150, sent=150, rejected=0, queue_drops=0, discarded=0)
    assert 0 < st.peak_queued <= 16


def _fill(svc: nc.InjectService, sent: list[bytes]) -> int:
    """send_nowait until the queue is full; how many were queued."""
    n = 0
    for f in sent:
        try:
            assert svc.send_nowait(f) is True
        except queue.Full:
            return n
        n += 1
        if n % 8 == 0:
            time.sleep(0.01)  # the sender thread takes what it can
    raise AssertionError("the queue never filled")


def test_inject_block_overflow_and_prompt_stop_with_a_stalled_sink() -> None:
    sent = frames(200)
    sink = MemorySink(capacity=8)
    sink.stall()
    svc = inject(sink, capacity=10, overflow="block")
    svc.start()
    n = _fill(svc, sent)
    st = svc.stats()
    assert st.queued == 10 and st.peak_queued == 10
    assert st.queued + st.in_flight == n and n > 10  # the sender thread holds the rest
    t0 = time.monotonic()
    with pytest.raises(queue.Full):
        svc.send(sent[n], timeout=0.1)  # blocks for room, none comes
    assert 0.09 <= time.monotonic() - t0 < 0.5

    t0 = time.monotonic()
    svc.stop()  # a full queue and a stuck sink
    assert time.monotonic() - t0 < 1.0
    assert list(sink.sent) == []
    finished(svc, submitted=n, sent=0, discarded=n, queue_drops=0, peak_queued=10)
    with pytest.raises(nc.ClosedError):
        svc.send(sent[0])


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_async_send_after_the_service_stopped(flavour: str) -> None:
    """A send face whose service stopped under it (from a thread, while one
    send waits for room): asyncio raises ``ClosedError``; trio, as a
    ``trio.abc.SendChannel`` whose other end is gone, ``BrokenResourceError``
    caused by it. Nothing is queued after the stop."""
    import anyio

    sent = frames(40)
    sink = MemorySink(capacity=4)
    sink.stall()
    svc = inject(sink, capacity=4)
    ends: list[BaseException] = []
    expect: type[BaseException] = nc.ClosedError if flavour == "asyncio" else trio.BrokenResourceError

    async def main() -> None:
        async with svc.channel() as tx:
            async def stopper() -> None:
                while svc.stats().queued < 4:
                    await anyio.sleep(0.005)
                await anyio.to_thread.run_sync(svc.stop)

            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(stopper)
                    for call in (lambda: tx.send_many(sent), lambda: tx.send(sent[0])):
                        with pytest.raises(expect) as ei:
                            await call()
                        ends.append(ei.value)
                    with pytest.raises(expect) as ei:
                        tx.send_nowait(sent[0])
                    ends.append(ei.value)

    anyio.run(main, backend=flavour)
    for e in ends:
        assert isinstance(e if flavour == "asyncio" else e.__cause__, nc.ClosedError), repr(e)
    st = svc.stats()
    assert st.submitted == st.sent + st.discarded + st.queue_drops and st.queued == 0, st


def test_inject_drop_overflow_counts_queue_drops() -> None:
    sent = frames(60)
    sink = MemorySink(capacity=8)
    sink.stall()
    svc = inject(sink, capacity=10, overflow="drop")
    svc.start()
    kept: list[bytes] = []
    for k, f in enumerate(sent):
        if svc.send(f):
            kept.append(f)
        if k < 30:
            time.sleep(0.002)  # the thread takes some
    st = svc.stats()
    assert st.queue_drops == 60 - len(kept) > 0 and st.queued == 10 and st.peak_queued == 10
    sink.resume()
    svc.stop(drain=True, timeout=2.0)
    assert list(sink.sent) == kept
    # What the thread took, then a full queue; every later (newest) submission was dropped.
    assert kept == sent[:len(kept)] and len(kept) > 10
    finished(svc, submitted=60, sent=len(kept), queue_drops=60 - len(kept), discarded=0)


def test_inject_stop_drain_is_bounded_with_a_stalled_sink() -> None:
    sent = frames(200)
    sink = MemorySink(capacity=8)
    sink.stall()
    svc = inject(sink, capacity=10)
    svc.start()
    n = _fill(svc, sent)
    t0 = time.monotonic()
    svc.stop(drain=True, timeout=0.3)
    dt = time.monotonic() - t0
    assert 0.28 <= dt < 1.0, dt
    assert list(sink.sent) == []
    finished(svc, submitted=n, sent=0, discarded=n)


def test_inject_stop_drain_sends_what_is_queued() -> None:
    sent = frames(40)
    sink = MemorySink(capacity=8)
    sink.stall()
    svc = inject(sink, capacity=100)
    svc.start()
    assert svc.send_many(sent) == 40
    threading.Timer(0.2, sink.resume).start()
    t0 = time.monotonic()
    svc.stop(drain=True, timeout=3.0)
    assert 0.18 <= time.monotonic() - t0 < 2.0
    assert list(sink.sent) == sent
    finished(svc, submitted=40, sent=40, discarded=0)


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_inject_sink_failure_reaches_producers(face: str) -> None:
    sent = frames(200)
    sink = MemorySink(capacity=4, fail_at=6)  # the flush that would send frame 6 raises
    svc = inject(sink, capacity=8)
    n = [0]
    if face == "sync":
        with pytest.raises(nc.ServiceError) as ei:
            with svc:
                for f in sent:
                    svc.send(f, timeout=2.0)
                    n[0] += 1
    elif face == "asyncio":
        async def aio() -> None:
            async with svc.asyncio() as tx:
                for f in sent:
                    await tx.send(f)
                    n[0] += 1
        with pytest.raises(nc.ServiceError) as ei:
            asyncio.run(asyncio.wait_for(aio(), 5.0))
    else:
        async def tr() -> None:
            with trio.fail_after(5):
                async with svc.trio() as tx:
                    for f in sent:
                        await tx.send(f)
                        n[0] += 1
        with pytest.raises(nc.ServiceError) as ei:
            trio.run(tr)
    err = ei.value
    assert isinstance(err.__cause__, nc.RingError) and err.__cause__.errno == errno.ENETDOWN
    assert svc.error is err.__cause__ and sink.label in str(err)
    assert 5 <= n[0] < 200
    assert list(sink.sent) == sent[:5]
    st = finished(svc, submitted=n[0], sent=5, queue_drops=0)
    assert st.discarded == n[0] - 5
    with pytest.raises(nc.ServiceError):
        svc.send(sent[0])  # and every later submission


# -- bad input is named, never coerced -------------------------------------------------


@pytest.mark.parametrize("bad", ["1", -1, float("nan"), True])
def test_every_timeout_is_checked_the_same_way(bad: object) -> None:
    src = MemorySource(frames(4))
    with capture(src, capacity=100) as svc:
        calls = [lambda: svc.get(bad), lambda: svc.get_batch(bad), lambda: next(svc.packets(bad)),
                 lambda: next(svc.batches(bad)), lambda: svc.wait_drained(bad), lambda: svc.stop(timeout=bad)]
        for call in calls:
            with pytest.raises(nc.ConfigError, match="timeout must be a number >= 0"):
                call()
    sink = MemorySink()
    with nc.InjectService(sink) as tx:
        for call in (lambda: tx.send(frames(1)[0], bad), lambda: tx.wait_drained(bad)):
            with pytest.raises(nc.ConfigError, match="timeout must be a number >= 0"):
                call()
    with MemorySink() as sink, pytest.raises(nc.ConfigError, match="drain_timeout"):
        nc.InjectService(sink, drain_timeout=bad)


def test_frames_of_the_wrong_kind_are_named_by_index() -> None:
    with nc.InjectService(MemorySink()) as tx:
        with pytest.raises(TypeError, match="frame 1 must be a bytes-like object, got NoneType"):
            tx.send_many([frames(1)[0], None])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="frame 2: empty frame"):
            tx.send_many([frames(1)[0], frames(1)[0], b""])
        assert tx.stats().submitted == 0
