"""A capture thread walks and copies a block in one call (no root).

``own_block`` (``_fastpath.walk_own``) must give exactly what
``walk_block(...).to_owned()`` gives, for any block the walk accepts or
refuses, including blocks whose records overlap (more bytes than the
block's claims allow for: copied the slow way). A capture service's
threads read through ``next_owned_blocking`` when a source has it; the pull
mode does not (it copies the block again after a Ctrl-C).
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

import netring_chan as nc
from netring_chan import MalformedBlockError, OwnedBatch
from netring_chan._lowlevel import ffi, lib
from netring_chan.contract import has_next_owned
from netring_chan.rings.afpacket import blocks
from netring_chan.rings.afpacket.blocks import Lease, Scratch, own_block, walk_block
from netring_chan.testing import MemorySource, tpacket_v3_block

pytestmark = pytest.mark.unprivileged

TS0 = 1_700_000_000_000_000_000
SIZES = [1, 14, 60, 64, 255, 256, 257, 511, 512, 513, 1500, 1514, 4000, 9000]


def frames_of(sizes: list[int]) -> list[bytes]:
    return [bytes((i * 7 + k) & 0xFF for i in range(n)) for k, n in enumerate(sizes)]


def lease_of(buf: bytearray) -> Lease:
    return Lease(ffi.from_buffer("uint8_t[]", buf), len(buf))


def both(buf: bytearray, snaplen: int = 0xFFFFFFFF, slow_way: bool = False) -> tuple[OwnedBatch, OwnedBatch]:
    def copy_again(*a: Any) -> Any:
        raise AssertionError("own_block took the slow way")

    with pytest.MonkeyPatch.context() as mp:
        if not slow_way:
            mp.setattr(blocks, "_own", copy_again)
        fused = own_block(lease_of(buf), snaplen, Scratch())
    with walk_block(lease_of(buf), snaplen, Scratch()) as b:
        slow = b.to_owned()
    return fused, slow


def same(a: OwnedBatch, b: OwnedBatch) -> None:
    assert len(a) == len(b)
    assert a.datas() == b.datas()
    assert bytes(a._cols) == bytes(b._cols)  # every column, byte for byte
    assert (a.seq_num, a.timed_out) == (b.seq_num, b.timed_out)
    assert [(p.data, p.timestamp_ns, p.wire_len, p.ifindex) for p in a] == \
        [(p.data, p.timestamp_ns, p.wire_len, p.ifindex) for p in b]


@pytest.mark.parametrize("snaplen", [0xFFFFFFFF, 100, 1])
def test_the_one_call_gives_what_walk_and_copy_give(snaplen: int) -> None:
    frames = frames_of(SIZES)
    buf = tpacket_v3_block(frames, [TS0 + i for i in range(len(frames))], size=1 << 16, seq=7)
    fused, slow = both(buf, snaplen)
    same(fused, slow)
    assert fused.datas() == [f[:snaplen] for f in frames]
    assert fused.seq_num == 7
    buf[:] = bytes(len(buf))  # the block goes back to the kernel: the copy is the batch's own
    assert fused.datas() == [f[:snaplen] for f in frames]


def test_an_empty_block() -> None:
    buf = tpacket_v3_block([], [], size=4096)
    fused, slow = both(buf)
    same(fused, slow)
    assert len(fused) == 0


def test_a_timed_out_block_says_so() -> None:
    buf = tpacket_v3_block(frames_of([60]), [TS0], size=4096)
    ffi.cast("struct tpacket_block_desc *", ffi.from_buffer(buf)).hdr.bh1.block_status = \
        lib.TP_STATUS_USER | lib.TP_STATUS_BLK_TMO
    fused, slow = both(buf)
    same(fused, slow)
    assert fused.timed_out


def test_a_malformed_block_is_refused_as_the_walk_refuses_it() -> None:
    buf = tpacket_v3_block(frames_of([60, 60, 60]), [TS0] * 3, size=4096)
    bh = ffi.cast("struct tpacket_block_desc *", ffi.from_buffer(buf)).hdr.bh1
    second = bh.offset_to_first_pkt + ffi.cast("struct tpacket3_hdr *", ffi.from_buffer(buf)
                                               + bh.offset_to_first_pkt).tp_next_offset
    ffi.cast("struct tpacket3_hdr *", ffi.from_buffer(buf) + second).tp_snaplen = 1 << 20
    with pytest.raises(MalformedBlockError) as fused:
        own_block(lease_of(buf), 0xFFFFFFFF, Scratch())
    with pytest.raises(MalformedBlockError) as slow:
        walk_block(lease_of(buf), 0xFFFFFFFF, Scratch())
    assert str(fused.value) == str(slow.value)
    assert fused.value.packets == slow.value.packets == 3


def overlapping_block(n: int = 40, step: int = 64, snap: int = 4000) -> bytearray:
    """Records every ``step`` bytes, each claiming ``snap`` bytes of data: they
    overlap, which the walk accepts (each is inside the block), and their data
    add up to far more than the block's length."""
    size = 1 << 16
    buf = bytearray(size)
    base = ffi.from_buffer(buf)
    bh = ffi.cast("struct tpacket_block_desc *", base).hdr.bh1
    off0 = ffi.sizeof("struct tpacket_block_desc")
    off0 += -off0 % 16
    hdrlen = ffi.sizeof("struct tpacket3_hdr")
    hdrlen += -hdrlen % 16
    mac = hdrlen + ffi.sizeof("struct sockaddr_ll") + 2
    mac += -mac % 16
    blk_len = off0 + step * (n - 1) + mac + snap
    for k in range(n):
        off = off0 + step * k
        h = ffi.cast("struct tpacket3_hdr *", base + off)
        h.tp_sec, h.tp_nsec = divmod(TS0 + k, 1_000_000_000)
        h.tp_snaplen = h.tp_len = snap
        h.tp_mac = mac
        h.tp_next_offset = step if k + 1 < n else 0
        sll = ffi.cast("struct sockaddr_ll *", base + off + hdrlen)
        sll.sll_family = socket.AF_PACKET
        sll.sll_ifindex = 1
    bh.offset_to_first_pkt = off0
    bh.num_pkts = n
    bh.blk_len = blk_len
    bh.seq_num = 3
    bh.block_status = lib.TP_STATUS_USER
    return buf


