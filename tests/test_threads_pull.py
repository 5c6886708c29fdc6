"""The capture service's pull mode (``threads._PullCaptureService``), without root.

What the fanout workers' sync targets use: no thread, the sync face reads
the source in the consumer's own thread through the same step, queue and
counters as a source thread. Over ``MemorySource`` (and a pcap file for a
finished source): no thread is made, the accounting is the threaded
service's exactly (compared side by side), a break mid-batch and packets
left in the source at stop are counted, stop is prompt while the consumer
waits on an idle source, a concurrent ``stats()`` is safe, failures travel.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import pytest

from service_checks import our_threads
import netring_chan as nc
from netring_chan.testing import MemorySource
from netring_chan.threads import _PullCaptureService

pytestmark = pytest.mark.unprivileged

PPB = 8  # packets per MemorySource block: one block is one batch

_names = iter(range(10**6))


def frames(n: int, start: int = 0) -> list[bytes]:
    """Distinct 60-byte frames; the index is in bytes 14..18."""
    return [b"\x02" * 12 + b"\x88\xb5" + i.to_bytes(4, "big") * 12 for i in range(start, start + n)]


def index(data: Any) -> int:
    return int.from_bytes(bytes(data)[14:18], "big")


def pull(src: Any, **kw: Any) -> _PullCaptureService:
    kw.setdefault("name", f"nc-pull{next(_names)}")
    return _PullCaptureService(src, **kw)


def balanced(svc: nc.CaptureService, packets: int) -> nc.ServiceStats:
    st = svc.stats()
    assert st.kernel_packets == st.delivered + st.kernel_drops + st.queue_drops + st.queued + st.lost, st
    assert st.balanced and st.kernel_packets == packets, st
    return st


def test_no_thread_and_everything_in_order() -> None:
    before = threading.active_count()
    sent = frames(40)
    src = MemorySource(packets_per_block=PPB)
    svc = pull(src, capacity=8)
    got: list[int] = []
    with svc:
        assert threading.active_count() == before and not our_threads(svc)
        src.push(sent)
        for p in svc:
            got.append(index(p.data))
            assert threading.active_count() == before
            if len(got) == 40:
                break
        with pytest.raises(queue.Empty):
            svc.get(0.05)
    assert got == list(range(40))
    st = balanced(svc, 40)
    assert (st.delivered, st.queued, st.queue_drops) == (40, 0, 0)
    assert st.peak_queued == PPB  # one batch at a time, read into an empty queue
    assert src.closed and threading.active_count() == before


def _break_mid_batch_then_stop(svc: nc.CaptureService, src: MemorySource) -> nc.ServiceStats:
    """Read 3 packets of a batch of 8, break, push 16 more (left in the source), stop."""
    with svc:
        src.push(frames(PPB))
        got = []
        for p in svc:
            got.append(index(p.data))
            if len(got) == 3:
                break
        assert got == [0, 1, 2]
        src.push(frames(2 * PPB, start=PPB))
    return balanced(svc, 3 * PPB)


@pytest.mark.parametrize("threaded", [False, True])
def test_break_mid_batch_and_packets_left_at_stop_are_queued(threaded: bool) -> None:
    src = MemorySource(packets_per_block=PPB)
    svc = nc.CaptureService(src, name=f"nc-pull{next(_names)}") if threaded else pull(src)
    st = _break_mid_batch_then_stop(svc, src)
    # The rest of the batch went back to the queue; stop swept the source into it.
    assert (st.delivered, st.queued, st.kernel_drops, st.queue_drops, st.lost) == (3, 3 * PPB - 3, 0, 0, 0)
    rest = [index(p.data) for b in svc.get_all() for p in b]
    assert rest == list(range(3, 3 * PPB))
    assert balanced(svc, 3 * PPB).queued == 0


def test_same_accounting_as_the_threaded_service() -> None:
    """One scenario, both services: the final counters are identical."""
    out = []
    for make in (pull, lambda s: nc.CaptureService(s, name=f"nc-pull{next(_names)}")):
        src = MemorySource(packets_per_block=PPB)
        st = _break_mid_batch_then_stop(make(src), src)
        out.append((st.kernel_packets, st.delivered, st.queued, st.kernel_drops, st.queue_drops, st.lost))
    assert out[0] == out[1]


def test_batches_break_counts_the_batch_as_delivered() -> None:
    src = MemorySource(frames(3 * PPB), packets_per_block=PPB)
    svc = pull(src)
    with svc:
        for b in svc.batches():
            assert len(b) == PPB
            break
    st = balanced(svc, 3 * PPB)
    assert (st.delivered, st.queued) == (PPB, 2 * PPB)


def test_a_slow_consumer_leaves_packets_in_the_source_never_drops_at_the_queue() -> None:
    """Reads go only into an empty queue: admission never waits (the reader is
    the consumer) and overflow="drop" never drops; the source drops instead."""
    src = MemorySource(packets_per_block=PPB, max_blocks=2)
    svc = pull(src, capacity=PPB, overflow="drop")
    with svc:
        src.push(frames(5 * PPB))  # 2 blocks fit the source, 3 are its drops
        n = sum(1 for _ in svc.packets(timeout=0.05))
    st = balanced(svc, 5 * PPB)
    assert n == st.delivered == 2 * PPB
    assert (st.kernel_drops, st.queue_drops, st.peak_queued) == (3 * PPB, 0, PPB)


def test_get_nowait_reads_once_without_waiting_and_timeouts_hold() -> None:
    src = MemorySource(packets_per_block=PPB)
    svc = pull(src)
    with svc:
        with pytest.raises(queue.Empty):
            svc.get_nowait()
        src.push(frames(1))
        assert index(svc.get_nowait().data) == 0  # read from the source in this call
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            svc.get(0.3)
        assert 0.25 < time.monotonic() - t0 < 1.0
        with pytest.raises(queue.Empty):
            svc.get_batch(0)
    balanced(svc, 1)


def _stop_later(svc: nc.CaptureService, after: float) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(after), svc.stop()), name="stopper")
    t.start()
    return t


def test_stop_from_another_thread_ends_an_idle_iteration_promptly() -> None:
    src = MemorySource(packets_per_block=PPB)
    svc = pull(src, poll_interval=0.1)
    with svc:
        t = _stop_later(svc, 0.2)
        t0 = time.monotonic()
        assert list(svc) == []
        took = time.monotonic() - t0
        t.join()
    assert took < 0.2 + 0.5, took
    assert src.closed and balanced(svc, 0).delivered == 0


def test_stop_while_iterating_delivers_what_the_source_held() -> None:
    """A stop sweeps what the source holds into the queue, as a source thread
    does: the consumer gets the rest of its batch and that, then the end."""
    src = MemorySource(packets_per_block=PPB)
    svc = pull(src, poll_interval=0.05)
    with svc:
        src.push(frames(3 * PPB))
        it = iter(svc)
        got = [index(next(it).data)]
        assert src.pending == 2  # the consumer read one block; two wait in the source
        t = _stop_later(svc, 0)  # from another thread, while this one is between packets
        t.join(2.0)
        assert not t.is_alive() and src.closed
        st = svc.stats()
        assert (st.delivered, st.queued) == (PPB, 2 * PPB)  # swept into the queue
        got += [index(p.data) for p in it]
    st = balanced(svc, 3 * PPB)
    assert got == list(range(3 * PPB)) and (st.delivered, st.queued) == (3 * PPB, 0)


def test_concurrent_stats_while_reading() -> None:
    """The fanout worker's control thread reads stats() while the target reads."""
    src = MemorySource(packets_per_block=PPB, max_blocks=1000)
    svc = pull(src)
    snaps: list[nc.ServiceStats] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            snaps.append(svc.stats())

    total = 200 * PPB
    with svc:
        w = threading.Thread(target=watch, name="watcher")
        w.start()
        n = 0
        try:
            for k in range(0, total, 4 * PPB):
                src.push(frames(4 * PPB, start=k))
                for _ in range(4 * PPB):
                    assert index(svc.get(2.0).data) == n
                    n += 1
        finally:
            stop.set()
            w.join()
    assert n == total and len(snaps) > 1
    for a, b in zip(snaps, snaps[1:]):
        # Counters only grow; a snapshot never shows more handed on than accepted.
        assert a.delivered <= b.delivered and a.kernel_packets <= b.kernel_packets
        assert b.kernel_packets >= b.delivered + b.queued
    balanced(svc, total)


