"""Injector.try_send_many: one C call per run of free slots, never waiting,
stopping before any frame that needs the full per-frame checks."""

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
        assert inj.try_send_many(good[:3]) == 3
        # Stops before a frame that is too short, not bytes-like, or too long.
        assert inj.try_send_many([good[3], b"\x00" * 10, good[4]]) == 1
        assert inj.try_send_many([b"\x00" * 10, good[4]]) == 0
        assert inj.try_send_many(["not bytes", good[4]]) == 0  # type: ignore[list-item]
        assert inj.try_send_many([b"\x00" * (inj.mtu + 15)]) == 0
        assert inj.try_send_many([]) == 0
        # 8 slots, 4 queued: exactly 4 more fit (no flush while not full).
        assert inj.try_send_many(good[4:20]) == 4
        assert inj.stats().sent == 0
        # Full: it kicks the kernel once; the qdisc lets a frame or two out,
        # so only as many as came free are queued, never more than the ring.
        k = inj.try_send_many(good[8:30])
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
        inj.try_send_many([seq_frame(0, 60)])
