"""Zero-copy bulk access to a batch: datas() and timestamps_ns agree with the
per-packet views, and die with the batch."""

from __future__ import annotations

import time

import pytest

import netring_chan as nc
from lab import ETH_P_LAB, Lab, frame, mac


def _batches(cap: nc.Capture, want: int) -> list[nc.PacketBatch]:
    got: list[nc.PacketBatch] = []
    seen = 0
    deadline = time.monotonic() + 5
    while seen < want and time.monotonic() < deadline:
        b = cap.next_batch_blocking(0.5)
        if b is not None:
            got.append(b)
            seen += len(b)
    return got


def test_datas_and_timestamps_match_per_packet_views(lab: Lab) -> None:
    frames = [frame(mac(1), mac(2), bytes([i % 251]) * (46 + 7 * i)) for i in range(120)]
    with nc.Capture(lab.a, block_size=1 << 16, block_count=8, block_timeout_ms=10,
                    filter=f"ether proto {ETH_P_LAB:#x}", snaplen=200) as cap:
        lab.send(frames)
        batches = _batches(cap, len(frames))
        got: list[bytes] = []
        for b in batches:
            with b:
                views = b.datas()
                ts = b.timestamps_ns
                assert len(views) == len(ts) == len(b)
                for p, v, t in zip(b, views, ts):
                    assert isinstance(v, memoryview) and v.readonly
                    assert bytes(v) == bytes(p.data)
                    assert t == p.timestamp_ns
                    assert p.direction is nc.Direction.HOST
                got += [bytes(v) for v in views]
            with pytest.raises(ValueError):
                bytes(views[0])  # released with the batch
            with pytest.raises(nc.ReleasedError):
                b.datas()
            with pytest.raises(nc.ReleasedError):
                b.timestamps_ns
            assert list(ts) == sorted(ts)  # the copy outlives the batch
        assert got == [f[:200] for f in frames]