def test_a_failing_source_ends_the_stream_with_its_error() -> None:
    src = MemorySource(packets_per_block=PPB, fail_at=3)
    svc = pull(src)
    with svc:
        src.push(frames(5 * PPB))
        got = []
        with pytest.raises(nc.ServiceError) as ei:
            while True:
                got.append(index(svc.get(2.0).data))
    assert got == list(range(2 * PPB))
    assert isinstance(ei.value.__cause__, nc.RingError)
    st = balanced(svc, 5 * PPB)
    assert st.lost == 3 * PPB and src.closed


def test_a_finished_source_ends_the_stream(tmp_path: Any) -> None:
    path = tmp_path / "a.pcap"
    with nc.open_writer(path) as w, MemorySource(frames(3 * PPB), packets_per_block=PPB) as mem:
        while (b := mem.next_batch()) is not None:
            with b:
                w.write(b)
    svc = pull(nc.open_reader(path))
    with svc:
        got = [index(p.data) for p in svc]  # ends without a stop: the file is read to its end
        assert not svc.sources[0].at_end or svc.sources[0].closed
    assert got == list(range(3 * PPB))
    assert balanced(svc, 3 * PPB).delivered == 3 * PPB


def test_no_async_face_and_one_source_only() -> None:
    src = MemorySource()
    svc = pull(src)
    for face in (svc.asyncio, svc.trio, svc.channel):
        with pytest.raises(nc.ConfigError, match="no async face"):
            face()
    assert not svc.running
    svc.stop()
    assert src.closed
    a, b = MemorySource(), MemorySource()
    with pytest.raises(nc.ConfigError, match="one source, got 2"):
        pull([a, b])
    a.close()
    b.close()


