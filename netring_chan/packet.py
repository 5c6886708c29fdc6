"""Packets and batches, zero-copy and owned.

A ``PacketBatch`` is one ring block lent by the kernel. Its ``Packet`` views
read the block in place. Leaving the batch (``with``, or ``release()``)
invalidates every view it handed out: using one afterwards raises
``ReleasedError`` (a ``ValueError``). The block itself goes back to the
kernel only when the last Python object that can still address it is gone —
a slice the user kept of ``pkt.data`` pins the block rather than reading
recycled memory — so no view ever sees another packet's bytes.

``OwnedPacket`` / ``OwnedBatch`` are copies that outlive the ring and pickle.
A block is copied out by one C call (GIL released); owned packets are then
built by C-driven iteration over typed columns, never by a Python loop over
packets.
"""

from __future__ import annotations

import datetime as _dt
import enum
import operator
from itertools import repeat
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple, Sequence

from ._lowlevel import ffi, lib
from .errors import MalformedBlockError, ReleasedError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "Direction",
    "Status",
    "Packet",
    "PacketBatch",
    "OwnedPacket",
    "OwnedBatch",
]


class Direction(enum.IntEnum):
    """Where a frame was going, from ``sockaddr_ll.sll_pkttype``."""

    HOST = lib.PACKET_HOST
    BROADCAST = lib.PACKET_BROADCAST
    MULTICAST = lib.PACKET_MULTICAST
    OTHER_HOST = lib.PACKET_OTHERHOST
    OUTGOING = lib.PACKET_OUTGOING


class Status(enum.IntFlag):
    """Per-packet status bits (``tp_status``) as the kernel reports them."""

    COPY = lib.TP_STATUS_COPY  # the kernel truncated the frame to its slot
    LOSING = lib.TP_STATUS_LOSING  # drops happened since the last stats read
    CSUM_NOT_READY = lib.TP_STATUS_CSUMNOTREADY  # outgoing, checksum offloaded
    VLAN_VALID = lib.TP_STATUS_VLAN_VALID
    BLK_TMO = lib.TP_STATUS_BLK_TMO
    VLAN_TPID_VALID = lib.TP_STATUS_VLAN_TPID_VALID
    CSUM_VALID = lib.TP_STATUS_CSUM_VALID
    TS_SOFTWARE = lib.TP_STATUS_TS_SOFTWARE
    TS_RAW_HARDWARE = lib.TP_STATUS_TS_RAW_HARDWARE


_DIRECTIONS = {int(d): d for d in Direction}


def _direction(pkttype: int) -> Direction | int:
    return _DIRECTIONS.get(pkttype, pkttype)


_MALFORMED = {
    lib.NC_E_SHORT_BLOCK: "block shorter than its descriptor",
    lib.NC_E_BLOCK_LEN: "blk_len outside the block",
    lib.NC_E_TOO_MANY: "num_pkts larger than the block can hold",
    lib.NC_E_HDR_BOUNDS: "packet header outside blk_len",
    lib.NC_E_DATA_BOUNDS: "packet data outside blk_len",
    lib.NC_E_NEXT_OFFSET: "tp_next_offset is zero before the last packet",
    lib.NC_E_MISALIGNED: "packet header misaligned",
}


