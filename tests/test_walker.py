"""The C block walker on synthetic and malformed blocks (no kernel, no root).

Blocks are laid out here the way net/packet/af_packet.c writes them
(block descriptor, then records of tpacket3_hdr + sockaddr_ll + frame, each
8-byte aligned), through the compiler-checked struct layouts of the cffi
module. Property tests place every block so that it ends exactly at a
PROT_NONE guard page: a read past the block's end is a crash, not a silent
pass.
"""

from __future__ import annotations

import ctypes
import datetime
import mmap
import socket
from dataclasses import dataclass
from typing import Any, Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import netring_chan as nc
from netring_chan._lowlevel import ffi, lib

from netring_chan.packet import PacketBatch
from netring_chan.rings.afpacket.blocks import Lease, walk_block

pytestmark = pytest.mark.unprivileged  # CI runs these once more as an unprivileged user

BLK_HDR = ffi.sizeof("struct tpacket_block_desc")  # 48: BLK_HDR_LEN, already 8-aligned
HDRLEN = (ffi.sizeof("struct tpacket3_hdr") + lib.TPACKET_ALIGNMENT - 1) & ~(lib.TPACKET_ALIGNMENT - 1)
# Where the kernel puts the frame: netoff = TPACKET_ALIGN(TPACKET3_HDRLEN + 16), macoff = netoff - 14.
MACOFF = ((lib.NC_MIN_RECORD + 16 + 15) & ~15) - 14
ERRORS = {lib.NC_E_SHORT_BLOCK, lib.NC_E_BLOCK_LEN, lib.NC_E_TOO_MANY, lib.NC_E_HDR_BOUNDS,
          lib.NC_E_DATA_BOUNDS, lib.NC_E_NEXT_OFFSET, lib.NC_E_MISALIGNED}
PAGE = mmap.PAGESIZE
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


@dataclass
class Pkt:
    data: bytes
    wire_len: int
    sec: int = 1_700_000_000
    nsec: int = 0
    status: int = lib.TP_STATUS_USER
    rxhash: int = 0
    vlan_tci: int = 0
    vlan_tpid: int = 0
    ifindex: int = 3
    protocol: int = 0x88B5
    hatype: int = 1
    pkttype: int = 0
    halen: int = 6
    addr: bytes = b"\x02\x00\x00\x00\x00\x02\x00\x00"


def align8(x: int) -> int:
    return (x + 7) & ~7


def block_bytes(pkts: list[Pkt], size: int, seq: int = 1, status: int = lib.TP_STATUS_USER) -> bytearray:
    """A block as the kernel writes it."""
    buf = bytearray(size)
    base = ffi.from_buffer(buf)
    bd = ffi.cast("struct tpacket_block_desc *", base)
    bd.version = 1
    bh = bd.hdr.bh1
    off = BLK_HDR
    bh.offset_to_first_pkt = off
    for k, p in enumerate(pkts):
        h = ffi.cast("struct tpacket3_hdr *", base + off)
        h.tp_sec, h.tp_nsec = p.sec, p.nsec
        h.tp_snaplen, h.tp_len = len(p.data), p.wire_len
        h.tp_status = p.status
        h.tp_mac, h.tp_net = MACOFF, MACOFF + 14
        h.hv1.tp_rxhash = p.rxhash
        h.hv1.tp_vlan_tci, h.hv1.tp_vlan_tpid = p.vlan_tci, p.vlan_tpid
        sll = ffi.cast("struct sockaddr_ll *", base + off + HDRLEN)
        sll.sll_family = socket.AF_PACKET
        sll.sll_protocol = socket.htons(p.protocol)
        sll.sll_ifindex = p.ifindex
        sll.sll_hatype = p.hatype
        sll.sll_pkttype = p.pkttype
        sll.sll_halen = p.halen
        for i in range(8):
            sll.sll_addr[i] = p.addr[i]
        buf[off + MACOFF: off + MACOFF + len(p.data)] = p.data
        rec = align8(MACOFF + len(p.data))
        h.tp_next_offset = rec if k + 1 < len(pkts) else 0
        off += rec
    bh.num_pkts = len(pkts)
    bh.blk_len = off
    bh.seq_num = seq
    bh.block_status = status
    if pkts:
        # As prb_open_block does: ts_first_pkt is when the kernel *opened* the
        # block (it may open it on the retire timer, long before a packet),
        # not the first packet's time; ts_last_pkt is the last packet's.
        bh.ts_first_pkt.ts_sec, bh.ts_first_pkt.ts_nsec = pkts[0].sec ^ 1, 123
        bh.ts_last_pkt.ts_sec, bh.ts_last_pkt.ts_nsec = pkts[-1].sec, pkts[-1].nsec
    del base, bd, bh
    return buf


