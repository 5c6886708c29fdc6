"""A capture closed from another thread while a block is copied out.

``to_owned`` copies a ring block without the GIL, on addresses. ``close()``
in another thread meanwhile must neither unmap the ring nor hand the block
back under the copy: the batch holds the block's lease, and the mapping is
unmapped only after the last lease dies (``rings/_mapping.py``).
"""

from __future__ import annotations

import threading
import time

import netring_chan as nc
from capture_util import hwaddr, ring_mappings, send_in_order, seq_of, tagged
from lab import Lab, frame, mac


def test_close_from_another_thread_during_a_large_copy(lab: Lab) -> None:
    with lab.inside():
        src, dst = hwaddr(lab.b), hwaddr(lab.a)
        frames = [tagged(dst, src, i, 1500) for i in range(2000)]
        by_seq = {seq_of(f): f for f in frames}
        maps0 = ring_mappings()
        copied = 0
        for _ in range(12):
            cap = nc.Capture(lab.a, block_size=4 << 20, block_count=2, block_timeout_ms=20)
            send_in_order(lab, frames)
            b = cap.next_batch_blocking(2.0)
            assert b is not None
            go = threading.Event()
            t = threading.Thread(target=lambda: (go.wait(), cap.close()))
            t.start()
            go.set()
            ob = b.to_owned()  # close() runs meanwhile
            t.join()
            assert cap.closed
            assert ring_mappings() == maps0 + 1  # the batch still holds the ring
            b.release()
            assert ring_mappings() == maps0  # and its release unmapped it
            datas = [d for d in ob.datas() if len(d) == 1500 and seq_of(d) in by_seq]
            assert datas, "no lab frame in the block"
            assert all(d == by_seq[seq_of(d)] for d in datas)
            copied += len(datas)
        assert copied >= 12 * 1000


def test_xdp_close_from_another_thread_during_a_large_copy(lab: Lab) -> None:
    # The same on an AF_XDP socket: the batch leases the UMEM.
    frames = [frame(mac(1), mac(2), i.to_bytes(4, "big") + bytes([i % 251]) * 1482) for i in range(2000)]
    copied = 0
    for _ in range(6):
        s = nc.XdpSocket(lab.a, mode="rx", frame_count=4096, fill_size=4096, rx_size=4096, batch_size=4096)
        lab.send(frames)
        time.sleep(0.1)  # let the frames reach the RX ring: one batch takes them all
        b = s.next_batch()
        assert b is not None
        go = threading.Event()
        t = threading.Thread(target=lambda: (go.wait(), s.close()))
        t.start()
        go.set()
        ob = b.to_owned()
        t.join()
        assert s.closed
        b.release()
        got = ob.datas()
        assert got == frames[:len(got)]
        copied += len(got)
    assert copied >= 6 * 1000