class Packet:
    """A zero-copy view of one captured frame inside a ``PacketBatch``.

    Valid until its batch is released; after that every attribute raises
    ``ReleasedError``.
    """

    __slots__ = ("_batch", "_i")

    def __init__(self, batch: PacketBatch, index: int) -> None:
        self._batch = batch
        self._i = index

    def _m(self) -> Any:
        b = self._batch
        if b._meta is None:
            raise ReleasedError("packet used after its batch was released")
        return b._meta[self._i]

    @property
    def data(self) -> memoryview:
        """The captured bytes, in place (read-only); at most ``snaplen`` long."""
        return self._batch._view(self._i)

    @property
    def timestamp_ns(self) -> int:
        """Capture time in nanoseconds since the epoch."""
        return int(self._m().ts_ns)

    @property
    def timestamp(self) -> float:
        """Capture time as float seconds since the epoch."""
        return int(self._m().ts_ns) / 1e9

    @property
    def datetime(self) -> _dt.datetime:
        """Capture time as an aware UTC ``datetime`` (microsecond precision)."""
        return _ns_to_datetime(int(self._m().ts_ns))

    @property
    def wire_len(self) -> int:
        """Original length of the frame on the wire."""
        return int(self._m().wire_len)

    @property
    def caplen(self) -> int:
        """Bytes available in ``data`` (after kernel and snaplen truncation)."""
        return min(int(self._m().snaplen), self._batch._snaplen)

    @property
    def truncated(self) -> bool:
        """True when ``data`` is shorter than the frame on the wire."""
        m = self._m()
        return min(int(m.snaplen), self._batch._snaplen) < int(m.wire_len)

    @property
    def direction(self) -> Direction | int:
        return _direction(int(self._m().pkttype))

    @property
    def ifindex(self) -> int:
        return int(self._m().ifindex)

    @property
    def protocol(self) -> int:
        """Link-layer protocol (EtherType), host byte order."""
        return int(self._m().protocol)

    @property
    def hatype(self) -> int:
        """ARPHRD_* link type of the interface."""
        return int(self._m().hatype)

    @property
    def source_address(self) -> bytes:
        """Link-layer source address (``sll_addr``, ``sll_halen`` bytes)."""
        m = self._m()
        return bytes(ffi.buffer(m.addr, int(m.halen)))

    @property
    def status(self) -> Status:
        return Status(int(self._m().status) & ~lib.TP_STATUS_USER)

    @property
    def vlan_tci(self) -> int | None:
        m = self._m()
        return int(m.vlan_tci) if m.status & lib.TP_STATUS_VLAN_VALID else None

    @property
    def vlan_tpid(self) -> int | None:
        m = self._m()
        return int(m.vlan_tpid) if m.status & lib.TP_STATUS_VLAN_TPID_VALID else None

    @property
    def rxhash(self) -> int:
        """Flow hash from the kernel (0 unless ``rx_hash=True`` was asked)."""
        return int(self._m().rxhash)

    def to_owned(self) -> OwnedPacket:
        """Copy this packet out of the ring."""
        m = self._m()
        return OwnedPacket(
            bytes(self.data), int(m.ts_ns), int(m.wire_len), int(m.pkttype),
            int(m.ifindex), int(m.protocol), int(m.status) & ~lib.TP_STATUS_USER,
            int(m.vlan_tci), int(m.vlan_tpid), int(m.rxhash), int(m.hatype),
            bytes(ffi.buffer(m.addr, int(m.halen))),
        )

    def __repr__(self) -> str:
        if self._batch._meta is None:
            return "<Packet (released)>"
        return f"<Packet {self.caplen}/{self.wire_len} bytes ts={self.timestamp_ns}>"


class _Lease:
    """What a ring lends to a batch: its block's address and a release hook.

    ``owner`` is a cdata that calls ``on_free`` when the last object that can
    address the block (the batch, a memoryview, a slice of one) is gone.
    """

    __slots__ = ("owner", "size")

    def __init__(self, owner: Any, size: int) -> None:
        self.owner = owner
        self.size = size