def needed(pkts: list[Pkt]) -> int:
    return BLK_HDR + sum(align8(MACOFF + len(p.data)) for p in pkts)


def batch_over(buf: bytearray, snaplen: int = 0xFFFFFFFF) -> PacketBatch:
    """A PacketBatch over a bytearray, as Capture builds one over a ring block."""
    owner = ffi.from_buffer("uint8_t[]", buf)
    return walk_block(Lease(owner, len(buf)), snaplen)


class Guarded:
    """Anonymous memory whose last page is PROT_NONE: blocks end right before it."""

    def __init__(self, pages: int) -> None:
        self.size = pages * PAGE
        self.mm = mmap.mmap(-1, self.size + PAGE)
        self.base = ffi.from_buffer(self.mm)
        self.addr = int(ffi.cast("uintptr_t", self.base))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(self.addr + self.size, PAGE, 0) != 0:  # PROT_NONE
            raise OSError(ctypes.get_errno(), "mprotect")

    def place(self, data: bytes) -> Any:
        """Copy ``data`` so that it ends at the guard page; return its address."""
        assert len(data) <= self.size
        start = self.size - len(data)
        self.mm[start:self.size] = data
        return ffi.cast("uint8_t *", self.base) + start


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    yield Guarded(pages=4)  # never unmapped: the cdata export pins the mmap


def walk_raw(g: Guarded, data: bytes, cap: int | None = None) -> tuple[int, Any, Any, int]:
    blk = g.place(data)
    cap = len(data) // lib.NC_MIN_RECORD + 1 if cap is None else cap
    out = ffi.new("struct nc_pkt[]", max(cap, 1))
    info = ffi.new("struct nc_block_info *")
    n = lib.nc_walk_block(blk, len(data), out, cap, info)
    return n, out, info, cap


def check_invariants(n: int, out: Any, info: Any, size: int, cap: int) -> None:
    if n < 0:
        assert n in ERRORS
        return
    assert n == info.num_pkts <= cap
    blk_len = info.blk_len
    if n:
        assert BLK_HDR <= blk_len <= size
    total = 0
    for i in range(n):
        p = out[i]
        assert p.hdr_off >= BLK_HDR and p.hdr_off % 4 == 0
        assert p.hdr_off + lib.NC_MIN_RECORD <= blk_len
        assert p.data_off >= p.hdr_off + lib.NC_MIN_RECORD
        assert p.data_off + p.snaplen <= blk_len <= size  # never data outside the block
        assert p.halen <= 8
        total += p.snaplen
    assert info.data_bytes == total
    assert info.data_end <= blk_len


# -- well-formed blocks round-trip ------------------------------------------

u32 = st.integers(0, 2**32 - 1)
pkts_st = st.lists(
    st.builds(
        lambda data, extra, sec, nsec, status, rxhash, tci, tpid, ifx, proto, hatype, ptype, halen, addr: Pkt(
            data, len(data) + extra, sec, nsec, status | lib.TP_STATUS_USER, rxhash, tci, tpid, ifx,
            proto, hatype, ptype, halen, addr),
        st.binary(max_size=300), st.integers(0, 2000), u32, st.integers(0, 999_999_999),
        st.sampled_from([0, lib.TP_STATUS_VLAN_VALID, lib.TP_STATUS_VLAN_VALID | lib.TP_STATUS_VLAN_TPID_VALID,
                         lib.TP_STATUS_CSUM_VALID, lib.TP_STATUS_TS_SOFTWARE]),
        u32, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(-2**31, 2**31 - 1),
        st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 7), st.integers(0, 255),
        st.binary(min_size=8, max_size=8)),
    min_size=1, max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pkts=pkts_st, seq=st.integers(0, 2**64 - 1), snaplen=st.integers(1, 400))
