"""The fd-driven async faces (AsyncCapture for asyncio, TrioCapture for trio).

Every test runs once per face against the real kernel: a veth pair in a
private netns (the ``lab`` fixture; this thread is inside it), frames sent
with the stdlib AF_PACKET socket from another thread, compared byte for byte.
The event loop runs inside the test (``asyncio.run`` / ``trio.run``); the
``Kit`` classes hide the few loop calls that differ, the assertions are shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import struct
import threading
import time
from typing import Any, Awaitable, Callable, Iterator

import pytest
import trio

import netring_chan as nc
from lab import ETH_P_LAB, frame, mac

OPTS = dict(block_size=1 << 16, block_count=8, block_timeout_ms=10)


def lab_frames(start: int, count: int) -> list[bytes]:
    """Frames a->b with a 4-byte sequence number and varied lengths (60..300 bytes)."""
    out = []
    for seq in range(start, start + count):
        size = 60 + (seq * 37) % 241
        body = struct.pack("!I", seq) + bytes((seq + i) & 0xFF for i in range(size - 18))
        out.append(frame(mac(1), mac(2), body))
    return out


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


class AsyncioKit:
    name = "asyncio"
    Face = nc.AsyncCapture

    @staticmethod
    def run(fn: Callable[[], Awaitable[Any]]) -> Any:
        return asyncio.run(fn())  # type: ignore[arg-type]

    sleep = staticmethod(asyncio.sleep)

    @staticmethod
    async def within(seconds: float, fn: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        """(finished, result): run ``fn`` cancelling it after ``seconds``."""
        try:
            return True, await asyncio.wait_for(fn(), seconds)
        except asyncio.TimeoutError:
            return False, None

    @staticmethod
    async def both(a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]) -> list[Any]:
        return list(await asyncio.gather(a(), b()))

    @staticmethod
    def readers(fd: int) -> int:
        """Readers registered for ``fd`` (0 or 1)."""
        # remove_reader() tells whether one was registered; one left behind
        # is a failure anyway, so taking it away here costs nothing.
        return int(asyncio.get_running_loop().remove_reader(fd))

    busy = RuntimeError


class TrioKit:
    name = "trio"
    Face = nc.TrioCapture

    @staticmethod
    def run(fn: Callable[[], Awaitable[Any]]) -> Any:
        return trio.run(fn)

    sleep = staticmethod(trio.sleep)

    @staticmethod
    async def within(seconds: float, fn: Callable[[], Awaitable[Any]]) -> tuple[bool, Any]:
        result: list[Any] = []
        with trio.move_on_after(seconds):
            result.append(await fn())
        return (True, result[0]) if result else (False, None)

    @staticmethod
    async def both(a: Callable[[], Awaitable[Any]], b: Callable[[], Awaitable[Any]]) -> list[Any]:
        out: list[Any] = [None, None]

        async def run(i: int, f: Callable[[], Awaitable[Any]]) -> None:
            out[i] = await f()

        async with trio.open_nursery() as n:
            n.start_soon(run, 0, a)
            n.start_soon(run, 1, b)
        return out

    @staticmethod
    def readers(fd: int) -> int:
        """Tasks waiting to read, in this run (trio's own wake-up task included)."""
        return int(trio.lowlevel.current_statistics().io_statistics.tasks_waiting_read)

    busy = trio.BusyResourceError


@pytest.fixture(params=[AsyncioKit, TrioKit], ids=["asyncio", "trio"])
def kit(request: pytest.FixtureRequest) -> Iterator[type]:
    before = fd_count()
    yield request.param
    assert fd_count() == before, "file descriptors leaked"


@contextlib.contextmanager
def sender_thread(lab: Any, plan: Callable[[Any], None]) -> Iterator[threading.Thread]:
    """Run ``plan(sock)`` in a thread with an AF_PACKET socket on lab.b; join on exit."""
    errors: list[BaseException] = []
    sock = lab.sender()

    def body() -> None:
        try:
            plan(sock)
        except BaseException as e:  # surfaced in the test thread
            errors.append(e)

    t = threading.Thread(target=body, name="aio-test-sender")
    t.start()
    try:
        yield t
    finally:
        t.join(10)
        sock.close()
        assert not t.is_alive()
        if errors:
            raise errors[0]


def lab_only(frames: Any) -> list[bytes]:
    return [bytes(p.data) for p in frames if p.protocol == ETH_P_LAB]


# -- delivery -------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["recv_batch", "recv", "stream"])
def test_receives_frames_byte_exact_in_order(lab: Any, kit: Any, mode: str) -> None:
    """N crafted frames arrive intact and in order through each way of receiving."""
    n = 300
    sent = lab_frames(0, n)

    def plan(sock: Any) -> None:
        time.sleep(0.05)  # the consumer is already waiting
        for i, f in enumerate(sent):
            sock.send(f)
            if i % 50 == 49:
                time.sleep(0.005)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with kit.Face(lab.a, **OPTS) as cap:
            with sender_thread(lab, plan):
                async def consume() -> None:
                    if mode == "stream":
                        async for pkt in cap:
                            assert isinstance(pkt, nc.OwnedPacket)
                            if pkt.protocol == ETH_P_LAB:
                                got.append(pkt.data)
                                if len(got) == n:
                                    return
                    while len(got) < n:
                        if mode == "recv_batch":
                            with await cap.recv_batch() as batch:
                                assert isinstance(batch, nc.PacketBatch)
                                got.extend(lab_only(batch))
                        else:
                            owned = await cap.recv()
                            assert isinstance(owned, nc.OwnedBatch)
                            got.extend(lab_only(owned))

                done, _ = await kit.within(10, consume)
                assert done, f"only {len(got)} of {n} frames arrived"
            st = cap.statistics()
            assert st.waits >= 1 and st.batches >= 1 and not st.waiting
        return got

    assert kit.run(main) == sent


def test_try_recv_batch_none_when_idle(lab: Any, kit: Any) -> None:
    """try_recv_batch never waits: None when idle, the frames once a block is ready."""
    sent = lab_frames(1000, 5)

    async def main() -> None:
        async with kit.Face(lab.a, **OPTS) as cap:
            await kit.sleep(0.05)
            assert cap.try_recv_batch() is None
            lab.send(sent)
            got: list[bytes] = []
            deadline = time.monotonic() + 3
            while len(got) < len(sent) and time.monotonic() < deadline:
                b = cap.try_recv_batch()
                if b is None:
                    await kit.sleep(0.005)
                    continue
                with b:
                    got.extend(lab_only(b))
            assert got == sent
            await kit.sleep(0.05)
            assert cap.try_recv_batch() is None
            assert cap.statistics().waits == 0

    kit.run(main)


def test_no_lost_wakeups_with_bursts(lab: Any, kit: Any) -> None:
    """Many small bursts with pauses: every one wakes the waiter; none is missed.

    A lost wake-up would leave the consumer asleep with frames in the ring
    until the 10 s limit; the bursts are small and spaced so that most
    receives really wait on the fd (checked through ``statistics().waits``).
    """
    rounds = 80
    rng = random.Random(3)
    bursts = [rng.randint(1, 4) for _ in range(rounds)]
    sent = lab_frames(0, sum(bursts))

    def plan(sock: Any) -> None:
        i = 0
        for k in bursts:
            for f in sent[i:i + k]:
                sock.send(f)
            i += k
            time.sleep(rng.uniform(0.0, 0.02))

    async def main() -> tuple[list[bytes], Any]:
        got: list[bytes] = []
        async with kit.Face(lab.a, **OPTS) as cap:
            with sender_thread(lab, plan):
                async def consume() -> None:
                    while len(got) < len(sent):
                        got.extend(lab_only(await cap.recv()))

                done, _ = await kit.within(10, consume)
                assert done, f"stalled after {len(got)} of {len(sent)} frames"
            return got, cap.statistics()

    got, st = kit.run(main)
    assert got == sent
    assert st.waits >= 10, st


def test_leaving_async_for_early_loses_nothing(lab: Any, kit: Any) -> None:
    """Breaking out of ``async for`` mid-block and iterating again resumes in order."""
    sent = lab_frames(500, 12)

    async def main() -> list[bytes]:
        got: list[bytes] = []
        async with kit.Face(lab.a, **OPTS) as cap:
            lab.send(sent)
            for chunk in (3, 4, 5):  # all 12 frames normally share one block
                async def take(k: int = chunk) -> None:
                    n = 0
                    async for pkt in cap:
                        if pkt.protocol == ETH_P_LAB:
                            got.append(pkt.data)
                            n += 1
                            if n == k:
                                break
                done, _ = await kit.within(3, take)
                assert done, got
            assert cap.packets() is cap.__aiter__()
        return got

    assert kit.run(main) == sent


# -- cancellation and close -------------------------------------------------------


@pytest.mark.parametrize("mode", ["recv", "stream"])
def test_cancellation_is_clean_and_face_stays_usable(lab: Any, kit: Any, mode: str) -> None:
    """A timed-out receive leaves no reader registered, loses no frame, and the face works on."""
    sent = lab_frames(7, 3)

    async def main() -> None:
        async with kit.Face(lab.a, **OPTS) as cap:
            fd = cap.fileno()
            stream = cap.packets()
            await kit.sleep(0)
            idle_readers = kit.readers(fd)

            async def receive() -> Any:
                return await (stream.__anext__() if mode == "stream" else cap.recv())

            for _ in range(3):
                done, _ = await kit.within(0.05, receive)
                assert not done
                assert not cap.statistics().waiting
                assert kit.readers(fd) == idle_readers
            lab.send(sent)
            got: list[bytes] = []
            while len(got) < len(sent):
                done, r = await kit.within(3, receive)
                assert done
                got.extend(lab_only([r] if mode == "stream" else r))
            assert got == sent
            assert kit.readers(fd) == idle_readers

    kit.run(main)


@pytest.mark.parametrize("mode", ["recv_batch", "recv", "stream"])
def test_close_from_another_task_wakes_waiter(lab: Any, kit: Any, mode: str) -> None:
    """close() wakes a waiting receiver promptly: ClosedError, or the stream simply ends."""

    async def main() -> float:
        cap = kit.Face(lab.a, **OPTS)
        woke_at: list[float] = []

        async def waiter() -> Any:
            try:
                if mode == "stream":
                    async for pkt in cap:
                        assert pkt.protocol != ETH_P_LAB
                    return "ended"
                await (cap.recv_batch() if mode == "recv_batch" else cap.recv())
                return "received"
            except nc.ClosedError:
                return "closed"
            finally:
                woke_at.append(time.monotonic())

        async def closer() -> float:
            await kit.sleep(0.1)
            assert cap.statistics().waiting
            t = time.monotonic()
            cap.close()
            return t

        async def bounded_waiter() -> Any:
            done, r = await kit.within(3, waiter)
            return r if done else "still waiting 3 s after close"

        outcome, closed_at = await kit.both(bounded_waiter, closer)
        assert outcome == ("ended" if mode == "stream" else "closed")
        assert cap.closed and cap.source.closed  # opened by name: owned, closed with it
        with pytest.raises(nc.ClosedError):
            cap.try_recv_batch()
        with pytest.raises(nc.ClosedError):
            await cap.recv()
        await cap.aclose()  # idempotent
        return woke_at[0] - closed_at

    assert kit.run(main) < 1.0


@pytest.mark.parametrize("mode", ["recv", "stream"])
def test_deleting_the_veth_raises_ring_error(lab: Any, kit: Any, mode: str) -> None:
    """Removing the interface under a waiting receiver raises RingError(ENETDOWN) within ~1 s."""

    async def main() -> float:
        async with kit.Face(lab.a, **OPTS) as cap:
            deleted_at: list[float] = []

            def delete() -> None:
                time.sleep(0.1)
                lab.ip("link", "del", lab.a)
                deleted_at.append(time.monotonic())

            t = threading.Thread(target=delete)
            t.start()
            try:
                async def consume() -> None:
                    if mode == "stream":
                        async for pkt in cap:
                            pass
                    else:
                        while True:
                            await cap.recv()

                with pytest.raises(nc.RingError) as ei:
                    await kit.within(5, consume)
                raised_at = time.monotonic()
            finally:
                t.join()
            assert ei.value.errno == errno.ENETDOWN
            assert lab.a in str(ei.value)
            # The error stays: every later call raises it too.
            with pytest.raises(nc.RingError):
                cap.try_recv_batch()
            with pytest.raises(nc.RingError):
                await cap.recv()
            return raised_at - deleted_at[0]

    assert kit.run(main) < 1.0


# -- ownership, misuse, the held-batch subtlety ---------------------------------------


def test_wrapped_capture_ownership(lab: Any, kit: Any) -> None:
    """A wrapped Capture is owned (closed with the face) unless owns=False."""
    sent = lab_frames(50, 2)

    async def main() -> None:
        with nc.Capture(lab.a, **OPTS) as capture:
            async with kit.Face(capture, owns=False) as cap:
                assert cap.source is capture
            assert not capture.closed
            lab.send(sent)
            b = capture.next_batch_blocking(2.0)
            assert b is not None
            with b:
                assert lab_only(b) == sent
        capture2 = nc.Capture(lab.a, **OPTS)
        async with kit.Face(capture2):
            pass
        assert capture2.closed

    kit.run(main)


def test_misuse_is_refused_clearly(lab: Any, kit: Any) -> None:
    """Bad arguments and a second concurrent receiver get clear exceptions."""

    async def main() -> None:
        with pytest.raises(nc.ConfigError, match="not a source"):
            kit.Face(object())
        with nc.Capture(lab.a, **OPTS) as capture:
            with pytest.raises(nc.ConfigError, match="snaplen"):
                kit.Face(capture, snaplen=64)
        with pytest.raises(nc.ConfigError, match="owns=False"):
            kit.Face(lab.a, owns=False)
        with pytest.raises(nc.InterfaceNotFoundError):
            kit.Face("nc-no-such0")
        async with kit.Face(lab.a, **OPTS) as cap:
            async def first() -> Any:
                return await kit.within(0.3, cap.recv)

            async def second() -> Any:
                await kit.sleep(0.05)
                with pytest.raises(kit.busy):
                    await cap.recv()
                return "refused"

            (done, _), r = await kit.both(first, second)
            assert not done and r == "refused"

    kit.run(main)


def test_held_batch_does_not_spin(lab: Any, kit: Any) -> None:
    """While a zero-copy batch is held the kernel keeps the fd readable; waiting must not spin.

    The first assertion shows the kernel behaviour (the fd polls readable with
    nothing to take); the second bounds the wake-ups over a 0.3 s idle wait:
    a busy loop would count tens of thousands, the back-off about thirty.
    """
    import select

    sent = lab_frames(90, 3)

    async def main() -> None:
        async with kit.Face(lab.a, **OPTS) as cap:
            lab.send(sent[:1])
            done, held = await kit.within(3, cap.recv_batch)
            assert done
            p = select.poll()
            p.register(cap.fileno(), select.POLLIN)
            assert p.poll(0) and cap.try_recv_batch() is None  # readable, yet nothing ready
            before = cap.statistics().spurious_wakeups
            done, _ = await kit.within(0.3, cap.recv_batch)
            assert not done
            spurious = cap.statistics().spurious_wakeups - before
            assert 1 <= spurious < 300, spurious
            # still delivers while the batch is held, then after release
            lab.send(sent[1:2])
            done, b = await kit.within(3, cap.recv_batch)
            assert done
            with b:
                assert lab_only(b) == sent[1:2]
            assert lab_only(held) == sent[:1]
            held.release()
            lab.send(sent[2:])
            done, owned = await kit.within(3, cap.recv)
            assert done and lab_only(owned) == sent[2:]

    kit.run(main)


def test_faces_import_neither_trio_nor_asyncio() -> None:
    """The aio modules load with trio and asyncio unavailable: both are imported on first use."""
    import subprocess
    import sys

    code = (
        "import sys, netring_chan\n"
        "for k in [k for k in sys.modules if k.startswith('netring_chan.aio')]: del sys.modules[k]\n"
        "sys.modules['trio'] = sys.modules['asyncio'] = None\n"
        "import netring_chan.aio as a\n"
        "print(a.AsyncCapture.__name__, a.TrioCapture.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AsyncCapture", "AsyncCapture"]  # one class; TrioCapture is its old name


def test_unclosed_face_warns_and_releases(lab: Any, kit: Any) -> None:
    """A face dropped without close() warns (ResourceWarning) and closes its own capture;
    close() also works outside a running loop."""
    import gc

    face = kit.Face(lab.a, **OPTS)
    capture = face.source
    with pytest.warns(ResourceWarning, match="unclosed"):
        del face
        gc.collect()
    assert capture.closed

    face = kit.Face(lab.a, **OPTS)
    face.close()
    face.close()
    assert face.closed and face.source.closed
