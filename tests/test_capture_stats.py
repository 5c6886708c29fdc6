"""Exact kernel counters with a ring too small for the traffic.

What TPACKET_V3 actually shows when it runs out of ring (net/packet/af_packet.c,
checked on this kernel by the test below):

* The kernel fills block k, closes it (hands it to us) and opens block k+1
  with the next ``seq_num``. If block k+1 is still ours, it *freezes* the
  queue (``tp_freeze_q_cnt``) and drops every packet (``tp_drops``) until we
  hand a block back; the next packet then opens that block. No block is
  opened while frozen, so **drops never leave a ``seq_num`` gap** for the
  reader: the sequence stays contiguous. What shows the loss is the counters
  and the ``TP_STATUS_LOSING`` bit the kernel sets in the *block* status
  (V3 moved it off the packets) of blocks closed while ``tp_drops`` is
  non-zero, i.e. until ``stats()`` reads and clears it: ``batch.losing``.
* ``tp_packets`` counts drops too, so packets == delivered + drops exactly.
"""

from __future__ import annotations

import time

import netring_chan as nc
from capture_util import hwaddr, send_in_order, seq_of, tagged
from lab import ETH_P_LAB, Lab

FILTER = f"ether proto {ETH_P_LAB:#x}"  # count only our frames


def _drain(cap: nc.Capture, quiet_for: float = 0.3) -> list[tuple[int, bool, list[int]]]:
    """(seq_num, losing, frame numbers) of every block until none comes for a while."""
    out = []
    while (b := cap.next_batch_blocking(quiet_for)) is not None:
        with b:
            out.append((b.seq_num, b.losing, [seq_of(bytes(p.data)) for p in b]))
    return out


def test_exact_stats_with_tiny_ring_and_stalled_reader(lab: Lab) -> None:
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    n = 300
    with nc.Capture(lab.a, block_size=4096, block_count=2, block_timeout_ms=20, filter=FILTER) as cap:
        send_in_order(lab, [tagged(dst, src, i, 100) for i in range(n)])  # nobody reads
        blocks = _drain(cap)
        delivered = [s for _, _, frames in blocks for s in frames]
        # Both blocks filled before the first drop: neither says losing.
        assert [lo for _, lo, _ in blocks] == [False] * len(blocks)

        # Loss is visible on the next block the kernel closes...
        send_in_order(lab, [tagged(dst, src, n + i, 100) for i in range(3)])
        after = _drain(cap)
        assert [f for _, _, f in after] == [[n, n + 1, n + 2]]
        assert after[0][1] is True  # batch.losing

        st = cap.stats()
        # ...and exactly in the counters.
        assert st.packets == n + 3
        assert st.packets == len(delivered) + 3 + st.drops
        assert st.received == len(delivered) + 3
        assert st.drops > 0 and st.freezes >= 1
        assert st.delta is not None and (st.delta.packets, st.delta.drops) == (st.packets, st.drops)

        # Reading the stats cleared the kernel's loss flag.
        send_in_order(lab, [tagged(dst, src, n + 3 + i, 100) for i in range(3)])
        again = _drain(cap)
        assert [lo for _, lo, _ in again] == [False]
        st2 = cap.stats()
        assert st2.delta is not None
        assert (st2.delta.packets, st2.delta.drops, st2.delta.freezes) == (3, 0, 0)
        assert (st2.packets, st2.drops) == (n + 6, st.drops)

    # The reader got the first frames (the ring was empty then), in order, and
    # the ring kept frames until it froze: a prefix of what was sent.
    assert delivered == list(range(len(delivered)))
    assert 0 < len(delivered) < n
    # seq_num: one per block the kernel opened, contiguous, drops or not.
    seqs = [s for s, _, _ in blocks + after + again]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_held_batch_stalls_the_ring_and_counts_stay_exact(lab: Lab) -> None:
    """A reader that keeps a batch: the kernel freezes on that block, nothing is lost silently."""
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    with nc.Capture(lab.a, block_size=4096, block_count=4, block_timeout_ms=10, filter=FILTER) as cap:
        send_in_order(lab, [tagged(dst, src, 0, 100)])
        held = cap.next_batch_blocking(2.0)
        assert held is not None and len(held) == 1
        send_in_order(lab, [tagged(dst, src, 1 + i, 1000) for i in range(100)])
        time.sleep(0.05)
        rest = _drain(cap, 0.2)
        got = [0] + [s for _, _, f in rest for s in f]
        held.release()
        rest2 = _drain(cap, 0.2)  # thawed: nothing new was sent, nothing more to read
        st = cap.stats()
    assert rest2 == []
    assert got == list(range(len(got)))
    assert st.packets == 101 and st.packets == len(got) + st.drops and st.drops > 0
    assert st.freezes >= 1