class PacketBatch:
    """One ring block: a context manager whose exit hands the block back.

    ``len(batch)`` packets; ``seq_num`` increases by one per block, so a gap
    shows blocks the reader never saw; ``timed_out`` tells that the kernel
    retired the block on its timer rather than because it was full.
    """

    __slots__ = (
        "_owner", "_base", "_meta", "_n", "_views", "_snaplen", "seq_num",
        "timed_out", "first_timestamp_ns", "last_timestamp_ns", "_data_bytes",
        "_data_end", "__weakref__",
    )

    def __init__(self, lease: _Lease, meta: Any, n: int, info: Any, snaplen: int) -> None:
        self._owner = lease.owner
        self._base: memoryview | None = None
        self._meta = meta
        self._n = n
        self._views: list[memoryview] = []
        self._snaplen = snaplen
        self.seq_num: int = int(info.seq_num)
        self.timed_out: bool = bool(info.block_status & lib.TP_STATUS_BLK_TMO)
        self.first_timestamp_ns: int = int(info.ts_first_ns)
        self.last_timestamp_ns: int = int(info.ts_last_ns)
        self._data_bytes = int(info.data_bytes)
        self._data_end = int(info.data_end)

    @classmethod
    def _walk(cls, lease: _Lease, snaplen: int, meta: Any = None) -> PacketBatch:
        """Validate the block behind ``lease`` and build a batch over it."""
        cap = lease.size // lib.NC_MIN_RECORD + 1
        if meta is None:
            meta = ffi.new("struct nc_pkt[]", cap)
        info = ffi.new("struct nc_block_info *")
        n = lib.nc_walk_block(lease.owner, lease.size, meta, cap, info)
        if n < 0:
            raise MalformedBlockError(
                f"ring block seq {int(info.seq_num)}: {_MALFORMED.get(n, n)} "
                f"(packet {int(info.bad_index)} of {int(info.num_pkts)}); block skipped"
            )
        return cls(lease, meta, n, info, snaplen)

    # -- views ---------------------------------------------------------------

    def _view(self, i: int) -> memoryview:
        meta = self._meta
        if meta is None:
            raise ReleasedError("packet data used after its batch was released")
        if self._base is None:
            self._base = memoryview(ffi.buffer(self._owner, self._data_end)).toreadonly()
        m = meta[i]
        start = int(m.data_off)
        v = self._base[start:start + min(int(m.snaplen), self._snaplen)]
        self._views.append(v)
        return v

    def __len__(self) -> int:
        if self._meta is None:
            raise ReleasedError("batch used after release")
        return self._n

    def __getitem__(self, i: int) -> Packet:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("packet index out of range")
        return Packet(self, i)

    def __iter__(self) -> Iterator[Packet]:
        n = len(self)
        return map(Packet, repeat(self, n), range(n))

    @property
    def released(self) -> bool:
        return self._meta is None

    def to_owned(self) -> OwnedBatch:
        """Copy every packet out in one C call; the result outlives the ring."""
        if self._meta is None:
            raise ReleasedError("batch used after release")
        return OwnedBatch._copy(self)

    def release(self) -> None:
        """Invalidate every view and let the block go back to the kernel.

        Idempotent. Views the user derived (slices of ``pkt.data``) keep the
        block pinned until they are dropped; they are never left reading a
        recycled block.
        """
        if self._meta is None:
            return
        self._meta = None
        for v in self._views:
            try:
                v.release()
            except BufferError:  # exported further (e.g. numpy): stays pinned
                pass
        self._views = []
        if self._base is not None:
            try:
                self._base.release()
            except BufferError:
                pass
            self._base = None
        self._owner = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._meta is None else f"{self._n} packets"
        return f"<PacketBatch seq={self.seq_num} {state}>"


def _ns_to_datetime(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.timezone.utc).replace(
        microsecond=(ns % 1_000_000_000) // 1000
    )


class OwnedPacket(NamedTuple):
    """A captured frame copied out of the ring: immutable, picklable."""

    data: bytes
    timestamp_ns: int
    wire_len: int
    pkttype: int
    ifindex: int = 0
    protocol: int = 0
    status_bits: int = 0
    vlan_tci_raw: int = 0
    vlan_tpid_raw: int = 0
    rxhash: int = 0
    hatype: int = 0
    source_address: bytes = b""

    @property
    def timestamp(self) -> float:
        return self.timestamp_ns / 1e9

    @property
    def datetime(self) -> _dt.datetime:
        return _ns_to_datetime(self.timestamp_ns)

    @property
    def caplen(self) -> int:
        return len(self.data)

    @property
    def truncated(self) -> bool:
        return len(self.data) < self.wire_len

    @property
    def direction(self) -> Direction | int:
        return _direction(self.pkttype)

    @property
    def status(self) -> Status:
        return Status(self.status_bits)

    @property
    def vlan_tci(self) -> int | None:
        return self.vlan_tci_raw if self.status_bits & lib.TP_STATUS_VLAN_VALID else None

    @property
    def vlan_tpid(self) -> int | None:
        return self.vlan_tpid_raw if self.status_bits & lib.TP_STATUS_VLAN_TPID_VALID else None

    def to_owned(self) -> OwnedPacket:
        return self