@pytest.mark.parametrize("threaded", [False, True])
def test_stop_before_start_closes_the_source_and_queues_what_it_held(threaded: bool) -> None:
    """A worker's target that returns before its first read stops a service
    that never started: what its ring held is swept and counted as queued."""
    src = MemorySource(frames(2 * PPB), packets_per_block=PPB)
    svc = nc.CaptureService(src, name=f"nc-pull{next(_names)}") if threaded else pull(src)
    svc.stop()
    assert src.closed and not svc.running
    with pytest.raises(nc.ClosedError):
        svc.start()
    assert balanced(svc, 2 * PPB).queued == 2 * PPB
    assert [index(p.data) for b in svc.get_all() for p in b] == list(range(2 * PPB))
    assert balanced(svc, 2 * PPB).delivered == 2 * PPB


@pytest.mark.parametrize("consume", [
    lambda svc: [None for _ in svc.packets(timeout=0.05)],
    lambda svc: [None for _ in svc.batches(timeout=0.05)],
])
def test_timeout_iterations_end_after_an_idle_wait(consume: Callable[[Any], list[None]]) -> None:
    src = MemorySource(frames(2 * PPB), packets_per_block=PPB)
    svc = pull(src)
    with svc:
        t0 = time.monotonic()
        assert consume(svc)
        assert time.monotonic() - t0 < 1.0
    assert balanced(svc, 2 * PPB).delivered == 2 * PPB


def test_get_nowait_and_timeouts_hold_while_another_consumer_reads() -> None:
    """A consumer waiting in a read of an idle source holds the reader for
    up to a poll interval, again and again: another consumer's
    ``get_nowait`` must not wait for it, nor a timeout run over."""
    src = MemorySource(packets_per_block=PPB)
    svc = pull(src, poll_interval=0.5)
    with svc:
        got = []

        def reader() -> None:
            try:
                got.append(svc.get(1.5))
            except queue.Empty:
                pass
        t = threading.Thread(target=reader, name="reader")
        t.start()
        time.sleep(0.1)  # the reader is in its read now
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            svc.get_nowait()
        assert time.monotonic() - t0 < 0.1
        t0 = time.monotonic()
        with pytest.raises(queue.Empty):
            svc.get(0.2)
        assert time.monotonic() - t0 < 0.45
        src.push(frames(PPB))  # whichever consumer reads it, the other does not wait for ever
        try:
            got.append(svc.get(1.0))
        except queue.Empty:
            pass
        t.join(3)
        assert not t.is_alive() and got
    st = balanced(svc, PPB)
    assert st.delivered + st.queued == PPB


