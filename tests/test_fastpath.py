"""The per-packet async step in C (``netring_chan._fastpath``), without root.

``PacketAiter.__anext__`` hands out a packet already in the cursor without
a coroutine. It must behave as the ``async def __anext__`` it replaces: the
packet is taken when the awaitable is first resumed (a step dropped or
cancelled before it ran takes nothing), an empty cursor goes to the slow
coroutine (which may suspend, be cancelled, or end the iteration), an error
of the iterator propagates, and each step is awaited once. Checked under
asyncio and trio, and through the real faces over a ``MemorySource``.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Awaitable, Callable

import pytest
import trio

import netring_chan as nc
from netring_chan._fastpath import PacketAiter, Step
from netring_chan.packet import PacketCursor
from netring_chan.testing import MemorySource

pytestmark = pytest.mark.unprivileged

LOOPS = ["asyncio", "trio"]


def run(loop: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(fn()) if loop == "asyncio" else trio.run(fn)  # type: ignore[arg-type]


def cursor_of(items: list[Any]) -> PacketCursor:
    cur = PacketCursor()
    cur.it = iter(items)
    return cur


class Slow:
    """A slow path that refills the cursor from ``batches`` (suspending first), then ends."""

    def __init__(self, cur: PacketCursor, batches: list[list[Any]], loop: str) -> None:
        self.cur, self.batches, self.loop, self.calls = cur, batches, loop, 0

    async def __call__(self) -> Any:
        self.calls += 1
        await (asyncio.sleep(0) if self.loop == "asyncio" else trio.sleep(0))
        if not self.batches:
            raise StopAsyncIteration
        self.cur.it = iter(self.batches.pop(0))
        return next(self.cur.it)


@pytest.mark.parametrize("loop", LOOPS)
def test_async_for_hands_out_every_item_in_order(loop: str) -> None:
    cur = cursor_of([1, 2, 3])
    slow = Slow(cur, [[4, 5], [(6, 7)], [8]], loop)

    async def main() -> list[Any]:
        return [p async for p in PacketAiter(cur, slow)]

    # a tuple value (an OwnedPacket is one) arrives whole, not as StopIteration's args
    assert run(loop, main) == [1, 2, 3, 4, 5, (6, 7), 8]
    assert slow.calls == 4  # once per batch and once to end, never per item


@pytest.mark.parametrize("loop", LOOPS)
def test_a_step_takes_nothing_until_resumed(loop: str) -> None:
    cur = cursor_of([1, 2])
    ait = PacketAiter(cur, Slow(cur, [], loop))

    async def main() -> list[Any]:
        dropped = ait.__anext__()
        assert isinstance(dropped, Step)
        del dropped  # never awaited: nothing taken
        got = [await ait.__anext__()]
        step = ait.__anext__()
        step.close()  # closed before it ran: nothing taken
        got.append(await ait.__anext__())
        return got

    assert run(loop, main) == [1, 2]


def test_a_cancelled_step_takes_nothing_asyncio() -> None:
    cur = cursor_of([1, 2])
    ait = PacketAiter(cur, Slow(cur, [], "asyncio"))

    async def main() -> list[Any]:
        task = asyncio.ensure_future(ait.__anext__())
        task.cancel()  # before the task ran: the step never started
        with pytest.raises(asyncio.CancelledError):
            await task
        return [await ait.__anext__(), await ait.__anext__()]

    assert asyncio.run(main()) == [1, 2]


def test_a_step_is_awaited_once() -> None:
    cur = cursor_of([1])
    ait = PacketAiter(cur, Slow(cur, [], "asyncio"))

    async def main() -> None:
        step = ait.__anext__()
        assert await step == 1
        with pytest.raises(RuntimeError, match="already awaited"):
            await step

    asyncio.run(main())


def test_throw_into_an_unstarted_step_raises_it_and_takes_nothing() -> None:
    cur = cursor_of([1])
    step = PacketAiter(cur, Slow(cur, [], "asyncio")).__anext__()
    with pytest.raises(KeyError):
        step.throw(KeyError("x"))  # type: ignore[attr-defined]
    assert next(cur.it) == 1  # type: ignore[arg-type]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_cursor_emptied_meanwhile_goes_to_the_slow_path(loop: str) -> None:
    cur = cursor_of([1])
    slow = Slow(cur, [[2]], loop)
    ait = PacketAiter(cur, slow)

    async def main() -> list[Any]:
        step = ait.__anext__()  # the cursor had a packet when asked...
        other = [await ait.__anext__()]  # ...another await took it first
        return other + [await step]  # this one then waits on the slow path

    assert run(loop, main) == [1, 2]
    assert slow.calls == 1


def test_an_iterator_error_propagates() -> None:
    def bad() -> Any:
        yield 1
        raise OSError(5, "boom")

    cur = PacketCursor()
    cur.it = bad()
    ait = PacketAiter(cur, Slow(cur, [], "asyncio"))

    async def main() -> list[Any]:
        got = []
        with pytest.raises(OSError, match="boom"):
            async for p in ait:
                got.append(p)
        return got

    assert asyncio.run(main()) == [1]


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="slow must be callable or None, got 3"):
        PacketAiter(PacketCursor(), 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PacketAiter()  # type: ignore[call-arg]


def test_a_subclass_slow_path_is_its_next_slow_method_without_a_cycle() -> None:
    class Stream(PacketAiter):
        def __init__(self) -> None:
            self.cur = cursor_of([1])
            super().__init__(self.cur)

        async def _next_slow(self) -> Any:
            raise StopAsyncIteration

    async def main() -> list[Any]:
        return [p async for p in Stream()]

    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for _ in range(50):
            assert asyncio.run(main()) == [1]
        assert gc.collect() < 50  # no stream left behind in a cycle per run
    finally:
        gc.enable()
    assert len(gc.get_objects()) < before + 1000


@pytest.mark.parametrize("loop", LOOPS)
def test_service_faces_hand_out_every_packet_through_the_c_step(loop: str) -> None:
    frames = [bytes([i % 256]) * 60 + i.to_bytes(4, "big") for i in range(1000)]
    src = MemorySource()
    svc = nc.CaptureService(src, capacity=4096)

    async def main() -> list[bytes]:
        face = svc.asyncio() if loop == "asyncio" else svc.trio()
        async with face as rx:
            it = rx.__aiter__()
            assert isinstance(it, PacketAiter)
            src.push(frames[:500])
            src.push(frames[500:])
            got: list[bytes] = []
            async for p in it:
                got.append(p.data)
                if len(got) == len(frames):
                    break
            return got

    assert run(loop, main) == frames
    st = svc.stats()
    assert st.balanced and st.delivered == len(frames)


def owned_batch(n: int) -> nc.OwnedBatch:
    src = MemorySource([bytes([i % 256]) * 64 for i in range(n)])
    try:
        b = src.next_batch()  # the real walk and copy-out of a laid-out block
        assert b is not None
        with b:
            return b.to_owned()
    finally:
        src.close()


def test_owned_packets_keep_their_api() -> None:
    import pickle

    ob = owned_batch(300)
    pkts = list(ob)
    assert [p.data for p in pkts] == ob.datas()
    assert [p.timestamp_ns for p in pkts] == list(ob.timestamps_ns)
    p = pkts[299]
    assert (p.wire_len, p.caplen, p.direction) == (64, 64, nc.Direction.HOST)
    q = pickle.loads(pickle.dumps(p))
    assert q == p and hash(q) == hash(p) and q.data == p.data and q.timestamp_ns == p.timestamp_ns
    assert ob[299] == p and ob[-1] == p
    with pytest.raises(AttributeError):
        p.data = b"x"  # type: ignore[misc]


def test_packets_iterator_checks_its_arguments() -> None:
    from netring_chan._fastpath import Packets

    with pytest.raises(TypeError, match="cls must be a subclass of PacketBase, got <class 'int'>"):
        Packets(int, [], [], None)  # type: ignore[type-var]

    class Big(nc.OwnedPacket):
        __slots__ = ("extra", "__dict__", "__weakref__")  # more storage: made zero-filled

    (p,) = Packets(Big, [b"x"], [7], None)
    assert (p.data, p.timestamp_ns) == (b"x", 7) and not hasattr(p, "extra")
    p.note = 1  # type: ignore[attr-defined]
    assert vars(p) == {"note": 1}
    with pytest.raises(TypeError, match="datas must be a list"):
        Packets(nc.OwnedPacket, (b"x",), [1], None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fewer timestamps than packets"):
        list(Packets(nc.OwnedPacket, [b"x", b"y"], [1], None))


def test_plain_run_counts_leading_plain_bytes_frames() -> None:
    from netring_chan._fastpath import plain_run

    f = b"x" * 60
    assert plain_run([f, f, f], 14, 1514) == 3
    assert plain_run((f, f), 14, 1514) == 2
    assert plain_run([f, bytearray(f), f], 14, 1514) == 1
    assert plain_run([f, b"x" * 13, f], 14, 1514) == 1
    assert plain_run([f, b"x" * 1515], 14, 1514) == 1
    assert plain_run([], 14, 1514) == 0
    assert plain_run(iter([f]), 14, 1514) == 0  # only lists and tuples

    class Sub(bytes):
        pass

    assert plain_run([Sub(f)], 14, 1514) == 0


@pytest.mark.parametrize("size", [60, 1514])  # 1514 x 64 slots: the copy runs without the GIL
def test_tx_fill_publishes_slots_in_ring_order_and_stops_before_a_frame_to_check(size: int) -> None:
    from netring_chan._fastpath import tx_fill
    from netring_chan._lowlevel import ffi, lib

    frame_size, per_block, count = 2048, 2, 64
    mem = bytearray(frame_size * count)
    ring = ffi.new("struct nc_txring *")
    ring.base = ffi.from_buffer("uint8_t[]", mem)
    ring.block_size, ring.frame_size, ring.per_block, ring.count = frame_size * per_block, frame_size, per_block, count
    addr = int(ffi.cast("uintptr_t", ring))
    frames = [bytes([i]) * size for i in range(80)]
    frames[70] = bytearray(frames[70])  # type: ignore[call-overload]
    off = int(lib.NC_TX_DATA_OFF)

    def slot(i: int) -> tuple[int, int, bytes]:
        h = ffi.cast("struct tpacket2_hdr *", lib.nc_tx_frame(ring, i))
        return int(h.tp_status), int(h.tp_len), bytes(mem[i * frame_size + off:i * frame_size + off + h.tp_len])

    # From slot 60 on, wrapping round: k bounds the run.
    assert tx_fill(addr, 60, frames, 0, 10, 14, 1514) == 10
    assert [slot((60 + j) % count) for j in range(10)] == [(lib.TP_STATUS_SEND_REQUEST, size, frames[j])
                                                           for j in range(10)]
    assert slot(6)[0] == lib.TP_STATUS_AVAILABLE  # nothing beyond k
    # From an offset into the list; stops before the bytearray at 70.
    assert tx_fill(addr, 6, tuple(frames), 60, 64, 14, 1514) == 10
    assert slot(15) == (lib.TP_STATUS_SEND_REQUEST, size, frames[69])
    assert slot(16)[0] == lib.TP_STATUS_AVAILABLE
    # Out of bounds lengths stop it; k never exceeds the ring.
    assert tx_fill(addr, 0, frames, 0, 64, 14, size - 1) == 0
    assert tx_fill(addr, 0, frames[:64] * 2, 0, 1000, 14, 1514) == 64
    assert tx_fill(addr, 0, "not a list", 0, 5, 14, 1514) == 0
    with pytest.raises(ValueError):
        tx_fill(0, 0, frames, 0, 5, 14, 1514)
