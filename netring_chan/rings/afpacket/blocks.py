"""TPACKET_V3 blocks: the walk that validates one, and the memory a ring reuses.

``walk_block`` is the only way a block becomes a ``PacketBatch``: the C walker
bounds-checks every header, address and payload against the block before
anything of it is exposed (a malformed block is refused whole, never read
past). ``MemorySource`` (``netring_chan.testing``) feeds its synthetic blocks
through the same function.
"""

from __future__ import annotations

from typing import Any, TypeVar

from ..._fastpath import own as _own
from ..._fastpath import walk as _walk
from ..._fastpath import walk_own as _walk_own
from ..._lowlevel import ffi, lib
from ...errors import MalformedBlockError
from ...packet import OwnedBatch, PacketBatch, _MetaViews

__all__ = ["Lease", "Scratch", "walk_block", "own_block", "Walked"]

Walked = TypeVar("Walked", PacketBatch, OwnedBatch)
"""What ``walk_block`` or ``own_block`` makes of a block (for a source that takes either)."""

_MALFORMED = {
    lib.NC_E_SHORT_BLOCK: "block shorter than its descriptor",
    lib.NC_E_BLOCK_LEN: "blk_len outside the block",
    lib.NC_E_TOO_MANY: "num_pkts larger than the block can hold",
    lib.NC_E_HDR_BOUNDS: "packet header outside blk_len",
    lib.NC_E_DATA_BOUNDS: "packet data outside blk_len",
    lib.NC_E_NEXT_OFFSET: "tp_next_offset is zero before the last packet",
    lib.NC_E_MISALIGNED: "packet header misaligned",
}


class Lease:
    """What a ring lends to a batch: its block's address and a release hook.

    ``owner`` is a cdata that calls its destructor when the last object that
    can address the block (the batch, a memoryview, a slice of one) is gone.
    """

    __slots__ = ("owner", "size")

    def __init__(self, owner: Any, size: int) -> None:
        self.owner = owner
        self.size = size


class Scratch:
    """Work memory one ring reuses from block to block (a ``BlockPool``).

    The walk's metadata array is about a block in size; allocated afresh
    per block, glibc returns it to the kernel when freed and every block
    then pays hundreds of page faults (measured: as much as the whole
    per-packet cost of the bulk path). Reused, it stays mapped. A list is
    used as a lock-free pool (append/pop are atomic).
    """

    __slots__ = ("metas",)

    def __init__(self) -> None:
        self.metas: list[_MetaViews] = []

    def meta(self, cap: int) -> _MetaViews:
        while self.metas:
            m = self.metas.pop()
            if len(m) >= cap:
                return m
        return _MetaViews(ffi.new("struct nc_pkt[]", cap))

    def put_meta(self, mv: _MetaViews) -> None:
        self.metas.append(mv)


def walk_block(lease: Lease, snaplen: int, scratch: Scratch | None = None) -> PacketBatch:
    """Validate the block behind ``lease`` and build a batch over it.

    ``MalformedBlockError`` (nothing of the block trusted) if any record
    fails its bounds checks; the lease is dropped first, so the block goes
    back to the kernel now rather than with the traceback.
    """
    cap = lease.size // lib.NC_MIN_RECORD + 1
    mv = scratch.meta(cap) if scratch is not None else _MetaViews(ffi.new("struct nc_pkt[]", cap))
    info = ffi.new("struct nc_block_info *")
    n = _walk(int(ffi.cast("uintptr_t", lease.owner)), lease.size, int(ffi.cast("uintptr_t", mv.cdata)), cap,
              int(ffi.cast("uintptr_t", info)))
    if n < 0:
        del lease
        if scratch is not None:
            scratch.put_meta(mv)
        raise _malformed(n, info, cap)
    return PacketBatch(lease.owner, mv, n, info, snaplen, scratch)


def own_block(lease: Lease, snaplen: int, scratch: Scratch) -> OwnedBatch:
    """``walk_block(...).to_owned()`` with the walk and the copy in one C
    call that lets the GIL go once (``_fastpath.walk_own``), for a capture
    thread. The caller drops ``lease`` afterwards."""
    cap = lease.size // lib.NC_MIN_RECORD + 1
    mv = scratch.meta(cap)
    info = ffi.new("struct nc_block_info *")
    blk, meta = int(ffi.cast("uintptr_t", lease.owner)), int(ffi.cast("uintptr_t", mv.cdata))
    try:
        n, cols, blob = _walk_own(blk, lease.size, meta, cap, int(ffi.cast("uintptr_t", info)), snaplen)
        if n >= 0 and (blob is None or cols is None):
            # Walked, but records that overlap hold more bytes than the
            # block's claims sized the blob for: copy the walked records.
            cols, blob = _own(meta, n, snaplen, blk, int(info.data_end))
    finally:
        scratch.put_meta(mv)
    if blob is None or cols is None:  # n < 0: the walk refused the block
        del lease  # back to the kernel now, not with the traceback (as walk_block)
        raise _malformed(n, info, cap)
    return OwnedBatch._from_blob(blob, cols, int(info.seq_num), bool(info.block_status & lib.TP_STATUS_BLK_TMO))


def _malformed(n: int, info: Any, cap: int) -> MalformedBlockError:
    err = MalformedBlockError(f"ring block seq {int(info.seq_num)}: {_MALFORMED.get(n, n)} "
                              f"(packet {int(info.bad_index)} of {int(info.num_pkts)}); block skipped")
    # The kernel's claim, capped by what the block could hold: the packets
    # lost with it, for the accounting.
    err.packets = min(int(info.num_pkts), cap)
    return err
