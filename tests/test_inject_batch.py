"""Injector.publish (the Sink contract's publish): one C call per run of free
slots, never waiting; an invalid first frame raises, a later one ends the run."""

from __future__ import annotations

import pytest

from inject_helpers import Receiver, seq_frame
from lab import Lab, sh
import netring_chan as nc


def test_runs_stop_at_frames_needing_checks_and_at_a_full_ring(lab: Lab) -> None:
    # A slow qdisc holds the sent skbs, and so their slots: the ring can fill.
    sh("ip", "netns", "exec", lab.ns, "tc", "qdisc", "add", "dev", lab.a, "root",
       "tbf", "rate", "1mbit", "burst", "1540", "limit", "1mb")
    good = [seq_frame(i, 900 + 13 * i) for i in range(30)]
    with Receiver(lab.b) as rx, nc.Injector(lab.a, frame_count=8) as inj:
        # A plain run is queued whole; nothing leaves before flush.
        assert inj.publish(good[:3]) == 3
        # Stops before a frame that is too short, not bytes-like, or too long...
        assert inj.publish([good[3], b"\x00" * 10, good[4]]) == 1
        # ... and such a frame first raises, saying why; nothing is queued.
        with pytest.raises(ValueError, match="shorter"):
            inj.publish([b"\x00" * 10, good[4]])
        with pytest.raises(TypeError, match="bytes-like"):
            inj.publish(["not bytes", good[4]])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="exceeds"):
            inj.publish([b"\x00" * (inj.mtu + 15)])
        assert inj.publish([]) == 0
        assert inj.stats().queued == 4
        # 8 slots, 4 queued: exactly 4 more fit (no flush while not full).
        assert inj.publish(good[4:20]) == 4
        assert inj.stats().sent == 0
        assert inj.room() <= 8 - 8 + inj.stats().sent
        # Full: it kicks the kernel once; the qdisc lets a frame or two out,
        # so only as many as came free are queued, never more than the ring.
        k = inj.publish(good[8:30])
        st = inj.stats()
        assert k < 22 and st.queued - st.sent <= 8
        assert inj.send_many(good[8 + k:]) == 22 - k
        assert inj.wait_drained(10.0)
        assert rx.wait_for(30, timeout=10.0) == good
        with pytest.raises(ValueError):  # the per-frame path still explains a bad frame
            inj.send(b"\x00" * 10)


def test_send_many_through_backpressure_is_byte_exact(lab: Lab) -> None:
    # A slow qdisc keeps slots busy so send_many alternates batched runs and waits.
    sh("ip", "netns", "exec", lab.ns, "tc", "qdisc", "add", "dev", lab.a, "root",
       "tbf", "rate", "20mbit", "burst", "5kb", "limit", "4mb")
    frames = [seq_frame(i, 60 + (i * 37) % 1400) for i in range(400)]
    with Receiver(lab.b) as rx, nc.Injector(lab.a, frame_count=16) as inj:
        assert inj.send_many(frames) == 400
        assert inj.wait_drained(10.0)
        st = inj.stats()
        assert (st.queued, st.sent, st.rejected) == (400, 400, 0)
        assert st.ring_full > 0
        assert rx.wait_for(400, timeout=10.0) == frames


def test_closed_injector_refuses(lab: Lab) -> None:
    inj = nc.Injector(lab.a)
    inj.close()
    with pytest.raises(nc.ClosedError):
        inj.publish([seq_frame(0, 60)])
    with pytest.raises(nc.ClosedError):
        inj.room()


def test_mixed_runs_and_large_runs_arrive_in_order(lab: Lab) -> None:
    # publish's C path takes plain bytes from a list or tuple; anything else
    # (bytearray, memoryview, a bytes subclass) goes through the full
    # checks, in order. 1500-byte runs are copied with the GIL released (a
    # chunk over 64 KiB).
    class Sub(bytes):
        pass

    big = [seq_frame(i, 1514) for i in range(600)]
    mixed: list[object] = [seq_frame(601 + i, 60 + i) for i in range(40)]
    mixed[5] = bytearray(mixed[5])  # type: ignore[arg-type]
    mixed[6] = memoryview(bytes(mixed[6]))  # type: ignore[arg-type]
    mixed[20] = Sub(mixed[20])  # type: ignore[arg-type]
    want = big + [bytes(f) for f in mixed]  # type: ignore[call-overload]
    with Receiver(lab.b) as rx, nc.Injector(lab.a, frame_count=64) as inj:
        assert inj.send_many(tuple(big)) == 600
        assert inj.send_many(mixed) == 40  # type: ignore[arg-type]
        assert inj.wait_drained(10.0)
        st = inj.stats()
        assert (st.queued, st.sent, st.rejected) == (640, 640, 0)
        assert rx.wait_for(640, timeout=10.0) == want