def test_well_formed_blocks_round_trip(pkts: list[Pkt], seq: int, snaplen: int) -> None:
    size = max(PAGE, 1 << (needed(pkts) - 1).bit_length())
    buf = block_bytes(pkts, size, seq=seq, status=lib.TP_STATUS_USER | lib.TP_STATUS_BLK_TMO)
    with batch_over(buf) as b:
        assert len(b) == len(pkts) and b.seq_num == seq and b.timed_out
        assert b.first_timestamp_ns == pkts[0].sec * 10**9 + pkts[0].nsec
        assert b.last_timestamp_ns == pkts[-1].sec * 10**9 + pkts[-1].nsec
        for p, want in zip(b, pkts):
            assert bytes(p.data) == want.data
            assert p.wire_len == want.wire_len and p.caplen == len(want.data)
            assert p.truncated == (len(want.data) < want.wire_len)
            assert p.timestamp_ns == want.sec * 10**9 + want.nsec
            assert p.datetime == EPOCH + datetime.timedelta(microseconds=p.timestamp_ns // 1000)
            assert abs(p.timestamp - p.timestamp_ns / 1e9) < 1e-6
            assert p.protocol == want.protocol and p.ifindex == want.ifindex and p.hatype == want.hatype
            assert int(p.direction) == want.pkttype
            assert p.source_address == want.addr[:min(want.halen, 8)]
            assert p.rxhash == want.rxhash
            assert p.vlan_tci == (want.vlan_tci if want.status & lib.TP_STATUS_VLAN_VALID else None)
            assert p.vlan_tpid == (want.vlan_tpid if want.status & lib.TP_STATUS_VLAN_TPID_VALID else None)
        owned = list(b.to_owned())
        one_by_one = [p.to_owned() for p in b]
        # Both copy paths agree with the view on every field, status included
        # (the V3 per-packet TP_STATUS_USER bit means nothing and is dropped).
        for o, q, p in zip(owned, one_by_one, b):
            for f in ("data", "timestamp_ns", "wire_len", "status", "protocol", "ifindex", "rxhash",
                      "vlan_tci", "vlan_tpid", "hatype", "source_address", "direction"):
                assert getattr(o, f) == getattr(q, f) == (bytes(p.data) if f == "data" else getattr(p, f)), f
            assert not o.status & lib.TP_STATUS_USER
        assert [o.data for o in owned] == [p.data for p in pkts]
        assert [o.wire_len for o in owned] == [p.wire_len for p in pkts]
        assert [o.source_address for o in owned] == [p.addr[:min(p.halen, 8)] for p in pkts]
    # The user's snap length cuts views and owned copies alike.
    with batch_over(buf, snaplen) as b:
        assert [bytes(p.data) for p in b] == [p.data[:snaplen] for p in pkts]
        assert [o.data for o in b.to_owned()] == [p.data[:snaplen] for p in pkts]
        assert [o.truncated for o in b.to_owned()] == [min(len(p.data), snaplen) < p.wire_len for p in pkts]


def test_empty_block_is_an_empty_batch() -> None:
    with batch_over(block_bytes([], PAGE)) as b:
        assert len(b) == 0 and list(b) == [] and len(b.to_owned()) == 0


# -- malformed blocks -------------------------------------------------------

def _field(buf: bytearray, ctype: str, off: int = 0) -> Any:
    return ffi.cast(ctype, ffi.from_buffer(buf) + off)


def _bad(mutate: Any, npkts: int = 3, size: int = PAGE) -> bytearray:
    buf = block_bytes([Pkt(bytes(range(60)), 60) for _ in range(npkts)], size)
    mutate(buf)
    return buf


def _bh(buf: bytearray) -> Any:
    return _field(buf, "struct tpacket_block_desc *").hdr.bh1


def _hdr(buf: bytearray, i: int) -> Any:
    off = BLK_HDR + i * align8(MACOFF + 60)
    return _field(buf, "struct tpacket3_hdr *", off)


MALFORMED = {
    "blk_len outside the block": lambda b: setattr(_bh(b), "blk_len", PAGE + 8),
    "num_pkts larger": lambda b: setattr(_bh(b), "num_pkts", 10**6),
    "header outside blk_len": lambda b: setattr(_bh(b), "num_pkts", 4),
    "misaligned": lambda b: setattr(_bh(b), "offset_to_first_pkt", BLK_HDR + 2),
    "zero before the last": lambda b: setattr(_hdr(b, 0), "tp_next_offset", 0),
    "data outside blk_len": lambda b: setattr(_hdr(b, 1), "tp_snaplen", PAGE),
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_malformed_block_is_reported(what: str) -> None:
    buf = _bad(MALFORMED[what])
    with pytest.raises(nc.MalformedBlockError, match="block skipped"):
        batch_over(buf)


def test_each_walker_error_code() -> None:
    def code(buf: bytes, size: int | None = None) -> int:
        g = bytearray(buf)
        info = ffi.new("struct nc_block_info *")
        out = ffi.new("struct nc_pkt[]", 64)
        return int(lib.nc_walk_block(ffi.from_buffer(g), len(g) if size is None else size, out, 64, info))

    assert code(bytes(BLK_HDR - 1)) == lib.NC_E_SHORT_BLOCK
    cases = {
        lib.NC_E_BLOCK_LEN: lambda b: setattr(_bh(b), "blk_len", BLK_HDR - 1),
        lib.NC_E_TOO_MANY: lambda b: setattr(_bh(b), "num_pkts", 65),
        lib.NC_E_HDR_BOUNDS: lambda b: setattr(_bh(b), "offset_to_first_pkt", 8),
        lib.NC_E_DATA_BOUNDS: lambda b: setattr(_hdr(b, 2), "tp_mac", 20),  # data inside the header
        lib.NC_E_NEXT_OFFSET: lambda b: setattr(_hdr(b, 1), "tp_next_offset", 0),
        lib.NC_E_MISALIGNED: lambda b: setattr(_hdr(b, 0), "tp_next_offset", align8(MACOFF + 60) + 2),
    }
    for want, mutate in cases.items():
        assert code(_bad(mutate)) == want, want
    ok = _bad(lambda b: None)
    assert code(ok) == 3
    assert code(ok, size=_bh(ok).blk_len - 1) == lib.NC_E_BLOCK_LEN  # caller's size is the bound


def test_data_offset_overflow_is_caught() -> None:
    """Offsets near 2**32 must not wrap around into the block (64-bit arithmetic)."""
    buf = _bad(lambda b: setattr(_hdr(b, 0), "tp_snaplen", 2**32 - 1))
    with pytest.raises(nc.MalformedBlockError, match="data outside"):
        batch_over(buf)
    buf = _bad(lambda b: setattr(_hdr(b, 0), "tp_next_offset", 2**32 - 8))
    with pytest.raises(nc.MalformedBlockError, match="header outside"):
        batch_over(buf)


# -- random and mutated blocks: never a crash, never out of bounds -----------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=3 * PAGE))
def test_random_bytes_never_escape_the_block(guarded: Guarded, data: bytes) -> None:
    n, out, info, cap = walk_raw(guarded, data)
    check_invariants(n, out, info, len(data), cap)


_interesting = st.one_of(
    u32, st.sampled_from([0, 1, 3, 4, 8, 47, 48, 67, 68, 81, 82, 88, 4095, 4096, 2**31 - 1, 2**31,
                          2**32 - 8, 2**32 - 1]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(pkts=pkts_st, mutations=st.lists(st.tuples(st.integers(0, 3 * PAGE), _interesting), max_size=6),
       cut=st.integers(0, 3 * PAGE), cap_delta=st.integers(-3, 3))
def test_mutated_blocks_never_escape_the_block(guarded: Guarded, pkts: list[Pkt],
                                               mutations: list[tuple[int, int]], cut: int,
                                               cap_delta: int) -> None:
    size = needed(pkts)
    buf = block_bytes(pkts, min(max(size, PAGE), 3 * PAGE)) if size <= 3 * PAGE else bytearray(PAGE)
    for off, val in mutations:
        off = (off % max(len(buf) - 4, 1)) & ~3  # fields are 4-byte aligned
        buf[off:off + 4] = val.to_bytes(4, "little")
    data = bytes(buf[:cut]) if cut < len(buf) and cut % 2 else bytes(buf)
    cap = max(0, len(data) // lib.NC_MIN_RECORD + 1 + cap_delta)
    n, out, info, cap = walk_raw(guarded, data, cap)
    event(f"walk result {n}" if n < 0 else "walk ok")
    check_invariants(n, out, info, len(data), cap)
    if n > 0:
        # What the walker accepted is safe to expose: views and owned copies
        # read only inside the block.
        owner = guarded.place(data)
        with walk_block(Lease(owner, len(data)), 0xFFFFFFFF) as b:
            views = [bytes(p.data) for p in b]
            assert [o.data for o in b.to_owned()] == views
            for p, v in zip(b, views):
                assert len(v) == p.caplen


def test_guard_page_catches_an_overread(tmp_path: Any) -> None:
    """The harness above can fail: a walk told the block is longer than the
    memory before the guard page dies with SIGSEGV instead of passing."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from test_walker import Guarded, Pkt, block_bytes, needed, walk_raw, PAGE
        from netring_chan._lowlevel import ffi, lib
        g = Guarded(pages=2)
        pk = [Pkt(bytes(100), 100) for _ in range(3)]
        data = bytes(block_bytes(pk, needed(pk)))
        blk = g.place(data[:-64])  # the last record's data runs into the guard page
        out = ffi.new("struct nc_pkt[]", 8)
        info = ffi.new("struct nc_block_info *")
        n = lib.nc_walk_block(blk, len(data), out, 8, info)  # size lies: 64 bytes too long
        ffi.buffer(blk + out[2].data_off, out[2].snaplen)[:]
        print("read past the end without a fault", n)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == -11, (r.returncode, r.stdout, r.stderr)
