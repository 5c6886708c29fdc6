"""AsyncInjector on asyncio and trio, against the real kernel.

A rate-limited qdisc (tbf) on the sending end keeps skbs, and so ring slots,
busy, so a small ring really fills and ``await send`` must wait for the
kernel; what arrives on the peer is checked byte for byte.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import trio

from inject_helpers import SIZES, Receiver, loss_report, seq_frame, softnet_drops
from lab import sh
import netring_chan as nc
from netring_chan import AsyncInjector

N = 300


def slow_qdisc(lab, rate: str = "20mbit") -> None:
    sh("ip", "netns", "exec", lab.ns, "tc", "qdisc", "add", "dev", lab.a, "root", "tbf",
       "rate", rate, "burst", "5kb", "limit", "4mb")


def frames(n: int = N) -> list[bytes]:
    return [seq_frame(i, SIZES[i % len(SIZES)]) for i in range(n)]


def test_asyncio_sends_n_frames_with_backpressure_without_blocking_the_loop(lab):
    slow_qdisc(lab)
    want = frames()

    async def main() -> tuple[nc.InjectorStats, int]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                await asyncio.sleep(0.002)
                ticks += 1

        t = asyncio.create_task(ticker())
        async with AsyncInjector(lab.a, frame_count=8) as inj:
            for f in want:
                await inj.send(f)
            assert await inj.wait_drained(10.0)
            st = inj.stats()
        done.set()
        await t
        return st, ticks

    sn = softnet_drops()
    with Receiver(lab.b) as rx:
        st, ticks = asyncio.run(main())
        got = rx.wait_for(N)
    assert got == want, loss_report(lab, got, want, sn)
    assert (st.queued, st.sent, st.rejected) == (N, N, 0)
    assert st.ring_full > 0  # it had to wait for slots...
    assert ticks > 0  # ...and the loop kept running meanwhile


def test_trio_sends_n_frames_with_backpressure(lab):
    slow_qdisc(lab)
    want = frames()

    async def main() -> nc.InjectorStats:
        async with AsyncInjector(lab.a, frame_count=8) as inj:
            assert await inj.send_many(want[:100]) == 100
            for f in want[100:]:
                await inj.send(f)
            await inj.flush()
            assert await inj.wait_drained(10.0)
            return inj.stats()

    sn = softnet_drops()
    with Receiver(lab.b) as rx:
        st = trio.run(main)
        got = rx.wait_for(N)
    assert got == want, loss_report(lab, got, want, sn)
    assert (st.queued, st.sent, st.rejected, st.pending) == (N, N, 0, 0)
    assert st.ring_full > 0


def test_aclose_drains_queued_frames(lab):
    want = frames(40)

    async def main() -> None:
        inj = AsyncInjector(lab.a, frame_count=64)
        for f in want:
            await inj.send(f)  # queued, never flushed by hand
        await inj.aclose()
        assert inj.closed

    with Receiver(lab.b) as rx:
        trio.run(main)
        assert rx.wait_for(40) == want


@pytest.mark.parametrize("flavour", ["asyncio", "trio"])
def test_close_wakes_a_waiting_sender_promptly(lab, flavour):
    slow_qdisc(lab, "100kbit")

    async def producer(inj: AsyncInjector, out: list[BaseException]) -> None:
        try:
            while True:
                await inj.send(seq_frame(1, 1400))
        except nc.ClosedError as e:
            out.append(e)

    async def run_asyncio() -> float:
        inj = AsyncInjector(lab.a, frame_count=2)
        out: list[BaseException] = []
        t = asyncio.create_task(producer(inj, out))
        await asyncio.sleep(0.3)
        assert not t.done()  # waiting on the full ring
        t0 = time.monotonic()
        inj.close()
        await asyncio.wait_for(t, 2)
        assert len(out) == 1
        return time.monotonic() - t0

    async def run_trio() -> float:
        inj = AsyncInjector(lab.a, frame_count=2)
        out: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer, inj, out)
            await trio.sleep(0.3)
            assert not out
            t0 = time.monotonic()
            inj.close()
        assert len(out) == 1
        return time.monotonic() - t0

    took = asyncio.run(run_asyncio()) if flavour == "asyncio" else trio.run(run_trio)
    assert took < 1.0


def test_send_timeout_and_bad_input(lab):
    slow_qdisc(lab, "100kbit")

    async def main() -> None:
        async with AsyncInjector(lab.a, frame_count=2, drain_timeout=0.1) as inj:
            with pytest.raises(ValueError, match="empty"):
                await inj.send(b"")
            with pytest.raises(nc.RingFullError):
                for _ in range(50):
                    await inj.send(seq_frame(1, 1400), timeout=0.05)
        with pytest.raises(nc.ClosedError):
            await inj.send(seq_frame(1, 60))

    trio.run(main)


def test_bad_backend(lab):
    with pytest.raises(nc.ConfigError, match="backend"):
        AsyncInjector(lab.a, backend="curio")