def test_overlapping_records_are_copied_the_slow_way() -> None:
    buf = overlapping_block()
    with pytest.raises(AssertionError, match="slow way"):
        both(buf)
    fused, slow = both(buf, slow_way=True)
    same(fused, slow)
    assert len(fused) == 40 and all(len(d) == 4000 for d in fused.datas())


def through_a_service(src: MemorySource, frames: list[bytes]) -> list[bytes]:
    """Push ``frames`` into ``src`` and read them back through a ``CaptureService``."""
    src.push(frames)
    got: list[bytes] = []
    with nc.CaptureService(src) as svc:
        for pkt in svc.packets(timeout=5):
            got.append(pkt.data)
            if len(got) == len(frames):
                break
    return got


def test_a_service_thread_reads_through_next_owned_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    src = MemorySource()
    assert has_next_owned(src)
    calls = []
    real = src.next_owned_blocking

    def counting(timeout: float | None = None) -> OwnedBatch | None:
        calls.append(timeout)
        return real(timeout)

    monkeypatch.setattr(src, "next_owned_blocking", counting)
    frames = frames_of([60] * 10)
    assert through_a_service(src, frames) == frames
    assert calls


def test_a_subclass_that_overrides_only_next_batch_blocking_is_read_through_it() -> None:
    seen: list[int] = []

    class Filtering(MemorySource):
        def next_batch_blocking(self, timeout: float | None = None) -> Any:
            b = super().next_batch_blocking(timeout)
            if b is not None:
                seen.append(len(b))
            return b

    src = Filtering()
    with MemorySource() as plain:
        assert has_next_owned(plain) and not has_next_owned(src)
    frames = frames_of([60] * 10)
    assert through_a_service(src, frames) == frames
    assert sum(seen) == len(frames)


def test_a_malformed_block_goes_back_while_its_error_lives() -> None:
    buf = tpacket_v3_block(frames_of([60]), [TS0], size=4096)
    ffi.cast("struct tpacket_block_desc *", ffi.from_buffer(buf)).hdr.bh1.blk_len = 1 << 20
    released: list[bool] = []
    owner = ffi.gc(ffi.from_buffer("uint8_t[]", buf), lambda _: released.append(True))
    lease = Lease(owner, len(buf))
    del owner
    with pytest.raises(MalformedBlockError) as info:
        own_block(lease, 0xFFFFFFFF, Scratch())
    assert not released  # still ours here
    del lease
    assert released and info.value.packets == 1


def test_a_block_too_short_for_its_descriptor_is_malformed() -> None:
    buf = bytearray(8)
    with pytest.raises(MalformedBlockError):
        own_block(lease_of(buf), 0xFFFFFFFF, Scratch())
    with pytest.raises(MalformedBlockError):
        walk_block(lease_of(buf), 0xFFFFFFFF, Scratch())
