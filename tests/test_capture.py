"""Capture against the real kernel: frames crafted by the stdlib sender on one
veth end arrive on the other byte-exact, in order, with the right metadata.
"""

from __future__ import annotations

import pickle
import socket
import struct
import time
from typing import Any


import netring_chan as nc
from capture_util import collect, hwaddr, ipv4_frame, send_in_order, seq_of, tagged
from lab import ETH_P_LAB, Lab, mac

ARPHRD_ETHER = 1
BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")
OTHER = mac(0x99)  # a unicast address nobody in the lab has

# 60 bytes (minimum frame without FCS) up to a 9000-byte-MTU jumbo frame,
# around every boundary that matters: 8-byte record alignment, the 1500 MTU,
# a page, and the largest frame the lab's MTU allows.
SIZES = [60, 61, 62, 63, 64, 65, 67, 71, 72, 100, 127, 128, 129, 255, 256, 511, 512,
         1000, 1499, 1500, 1514, 1515, 2048, 4000, 4096, 4097, 8000, 9000, 9013, 9014]


def test_frames_byte_exact_in_order_with_metadata(lab_factory: type[Lab]) -> None:
    lab = lab_factory(mtu=9000)
    with lab.inside():
        src = hwaddr(lab.b)
        dst = hwaddr(lab.a)
        # 16 KiB blocks hold one jumbo frame (plus 48-byte block header, 82
        # bytes up to the MAC header) or ~90 small ones.
        with nc.Capture(lab.a, block_size=1 << 14, block_count=256, block_timeout_ms=5) as cap:
            frames = [tagged(dst, src, i, SIZES[i % len(SIZES)]) for i in range(3 * len(SIZES))]
            t0 = time.time_ns()
            send_in_order(lab, frames)
            views: list[tuple[bytes, nc.OwnedPacket, int, int, int, int, bytes, int, int]] = []
            owned_batches: list[nc.OwnedBatch] = []
            seqs: list[int] = []
            deadline = time.monotonic() + 5
            while len(views) < len(frames) and time.monotonic() < deadline:
                b = cap.next_batch_blocking(0.5)
                if b is None:
                    continue
                with b:
                    seqs.append(b.seq_num)
                    assert b.first_timestamp_ns <= b.last_timestamp_ns
                    for p in b:
                        if p.protocol != ETH_P_LAB:
                            continue
                        views.append((bytes(p.data), p.to_owned(), p.timestamp_ns, p.wire_len,
                                      p.caplen, int(p.direction), p.source_address, p.ifindex,
                                      p.hatype))
                    owned_batches.append(b.to_owned())
            t1 = time.time_ns()
            stats = cap.stats()

        got = [v[0] for v in views]
        assert [seq_of(g) for g in got] == list(range(len(frames)))
        assert got == frames  # byte-exact and in order
        ifx = socket.if_nametoindex(lab.a)
        for f, (data, owned, ts, wire, caplen, direction, addr, ifindex, hatype) in zip(frames, views):
            assert wire == caplen == len(f)
            assert direction == nc.Direction.HOST
            assert addr == src  # sll_addr: the sender's MAC
            assert ifindex == ifx
            assert hatype == ARPHRD_ETHER
            assert owned.data == f and owned.timestamp_ns == ts and not owned.truncated
            again = pickle.loads(pickle.dumps(owned))
            assert (again.data, again.timestamp_ns, again.wire_len, again.source_address) == (f, ts, wire, src)
            assert owned.protocol == ETH_P_LAB and owned.source_address == src
        stamps = [v[2] for v in views]
        assert stamps == sorted(stamps)  # monotonic in arrival order
        # Kernel stamps are CLOCK_REALTIME: within the send..receive window
        # (a little slack for clock granularity).
        assert t0 - 10_000_000 <= stamps[0] and stamps[-1] <= t1 + 10_000_000
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no block gap
        # The owned copy of each whole block (one C call) agrees with the views,
        # and survives pickling.
        owned_lab = [p for ob in owned_batches for p in pickle.loads(pickle.dumps(ob))
                     if p.protocol == ETH_P_LAB]
        assert [p.data for p in owned_lab] == frames
        assert [p.timestamp_ns for p in owned_lab] == stamps
        assert [p.status for p in owned_lab] == [v[1].status for v in views]
        assert stats.drops == 0 and stats.packets >= len(frames)


def test_direction_of_each_destination_and_outgoing(lab: Lab) -> None:
    src = hwaddr(lab.b)
    dst = hwaddr(lab.a)
    dests = [(dst, nc.Direction.HOST), (BCAST, nc.Direction.BROADCAST),
             (MCAST, nc.Direction.MULTICAST), (OTHER, nc.Direction.OTHER_HOST)]
    frames = [tagged(d, src, i, 80) for i, (d, _) in enumerate(dests)]
    opts = dict(block_size=1 << 16, block_count=4, block_timeout_ms=5, filter=f"ether proto {ETH_P_LAB:#x}")
    with nc.Capture(lab.a, **opts) as rx, nc.Capture(lab.b, **opts) as tx, \
            nc.Capture(lab.b, ignore_outgoing=True, **opts) as tx_quiet:
        send_in_order(lab, frames)
        on_a = collect(rx, len(frames))
        on_b = collect(tx, len(frames))
        assert collect(tx_quiet, 1, timeout=0.3) == []  # ignore_outgoing hides our own sends
    assert [p.data for p in on_a] == frames
    assert [p.direction for p in on_a] == [want for _, want in dests]
    assert [p.data for p in on_b] == frames
    assert all(p.direction == nc.Direction.OUTGOING for p in on_b)
    assert all(p.source_address == src for p in on_a + on_b)
    assert {p.ifindex for p in on_a} == {socket.if_nametoindex(lab.a)}
    assert {p.ifindex for p in on_b} == {socket.if_nametoindex(lab.b)}