_COL_FORMATS = ("Q", "I", "I", "I", "I", "i", "H", "H", "H", "H", "B", "B", "B")
_new_owned: Callable[..., OwnedPacket] = tuple.__new__  # type: ignore[assignment]


class OwnedBatch(Sequence[OwnedPacket]):
    """The packets of one block, copied: contiguous data plus typed columns.

    Fast paths for bulk consumers: ``data`` (all packet bytes back to back),
    ``offsets`` (``n + 1`` boundaries into it), ``timestamps_ns``; iterating
    builds ``OwnedPacket`` objects by C-driven iteration.
    """

    __slots__ = ("_data", "_cols", "_n", "seq_num", "timed_out", "source", "_cache")

    def __init__(self, data: bytes, cols: bytes, n: int, seq_num: int = 0,
                 timed_out: bool = False, source: int = 0) -> None:
        self._data = data
        self._cols = cols
        self._n = n
        self.seq_num = seq_num
        self.timed_out = timed_out
        self.source = source
        self._cache: list[memoryview] | None = None

    @classmethod
    def _copy(cls, batch: PacketBatch) -> OwnedBatch:
        n = batch._n
        offs = ffi.new("uint64_t[]", lib.NC_NCOLS + 1)
        lib.nc_cols_layout(n, offs)
        data = bytearray(batch._data_bytes)
        cols = bytearray(int(offs[lib.NC_NCOLS]))
        used = lib.nc_copy_out(batch._owner, batch._meta, n, batch._snaplen,
                               ffi.from_buffer(data), len(data), ffi.from_buffer(cols))
        if used < 0:  # cannot happen: the walk summed the lengths
            raise MalformedBlockError("copy-out overflow")
        del data[used:]
        return cls(bytes(data), bytes(cols), n, batch.seq_num, batch.timed_out)

    def _columns(self) -> list[memoryview]:
        c = self._cache
        if c is None:
            offs = ffi.new("uint64_t[]", lib.NC_NCOLS + 1)
            lib.nc_cols_layout(self._n, offs)
            mv = memoryview(self._cols)
            c = [mv[offs[k]:offs[k + 1]].cast(f) for k, f in enumerate(_COL_FORMATS)]  # type: ignore[call-overload]
            self._cache = c
        return c

    @property
    def data(self) -> bytes:
        """All packet bytes of the batch, back to back."""
        return self._data

    @property
    def offsets(self) -> memoryview:
        """``n + 1`` offsets into ``data``: packet ``i`` is ``data[offsets[i]:offsets[i+1]]``."""
        return self._columns()[1]

    @property
    def timestamps_ns(self) -> memoryview:
        return self._columns()[0]

    @property
    def wire_lens(self) -> memoryview:
        return self._columns()[2]

    def datas(self) -> Iterator[bytes]:
        """Each packet's bytes, in order (C-driven slicing, no Python loop)."""
        o = self._columns()[1]
        return map(self._data.__getitem__, map(slice, o[:-1], o[1:]))

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[OwnedPacket]:
        c = self._columns()
        n = self._n
        addr = c[12].tobytes()
        starts = range(0, 8 * n, 8)
        addrs = map(addr.__getitem__, map(slice, starts, map(operator.add, starts, c[11])))
        rows = zip(self.datas(), c[0], c[2], c[10], c[5], c[6], c[3], c[8], c[9], c[4], c[7], addrs)
        return map(_new_owned, repeat(OwnedPacket, n), rows)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(self)[i]
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("packet index out of range")
        c = self._columns()
        a = c[12][8 * i: 8 * i + c[11][i]].tobytes()
        return OwnedPacket(
            self._data[c[1][i]:c[1][i + 1]], c[0][i], c[2][i], c[10][i], c[5][i], c[6][i],
            c[3][i], c[8][i], c[9][i], c[4][i], c[7][i], a,
        )

    def to_owned(self) -> OwnedBatch:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (OwnedBatch, (self._data, self._cols, self._n, self.seq_num, self.timed_out, self.source))

    def __repr__(self) -> str:
        return f"<OwnedBatch seq={self.seq_num} {self._n} packets {len(self._data)} bytes>"