class _Interrupting:
    """A batch whose copy-out is interrupted as a Ctrl-C during the copy (made
    with the GIL released) interrupts it: ``KeyboardInterrupt`` as the copy
    returns, with the block still held."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch
        self.interrupted = False

    def __len__(self) -> int:
        return len(self.batch)

    def __enter__(self) -> _Interrupting:
        return self

    def __exit__(self, *exc: object) -> None:
        self.batch.release()

    def to_owned(self) -> Any:
        owned = self.batch.to_owned()
        if not self.interrupted:  # the first copy only
            self.interrupted = True
            raise KeyboardInterrupt
        return owned


class _CopyInterrupted(MemorySource):
    """Its first batch's copy-out is interrupted once (``_Interrupting``)."""

    hit = False

    def next_batch_blocking(self, timeout: float | None = None) -> Any:
        b = super().next_batch_blocking(timeout)
        if b is None or self.hit:
            return b
        self.hit = True
        return _Interrupting(b)


def test_ctrl_c_during_the_copy_keeps_the_batch_counted() -> None:
    """The consumer's own thread copies in pull mode, so a Ctrl-C can land in
    the copy: the batch is queued before the interrupt propagates (the
    iteration then stops the service), so the accounting stays exact."""
    src = _CopyInterrupted(frames(2 * PPB), packets_per_block=PPB)
    svc = pull(src)
    got = []
    with svc:
        with pytest.raises(KeyboardInterrupt):
            for p in svc:
                got.append(p)
        assert not svc.running  # the interrupted iteration stopped the service
        rest = [index(p.data) for b in svc.get_all() for p in b]
    assert got == [] and rest == list(range(2 * PPB))
    st = balanced(svc, 2 * PPB)
    assert st.delivered == 2 * PPB and st.queued == 0


def test_a_batch_interrupted_while_made_is_collected_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal's exception can interrupt ``PacketBatch.__init__`` before its
    slots are set; collecting that half-made batch must not raise."""
    from netring_chan.packet import PacketBatch

    seen: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", seen.append)
    b = PacketBatch.__new__(PacketBatch)
    del b
    assert seen == []


def test_a_rest_handed_back_during_a_read_never_makes_the_reader_wait() -> None:
    """Consumer A reads (the queue was empty) while consumer B leaves an
    iteration mid-batch, handing its rest back: A's batch no longer fits the
    bound, yet A is the consumer that would make room, so it must not wait
    (it waited until some other consumer took the rest, or for ever)."""
    src = MemorySource(frames(PPB), packets_per_block=PPB)
    svc = pull(src, capacity=PPB, poll_interval=0.3)
    with svc:
        it = iter(svc)
        assert index(next(it).data) == 0
        got: list[Any] = []

        def a() -> None:
            t0 = time.monotonic()
            got.append([index(p.data) for p in svc.get_batch(1.0)])
            got.append(time.monotonic() - t0)
        t = threading.Thread(target=a, name="consumer-a")
        t.start()
        time.sleep(0.1)  # A is in its read now
        del it  # B leaves mid-batch: 7 packets back in the queue
        src.push(frames(PPB, PPB))  # A's read gets 8 more
        t.join(3)
        assert not t.is_alive() and got[1] < 1.0, got
        assert got[0] == list(range(1, PPB))  # the rest first, in order
        assert [index(p.data) for p in svc.get_batch(0)] == list(range(PPB, 2 * PPB))
    st = balanced(svc, 2 * PPB)
    assert st.delivered == 2 * PPB and st.queue_drops == 0
