"""The policy core of the services (``_queue.BatchQueue``), without a kernel.

Items are lists (their ``len`` is their weight in packets). Both directions
are exercised: a thread producing for loop consumers (capture) and loop
producers feeding a thread (what the injection service will do).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import pytest
import trio

from netring_chan._loops import loop_for
from netring_chan._queue import BatchQueue, Overflow, ServiceError
from netring_chan.errors import ClosedError, ConfigError

pytestmark = pytest.mark.unprivileged  # CI runs these once more as an unprivileged user


def item(n: int, tag: int = 0) -> list[int]:
    return [tag] * n


def balanced(q: BatchQueue[list[int]], put: int) -> None:
    c = q.counters()
    assert put == c.delivered + c.dropped + c.queued, (c.delivered, c.dropped, c.queued)


def test_bad_config() -> None:
    for cap in (0, -1, True, 1.5, "10"):
        with pytest.raises(ConfigError, match="capacity"):
            BatchQueue(cap, "block")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="'maybe'"):
        BatchQueue(10, "maybe")
    assert BatchQueue(10, Overflow.DROP).overflow is Overflow.DROP


def test_admission_block() -> None:
    q: BatchQueue[list[int]] = BatchQueue(10, "block")
    assert q.put_nowait(item(4)) and q.put_nowait(item(6))
    with pytest.raises(queue.Full):
        q.put_nowait(item(1))
    assert q.counters().queued == 10 and q.counters().peak == 10
    assert q.get_nowait() == item(4)
    with pytest.raises(queue.Full):
        q.put_nowait(item(5))  # 6 + 5 > 10: a batch is admitted whole or not at all
    assert q.put_nowait(item(4))
    balanced(q, 14)


def test_admission_drop_and_oversized() -> None:
    q: BatchQueue[list[int]] = BatchQueue(10, "drop")
    assert q.put_nowait(item(25, 1))  # larger than the capacity: admitted into an empty queue
    assert q.counters().peak == 25
    assert q.put_nowait(item(3)) is False  # queue not empty: the newest is dropped
    assert q.get_nowait() == item(25, 1)
    assert q.put_nowait(item(8)) and not q.put_nowait(item(3)) and q.put_nowait(item(2))
    c = q.counters()
    assert (c.queued, c.dropped, c.delivered) == (10, 6, 25)
    balanced(q, 25 + 3 + 8 + 3 + 2)


def test_blocking_put_waits_for_room_and_stop_releases_it() -> None:
    q: BatchQueue[list[int]] = BatchQueue(10, "block")
    q.put(item(8, 1))
    admitted = threading.Event()
    t = threading.Thread(target=lambda: (q.put(item(5, 2)), admitted.set()))
    t.start()
    assert not admitted.wait(0.1)  # no room: the producer waits
    assert q.get(1.0) == item(8, 1)  # room now: the producer proceeds
    assert admitted.wait(1.0)
    t.join()
    q.put(item(5, 3))
    blocked = threading.Thread(target=q.put, args=(item(5, 4),))
    blocked.start()
    time.sleep(0.05)
    assert blocked.is_alive()
    t0 = time.monotonic()
    q.begin_close()  # stop: the waiting producer is admitted beyond the bound
    blocked.join(1.0)
    assert not blocked.is_alive() and time.monotonic() - t0 < 0.5
    c = q.counters()
    assert c.queued == 15 and c.peak == 10  # peak measures the running queue only
    q.finish_close()
    assert [x[0] for x in q.get_all()] == [2, 3, 4]
    with pytest.raises(ClosedError):
        q.put_nowait(item(1))
    balanced(q, 23)


def test_end_error_and_give_back() -> None:
    q: BatchQueue[list[int]] = BatchQueue(100, "block")
    q.put(item(3, 1))
    q.put(item(3, 2))
    first = q.get_nowait()
    q.give_back(first[1:])  # a consumer handed out one packet, returns two
    assert q.counters().delivered == 1 and q.counters().queued == 5
    cause = OSError(19, "No such device")
    q.fail("nc-capture-eth9", cause)
    q.finish_close()
    assert q.get(0.1) == [1, 1] and q.get(0.1) == [2, 2, 2]  # what was queued first
    with pytest.raises(ServiceError, match="nc-capture-eth9 failed: OSError") as ei:
        q.get(0.1)
    assert ei.value.__cause__ is cause and ei.value.thread == "nc-capture-eth9"
    q.fail("other", RuntimeError("later"))  # the first error wins
    with pytest.raises(ServiceError) as ei:
        q.get_nowait()
    assert ei.value.__cause__ is cause
    balanced(q, 6)


def test_sync_get_timeouts() -> None:
    q: BatchQueue[list[int]] = BatchQueue(10, "block")
    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(0.1)
    assert 0.09 < time.monotonic() - t0 < 1.0
    with pytest.raises(ValueError, match="timeout"):
        q.get(-1)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    threading.Timer(0.1, q.finish_close).start()
    with pytest.raises(ClosedError):
        q.get()  # woken by close


def _producer(q: BatchQueue[list[int]], n: int, delay: float = 0.001) -> threading.Thread:
    def run() -> None:
        for i in range(n):
            q.put(item(1 + i % 4, i))
            time.sleep(delay)
        q.finish_close()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_asyncio_get_through_janus_with_cancellation() -> None:
    q: BatchQueue[list[int]] = BatchQueue(6, "block")

    async def main() -> list[int]:
        got: list[int] = []
        waiter = asyncio.create_task(q.get_async())
        await asyncio.sleep(0.05)
        waiter.cancel()  # cancelled while waiting: takes nothing
        with pytest.raises(asyncio.CancelledError):
            await waiter
        t = _producer(q, 200)
        while True:
            try:
                got.append((await q.get_async())[0])
            except ClosedError:
                break
        t.join()
        return got

    assert asyncio.run(main()) == list(range(200))
    assert q.counters().peak <= 6
    balanced(q, sum(1 + i % 4 for i in range(200)))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_loop_consumer_with_wait_helpers(loop: str) -> None:
    q: BatchQueue[list[int]] = BatchQueue(6, "block")

    async def consume() -> list[int]:
        wait = loop_for(loop).wait_queue
        got: list[int] = []
        t = _producer(q, 200)
        while True:
            try:
                got.append((await wait(q, q.get_nowait))[0])
            except ClosedError:
                break
        t.join()
        return got

    got = asyncio.run(consume()) if loop == "asyncio" else trio.run(consume)
    assert got == list(range(200))
    balanced(q, sum(1 + i % 4 for i in range(200)))


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_loop_producer_feeding_a_thread(loop: str) -> None:
    """The injection direction: loop code puts with back-pressure, a thread gets."""
    q: BatchQueue[list[int]] = BatchQueue(5, "block")
    got: list[int] = []

    def consumer() -> None:
        while True:
            try:
                got.append(q.get(2.0)[0])
            except ClosedError:
                return
            time.sleep(0.001)  # slower than the producer: it must wait for room

    t = threading.Thread(target=consumer)
    t.start()

    async def produce() -> None:
        wait = loop_for(loop).wait_queue
        for i in range(100):
            it = item(1 + i % 3, i)
            assert await wait(q, lambda: q.put_nowait(it))
        q.finish_close()

    try:
        if loop == "asyncio":
            asyncio.run(produce())
        else:
            trio.run(produce)
    finally:
        q.finish_close()
        t.join(5)
    assert got == list(range(100))
    c = q.counters()
    assert c.peak <= 5 and c.dropped == 0
    balanced(q, sum(1 + i % 3 for i in range(100)))


def test_trio_wait_cancelled_takes_nothing() -> None:
    q: BatchQueue[list[int]] = BatchQueue(5, "block")

    async def main() -> None:
        wait_trio = loop_for("trio").wait_queue
        with trio.move_on_after(0.05):
            await wait_trio(q, q.get_nowait)
        q.put(item(2, 7))
        with trio.CancelScope() as cs:
            cs.cancel()
            await wait_trio(q, q.get_nowait)  # cancelled before attempting
        assert await wait_trio(q, q.get_nowait) == item(2, 7)

    trio.run(main)
    balanced(q, 2)
