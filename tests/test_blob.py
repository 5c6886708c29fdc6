"""Owned batches keep their packets' bytes in one ``_fastpath.Blob`` (no root).

A ring block's owned copy is made in one C call (``_fastpath.own``): the
columns and every packet's bytes, one after the other, behind their bounds.
Each packet's own ``bytes`` is made when the packet is taken. These tests
check that what comes out is exactly what went into the block (any frame
size, a snaplen cut, pickling, indexing), that the blob's spare buffers are
never handed out while a batch still uses them, and that a blob rebuilt
from outside data is checked.
"""

from __future__ import annotations

import gc
import pickle
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from netring_chan import OwnedBatch
from netring_chan._fastpath import Blob, Packets, blob, split
from netring_chan._lowlevel import ffi
from netring_chan.packet import OwnedPacket
from netring_chan.rings.afpacket.blocks import Lease, walk_block
from netring_chan.testing import tpacket_v3_block

pytestmark = pytest.mark.unprivileged

TS0 = 1_700_000_000_000_000_000


def frames_of(sizes: list[int], salt: int = 0) -> list[bytes]:
    return [bytes((i * 7 + k + salt) & 0xFF for i in range(n)) for k, n in enumerate(sizes)]


def owned(frames: list[bytes], size: int = 1 << 20, snaplen: int = 0xFFFFFFFF) -> OwnedBatch:
    buf = tpacket_v3_block(frames, [TS0 + i for i in range(len(frames))], size=size)
    with walk_block(Lease(ffi.from_buffer("uint8_t[]", buf), len(buf)), snaplen) as b:
        ob = b.to_owned()
    buf[:] = bytes(len(buf))  # the block is reused by the kernel: the copy must not care
    return ob


SIZES = [1, 14, 60, 64, 255, 256, 257, 511, 512, 513, 1500, 1514, 4000, 9000]


def test_every_size_comes_out_as_it_went_in() -> None:
    frames = frames_of(SIZES)
    ob = owned(frames)
    assert ob._blob is not None and len(ob._blob) == len(frames)
    pkts = list(ob)
    assert [p.data for p in pkts] == frames
    assert all(type(p.data) is bytes for p in pkts)
    assert [p.timestamp_ns for p in pkts] == [TS0 + i for i in range(len(frames))]
    assert ob.datas() == frames
    assert [ob[i].data for i in range(len(frames))] == frames
    assert ob[-1].data == frames[-1]
    assert list(ob.caplens) == SIZES
    assert ob.nbytes == sum(SIZES)


def test_snaplen_cuts_every_packet() -> None:
    frames = frames_of([10, 100, 1500])
    ob = owned(frames, snaplen=64)
    assert [p.data for p in ob] == [f[:64] for f in frames]
    assert list(ob.caplens) == [10, 64, 64]
    assert list(ob.wire_lens) == [10, 100, 1500]


def test_pickle_round_trip_keeps_bytes_and_columns() -> None:
    frames = frames_of([60, 1500, 700])
    ob = owned(frames)
    back = pickle.loads(pickle.dumps(ob))
    assert type(back) is OwnedBatch and back._blob is not None
    assert list(back) == list(ob)
    assert back.datas() == frames
    assert (back.seq_num, back.timed_out, back.source) == (ob.seq_num, ob.timed_out, ob.source)


def test_iterator_outlives_its_batch() -> None:
    frames = frames_of([1500] * 50)
    ob = owned(frames)
    it = iter(ob)
    first = next(it)
    del ob
    gc.collect()
    for _ in range(3):  # other batches may now take any freed buffer
        owned(frames_of([1500] * 600, salt=9))
    assert [first.data] + [p.data for p in it] == frames


def test_spare_buffers_never_reach_a_live_batch() -> None:
    # Blocks of ~1 MiB of data: their buffers go to the spares when freed and
    # are reused by the next batches. Kept batches must stay intact whatever
    # was freed and reused around them.
    kept = []
    for r in range(12):
        frames = frames_of([1500] * 650, salt=r)
        ob = owned(frames, size=1 << 20)
        if r % 3 == 0:
            kept.append((frames, ob))
        del ob
    for frames, ob in kept:
        assert ob.datas() == frames
        assert [p.data for p in ob] == frames


