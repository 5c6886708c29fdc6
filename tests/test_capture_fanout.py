"""Fanout groups on a real veth: how the kernel spreads frames over captures."""

from __future__ import annotations

from collections import Counter

import pytest

import netring_chan as nc
from capture_util import hwaddr, ipv4_frame, quiet, send_in_order
from lab import Lab

RING = dict(block_size=1 << 16, block_count=8, block_timeout_ms=5, filter="udp")


def _flows(lab: Lab, nflows: int, per_flow: int) -> tuple[list[bytes], dict[bytes, int]]:
    """Interleaved frames of ``nflows`` UDP/IPv4 flows; frame -> flow number.

    Flows differ in addresses and ports, so the kernel's flow hash differs;
    each frame carries a unique payload so it can be traced.
    """
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    frames, flow_of = [], {}
    for k in range(per_flow):
        for f in range(nflows):
            fr = ipv4_frame(dst, src, f"10.1.{f}.1", f"10.2.{f % 7}.2", 1000 + f, 2000 + 3 * f,
                            f"flow {f} frame {k}".encode())
            frames.append(fr)
            flow_of[fr] = f
    return frames, flow_of


def _both(caps: list[nc.Capture], total: int) -> list[list[bytes]]:
    """Read every capture until together they hold ``total`` frames."""
    seen: list[list[bytes]] = [[] for _ in caps]
    for _ in range(20):
        for i, c in enumerate(caps):
            seen[i] += [p.data for p in quiet(c, 0.02)]
        if sum(map(len, seen)) >= total:
            break
    for i, c in enumerate(caps):  # anything late would break the count below
        seen[i] += [p.data for p in quiet(c, 0.05)]
    return seen


def test_hash_fanout_keeps_each_flow_on_one_capture(lab: Lab) -> None:
    frames, flow_of = _flows(lab, nflows=32, per_flow=6)
    fo = nc.Fanout(nc.FanoutMode.HASH, group_id=0x4E43)
    with nc.Capture(lab.a, fanout=fo, **RING) as c1, nc.Capture(lab.a, fanout=fo, **RING) as c2:
        assert c1.fanout_group_id == c2.fanout_group_id == 0x4E43
        send_in_order(lab, frames)
        s1, s2 = _both([c1, c2], len(frames))
    # Together they saw every frame exactly once.
    assert Counter(s1 + s2) == Counter(frames)
    flows1 = {flow_of[f] for f in s1}
    flows2 = {flow_of[f] for f in s2}
    assert flows1 and flows2, "hash fanout sent every flow to one capture"
    assert not flows1 & flows2, f"flows split across captures: {sorted(flows1 & flows2)}"
    # Within one capture a flow keeps its order.
    for side in (s1, s2):
        for f in flows1 | flows2:
            mine = [x for x in side if flow_of[x] == f]
            assert mine == [x for x in frames if flow_of[x] == f] or not mine


def test_lb_fanout_round_robins(lab: Lab) -> None:
    frames, _ = _flows(lab, nflows=1, per_flow=40)  # one flow: hashing would not split it
    fo = nc.Fanout(nc.FanoutMode.LB, group_id=0x4E44)
    with nc.Capture(lab.a, fanout=fo, **RING) as c1, nc.Capture(lab.a, fanout=fo, **RING) as c2:
        send_in_order(lab, frames)
        s1, s2 = _both([c1, c2], len(frames))
    assert Counter(s1 + s2) == Counter(frames)
    # The kernel picks atomic_inc(rr_cur) % 2: strict alternation.
    assert abs(len(s1) - len(s2)) <= 1, (len(s1), len(s2))