def test_snaplen_truncates_and_keeps_wire_length(lab: Lab) -> None:
    src, dst = hwaddr(lab.b), hwaddr(lab.a)
    sizes = [60, 99, 100, 101, 1514]
    frames = [tagged(dst, src, i, n) for i, n in enumerate(sizes)]
    with nc.Capture(lab.a, snaplen=100, block_size=1 << 16, block_count=4, block_timeout_ms=5,
                    filter=f"ether proto {ETH_P_LAB:#x}") as cap:
        send_in_order(lab, frames)
        seen: list[tuple[bytes, int, int, bool, nc.OwnedPacket]] = []
        owned: list[nc.OwnedPacket] = []
        deadline = time.monotonic() + 5
        while len(seen) < len(frames) and time.monotonic() < deadline:
            b = cap.next_batch_blocking(0.5)
            if b is None:
                continue
            with b:
                seen += [(bytes(p.data), p.caplen, p.wire_len, p.truncated, p.to_owned()) for p in b]
                owned += list(b.to_owned())
    assert len(seen) == len(frames)
    for f, (data, caplen, wire, trunc, op) in zip(frames, seen):
        assert data == f[:100] and caplen == len(data) == min(len(f), 100)
        assert wire == len(f)
        assert trunc == (len(f) > 100)
        assert op.data == data and op.wire_len == len(f) and op.truncated == trunc
    assert [p.data for p in owned] == [f[:100] for f in frames]
    assert [p.truncated for p in owned] == [len(f) > 100 for f in frames]


def test_frame_larger_than_block_is_truncated_by_kernel(lab_factory: type[Lab]) -> None:
    """V3 cuts a frame to what fits in one block; we report it as truncated."""
    lab = lab_factory(mtu=9000)
    with lab.inside():
        src, dst = hwaddr(lab.b), hwaddr(lab.a)
        big = tagged(dst, src, 7, 9014)
        with nc.Capture(lab.a, block_size=4096, block_count=4, block_timeout_ms=5,
                        filter=f"ether proto {ETH_P_LAB:#x}") as cap:
            lab.send([big])
            (p,) = collect(cap, 1)
    assert p.wire_len == 9014
    assert 0 < len(p.data) < 4096 and p.data == big[:len(p.data)]
    assert p.truncated


def test_packets_iterator_limits_lose_nothing(lab: Lab) -> None:
    """count= stops mid-block; the rest of that block comes with the next call."""
    src, dst = hwaddr(lab.b), hwaddr(lab.a)
    frames = [tagged(dst, src, i, 64) for i in range(10)]
    with nc.Capture(lab.a, block_size=1 << 16, block_count=4, block_timeout_ms=20,
                    filter=f"ether proto {ETH_P_LAB:#x}") as cap:
        send_in_order(lab, frames)  # all ten land in one block
        first = list(cap.packets(count=3, duration=5))
        second = list(cap.packets(count=4, duration=5))
        rest = list(cap.packets(idle_timeout=0.2))
        assert [p.data for p in first + second + rest] == frames
        assert (len(first), len(second)) == (3, 4)
        t0 = time.monotonic()
        assert list(cap.packets(duration=0.2)) == []
        assert 0.19 <= time.monotonic() - t0 < 1.0
        send_in_order(lab, frames[:2])
        it = iter(cap)  # endless: take two
        assert [next(it).data, next(it).data] == frames[:2]
    assert list(cap.packets()) == []  # closed: ends at once


def test_vlan_tag_rx_hash_and_promiscuous(lab: Lab) -> None:
    """The kernel strips an 802.1Q tag into metadata; rx_hash fills a flow hash;
    promiscuous mode is a membership that close() drops."""
    src, dst = hwaddr(lab.b), hwaddr(lab.a)
    inner = tagged(dst, src, 1, 80)
    vlan = inner[:12] + struct.pack("!HH", 0x8100, (3 << 13) | 100) + inner[12:]
    flow_a = [ipv4_frame(dst, src, "10.0.0.1", "10.0.0.2", 1000, 53, bytes([i])) for i in range(2)]
    flow_b = ipv4_frame(dst, src, "10.0.0.1", "10.0.0.3", 1001, 53, b"b")
    plain = [tagged(dst, src, 2, 64)]

    def promiscuity() -> int:
        out = lab.ip("-d", "link", "show", lab.a).stdout
        return int(out.split("promiscuity ")[1].split()[0])

    opts: dict[str, Any] = dict(block_size=1 << 16, block_count=4, block_timeout_ms=5)
    with nc.Capture(lab.a, rx_hash=True, promiscuous=True, **opts) as cap, \
            nc.Capture(lab.a, **opts) as nohash:
        assert promiscuity() == 1
        send_in_order(lab, [vlan, *flow_a, flow_b, *plain])
        got = collect(cap, 5)
        got_nohash = collect(nohash, 5)
    assert promiscuity() == 0
    v, a1, a2, b, pl = got
    assert v.data == inner and v.wire_len == len(inner)  # tag moved out of the data
    assert (v.vlan_tci, v.vlan_tpid, v.protocol) == ((3 << 13) | 100, 0x8100, ETH_P_LAB)
    assert v.status & nc.Status.VLAN_VALID
    assert pl.vlan_tci is None and pl.vlan_tpid is None
    assert a1.rxhash == a2.rxhash != 0 and b.rxhash not in (0, a1.rxhash)
    assert [p.rxhash for p in got_nohash] == [0] * 5