def test_empty_batch() -> None:
    ob = owned([])
    assert len(ob) == 0 and list(ob) == [] and ob.datas() == []
    assert pickle.loads(pickle.dumps(ob)).datas() == []


def test_blob_from_outside_data_is_checked() -> None:
    offs = lambda *xs: b"".join(x.to_bytes(4, "little") for x in xs)  # noqa: E731
    b = blob(b"abcdef", offs(0, 2, 2, 6))
    assert isinstance(b, Blob) and len(b) == 3
    assert split(b) == [b"ab", b"", b"cdef"]
    assert b.data() == b"abcdef" and b.offsets() == offs(0, 2, 2, 6)
    with pytest.raises(ValueError, match="whole number"):
        blob(b"abc", b"\0\0\0")
    with pytest.raises(ValueError, match="whole number"):
        blob(b"", b"")
    with pytest.raises(ValueError, match="must not decrease"):
        blob(b"abcdef", offs(0, 4, 2, 6))
    with pytest.raises(ValueError, match="from 0 to len"):
        blob(b"abcdef", offs(1, 6))
    with pytest.raises(ValueError, match="from 0 to len"):
        blob(b"abcdef", offs(0, 5))
    with pytest.raises(TypeError):
        blob("abc", offs(0, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a Blob"):
        split(b"abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a list or a Blob"):
        Packets(OwnedPacket, b"abc", [], None)


def run_child(code: str) -> None:
    """Run ``code`` in a fresh interpreter: a memory error there kills the
    child (reported with its signal), not the test run."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"child exited with {r.returncode}: {r.stderr[-2000:]}"


def test_blob_cannot_be_made_empty_handed() -> None:
    # A Blob() made without a buffer read address 0 on .data() (a crash).
    with pytest.raises(TypeError, match="use blob"):
        Blob()


def test_own_refuses_a_record_past_the_extent() -> None:
    from netring_chan._fastpath import own

    buf = bytearray(4096)
    meta = ffi.new("struct nc_pkt[]", 2)
    meta[0].data_off, meta[0].snaplen = 100, 200
    meta[1].data_off, meta[1].snaplen = 3000, 1000
    addr = lambda c: int(ffi.cast("uintptr_t", c))  # noqa: E731
    base = ffi.from_buffer("uint8_t[]", buf)
    cols, b = own(addr(meta), 2, 0xFFFFFFFF, addr(base), 4000)
    assert split(b) == [bytes(200), bytes(1000)]
    with pytest.raises(ValueError, match="packet 1 .* past the extent 3999"):
        own(addr(meta), 2, 0xFFFFFFFF, addr(base), 3999)
    cols, b = own(addr(meta), 2, 999, addr(base), 3999)  # the snap limit cuts it inside
    assert [len(x) for x in split(b)] == [200, 999]


def test_release_in_another_thread_during_to_owned() -> None:
    # The copy runs without the GIL on addresses. A release() in another
    # thread meanwhile dropped the batch's lease: the block (here a MemorySource
    # block, 8 MiB, freed with it and at once reused for other data; on a
    # ring: handed back to the kernel, or unmapped after close()) changed or
    # went away under the copy.
    run_child("""
        import threading
        from netring_chan.testing import MemorySource

        frames = [bytes([k & 0xFF]) * 1500 for k in range(5000)]  # 8 MiB blocks: a long copy
        src = MemorySource(block_size=8 << 20, max_blocks=4)
        junk = []

        def release(b, go):
            go.wait()
            b.release()
            junk.append(bytearray(b"Z") * (8 << 20))  # likely where the freed block was

        for r in range(100):
            src.push(frames)
            b = src.next_batch()
            assert b is not None and len(b) == 5000
            go = threading.Event()
            t = threading.Thread(target=release, args=(b, go))
            t.start()
            go.set()
            try:
                ob = b.to_owned()
            except Exception as e:  # released before the copy began: refused cleanly
                assert "released" in str(e), e
            else:
                assert ob.datas() == frames  # the lease was held: the bytes are intact
            t.join()
            junk.clear()
        src.close()
    """)


def test_records_rewritten_during_the_copy() -> None:
    # A batch released by another thread hands its records to the next walk,
    # which may rewrite them while the copy still reads them (here: every
    # byte set to 0xFF, as far-away data and huge lengths). The copy must
    # stay inside the block and inside the blob whatever it reads.
    run_child("""
        import ctypes, threading
        from netring_chan._lowlevel import ffi
        from netring_chan.testing import MemorySource

        frames = [bytes([k & 0xFF]) * 1500 for k in range(650)]
        src = MemorySource(block_size=1 << 20, max_blocks=4)
        for r in range(300):
            src.push(frames)
            b = src.next_batch()
            addr, size = int(ffi.cast("uintptr_t", b._meta)), len(b) * ffi.sizeof("struct nc_pkt")
            go = threading.Event()
            t = threading.Thread(target=lambda: (go.wait(), ctypes.memset(addr, 0xFF, size)))
            t.start()
            go.set()
            try:
                ob = b.to_owned()
            except ValueError as e:  # rewritten before the copy began: refused whole
                assert "past the extent" in str(e), e
                t.join()
                b.release()
                continue
            t.join()
            assert len(ob) == 650 and ob.nbytes <= 650 * 1500
            assert sum(len(d) for d in ob.datas()) == ob.nbytes
            b.release()
        src.close()
    """)


def test_spare_buffers_are_bounded_in_bytes() -> None:
    # Freed blob buffers are kept for reuse, four at most: a process that
    # once copied huge blocks (block_size may be up to 1 GiB) must not keep
    # four of them idle for good.
    run_child("""
        from netring_chan._fastpath import own
        from netring_chan._lowlevel import ffi

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        size = 96 << 20
        base = bytearray(b"x") * size
        meta = ffi.new("struct nc_pkt[]", 1)
        meta[0].data_off, meta[0].snaplen = 0, size
        addr = lambda c: int(ffi.cast("uintptr_t", c))
        for _ in range(4):
            r0 = rss()
            cols, blob = own(addr(meta), 1, 0xFFFFFFFF, addr(ffi.from_buffer("uint8_t[]", base)), size)
            assert rss() - r0 > size // 2
            del cols, blob
            assert rss() - r0 < size // 4, (rss() - r0) >> 20
    """)


def test_indexing_takes_one_packet_not_the_whole_batch() -> None:
    # ob[i] made every packet's bytes (datas()) and kept them beside the
    # blob: a second copy of the whole batch for one packet.
    frames = frames_of([1500] * 200)
    ob = owned(frames)
    assert ob[7].data == frames[7] and ob[-1].data == frames[-1] and ob[-200].data == frames[0]
    assert ob._datas is None
    with pytest.raises(IndexError):
        ob[200]
    with pytest.raises(IndexError):
        ob[-201]
    assert [p.data for p in ob[10:13]] == frames[10:13]
    assert ob[5] == list(ob)[5]
    b = ob._blob
    assert b is not None and b[3] == frames[3] and b[-1] == frames[-1]


def test_writer_takes_the_blob_whole(tmp_path: Any) -> None:
    # Writing a ring block's copy split the blob into a bytes per packet (kept
    # on the batch) only to join them again.
    from netring_chan.files import open_reader, open_writer

    frames = frames_of([60, 1500, 9000, 1])
    ob = owned(frames)
    for fmt in ("pcap", "pcapng"):
        path = str(tmp_path / f"x.{fmt}")
        with open_writer(path) as w:
            assert w.write(ob) == 4
        assert ob._datas is None
        back: list[OwnedPacket] = []
        with open_reader(path) as r:
            while (b := r.next_batch()) is not None:
                back.extend(b)
        assert [p.data for p in back] == frames
        assert [p.timestamp_ns for p in back] == [TS0 + i for i in range(4)]