def test_unique_id_group_can_be_joined_by_its_id(lab: Lab) -> None:
    frames, flow_of = _flows(lab, nflows=32, per_flow=2)
    with nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.HASH), **RING) as c1, \
            nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.HASH), **RING) as other:
        gid = c1.fanout_group_id
        assert isinstance(gid, int) and 0 <= gid <= 0xFFFF
        assert other.fanout_group_id != gid  # the kernel picked a fresh id for each
        with nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.HASH, group_id=gid), **RING) as c2:
            assert c2.fanout_group_id == gid
            # A different mode cannot join an existing group.
            with pytest.raises(nc.ConfigError, match="fanout"):
                nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.LB, group_id=gid), **RING)
            send_in_order(lab, frames)
            s1, s2, s3 = _both([c1, c2, other], 2 * len(frames))
    assert Counter(s1 + s2) == Counter(frames)
    assert Counter(s3) == Counter(frames)  # alone in its own group
    assert s1 and s2
    assert not {flow_of[f] for f in s1} & {flow_of[f] for f in s2}


def test_fanout_config_is_validated() -> None:
    with pytest.raises(nc.ConfigError, match="group_id"):
        nc.Fanout(nc.FanoutMode.HASH, group_id=0x10000)
    with pytest.raises(nc.ConfigError, match="mode"):
        nc.Fanout(99)  # type: ignore[arg-type]
    with pytest.raises(nc.ConfigError, match="UNIQUEID"):
        nc.Fanout(nc.FanoutMode.HASH, group_id=5, flags=nc.FanoutFlag.UNIQUEID)
    with pytest.raises(nc.ConfigError, match="flags"):
        nc.Fanout(nc.FanoutMode.HASH, group_id=5, flags=1 << 3)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", list(nc.FanoutMode))
def test_every_mode_delivers_each_frame_exactly_once(lab: Lab, mode: nc.FanoutMode) -> None:
    frames, flow_of = _flows(lab, nflows=16, per_flow=4)
    fo = nc.Fanout(mode, group_id=0x4E50 + int(mode))
    with nc.Capture(lab.a, fanout=fo, **RING) as c1, nc.Capture(lab.a, fanout=fo, **RING) as c2:
        send_in_order(lab, frames)  # from one CPU
        s1, s2 = _both([c1, c2], len(frames))
    assert Counter(s1 + s2) == Counter(frames)
    if mode in (nc.FanoutMode.CPU, nc.FanoutMode.QM, nc.FanoutMode.ROLLOVER):
        # One sending CPU, one veth RX queue, a ring with room: one member takes all.
        assert not s1 or not s2, (mode, len(s1), len(s2))
    elif mode is nc.FanoutMode.RANDOM:
        assert s1 and s2


def test_fanout_flag_ignore_outgoing(lab: Lab) -> None:
    frames, _ = _flows(lab, nflows=2, per_flow=2)
    quiet_fo = nc.Fanout(nc.FanoutMode.HASH, group_id=0x4E60, flags=nc.FanoutFlag.IGNORE_OUTGOING)
    with nc.Capture(lab.b, fanout=quiet_fo, **RING) as ignoring, \
            nc.Capture(lab.b, fanout=nc.Fanout(nc.FanoutMode.HASH, group_id=0x4E61), **RING) as seeing:
        send_in_order(lab, frames)  # leaves through b
        assert _both([seeing], len(frames))[0] == frames
        assert quiet(ignoring, 0.1) == []


@pytest.mark.parametrize("flags", [nc.FanoutFlag.DEFRAG, nc.FanoutFlag.ROLLOVER,
                                   nc.FanoutFlag.DEFRAG | nc.FanoutFlag.ROLLOVER])
def test_fanout_flags_join_and_deliver(lab: Lab, flags: nc.FanoutFlag) -> None:
    """Every flag can be passed (DEFRAG is bit 15 of the mode word: the
    setsockopt int is negative), and the group still delivers each frame once."""
    frames, _ = _flows(lab, nflows=8, per_flow=2)
    fo = nc.Fanout(nc.FanoutMode.HASH, group_id=0x4E70, flags=flags)
    with nc.Capture(lab.a, fanout=fo, **RING) as c1, nc.Capture(lab.a, fanout=fo, **RING) as c2:
        assert c1.fanout_group_id == c2.fanout_group_id == 0x4E70
        send_in_order(lab, frames)
        s1, s2 = _both([c1, c2], len(frames))
    assert Counter(s1 + s2) == Counter(frames)
