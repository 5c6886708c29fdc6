"""Packets and batches, zero-copy and owned.

A ``PacketBatch`` is one ring block lent by the kernel. Its ``Packet`` views
read the block in place. Leaving the batch (``with``, or ``release()``)
invalidates every view it handed out: using one afterwards raises
``ReleasedError`` (a ``ValueError``). The block itself goes back to the
kernel only when the last Python object that can still address it is gone —
a slice the user kept of ``pkt.data`` pins the block rather than reading
recycled memory — so no view ever sees another packet's bytes.

``OwnedPacket`` / ``OwnedBatch`` are copies that outlive the ring and pickle.
A block's metadata is copied into typed columns by one C call (GIL
released) and each packet's bytes are made straight from the block by
another; owned packets are then built by a C iterator over the columns,
never by a Python loop over packets.
"""

from __future__ import annotations

import datetime as _dt
import enum
from array import array
from collections import deque
from itertools import repeat
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

from ._fastpath import PacketBase, Packets
from ._fastpath import Blob as _Blob
from ._fastpath import blob as _blob
from ._fastpath import own as _own
from ._fastpath import split as _split
from ._lowlevel import ffi, lib
from .errors import ReleasedError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "PacketCursor",
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
    LOSING = lib.TP_STATUS_LOSING  # never set per packet by V3: see PacketBatch.losing
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


# Field positions in the walk's ``struct nc_pkt`` array, from the compiler's
# layout (``ffi.offsetof``), for reading it through typed memoryviews: a cffi
# struct access per field cost ~20x more than a memoryview index.
_S = ffi.sizeof("struct nc_pkt")


def _at(field: str, width: int) -> int:
    off = int(ffi.offsetof("struct nc_pkt", field))
    assert off % width == 0 and _S % 8 == 0
    return off // width


_W64, _W32, _W16 = _S // 8, _S // 4, _S // 2
_TS = _at("ts_ns", 8)
_DATA, _SNAP, _WIRE = _at("data_off", 4), _at("snaplen", 4), _at("wire_len", 4)
_STATUS, _RXHASH, _IFINDEX = _at("status", 4), _at("rxhash", 4), _at("ifindex", 4)
_PROTO, _HATYPE = _at("protocol", 2), _at("hatype", 2)
_TCI, _TPID = _at("vlan_tci", 2), _at("vlan_tpid", 2)
_PKTTYPE, _HALEN, _ADDR = _at("pkttype", 1), _at("halen", 1), _at("addr", 1)
assert _SNAP == _DATA + 1


class _MetaViews:
    """A walk metadata array and typed views of it (kept together in the pool)."""

    __slots__ = ("cdata", "u8", "u16", "u32", "i32", "u64")

    def __init__(self, cdata: Any) -> None:
        mv = memoryview(ffi.buffer(cdata))
        self.cdata = cdata
        self.u8 = mv
        self.u16 = mv.cast("H")
        self.u32 = mv.cast("I")
        self.i32 = mv.cast("i")
        self.u64 = mv.cast("Q")

    def __len__(self) -> int:
        return len(self.cdata)


def _released() -> ReleasedError:
    return ReleasedError("packet used after its batch was released")


def _views(p: Packet) -> _MetaViews:
    v = p[0]._mv
    if v is None:
        raise _released()
    return v  # type: ignore[no-any-return]


class Packet(tuple):  # type: ignore[type-arg]
    """A zero-copy view of one captured frame inside a ``PacketBatch``.

    Valid until its batch is released; after that every attribute raises
    ``ReleasedError``. (A ``(batch, index)`` pair, so that a batch's packets
    are made by C-driven iteration.)
    """

    __slots__ = ()

    @property
    def data(self) -> memoryview:
        """The captured bytes, in place (read-only); at most ``snaplen`` long."""
        b = self[0]
        d = b._datas
        if d is None:
            return b._view(self[1])  # type: ignore[no-any-return]
        return d[self[1]]  # type: ignore[no-any-return]

    @property
    def timestamp_ns(self) -> int:
        """Capture time in nanoseconds since the epoch."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.u64[self[1] * _W64 + _TS]  # type: ignore[no-any-return]

    @property
    def timestamp(self) -> float:
        """Capture time as float seconds since the epoch."""
        return self.timestamp_ns / 1e9

    @property
    def datetime(self) -> _dt.datetime:
        """Capture time as an aware UTC ``datetime`` (microsecond precision)."""
        return _ns_to_datetime(self.timestamp_ns)

    @property
    def wire_len(self) -> int:
        """Original length of the frame on the wire."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.u32[self[1] * _W32 + _WIRE]  # type: ignore[no-any-return]

    @property
    def caplen(self) -> int:
        """Bytes available in ``data`` (after kernel and snaplen truncation)."""
        return min(_views(self).u32[self[1] * _W32 + _SNAP], self[0]._snaplen)  # type: ignore[no-any-return]

    @property
    def truncated(self) -> bool:
        """True when ``data`` is shorter than the frame on the wire."""
        return self.caplen < self.wire_len

    @property
    def direction(self) -> Direction | int:
        """Where the frame was going (``Direction``; an int the enum does not know)."""
        v = self[0]._mv
        if v is None:
            raise _released()
        t: int = v.u8[self[1] * _S + _PKTTYPE]
        return _DIRECTIONS.get(t, t)

    @property
    def ifindex(self) -> int:
        """Index of the interface the frame was captured on."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.i32[self[1] * _W32 + _IFINDEX]  # type: ignore[no-any-return]

    @property
    def protocol(self) -> int:
        """Link-layer protocol (EtherType), host byte order."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.u16[self[1] * _W16 + _PROTO]  # type: ignore[no-any-return]

    @property
    def hatype(self) -> int:
        """ARPHRD_* link type of the interface."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.u16[self[1] * _W16 + _HATYPE]  # type: ignore[no-any-return]

    @property
    def source_address(self) -> bytes:
        """Link-layer source address (``sll_addr``, ``sll_halen`` bytes)."""
        v, k = _views(self), self[1] * _S
        return bytes(v.u8[k + _ADDR:k + _ADDR + v.u8[k + _HALEN]])

    @property
    def status(self) -> Status:
        """The kernel's per-packet status bits (``Status``)."""
        return Status(_views(self).u32[self[1] * _W32 + _STATUS])

    @property
    def vlan_tci(self) -> int | None:
        """802.1Q TCI the kernel took off the frame, if it had a tag."""
        v, i = _views(self), self[1]
        if v.u32[i * _W32 + _STATUS] & lib.TP_STATUS_VLAN_VALID:
            return v.u16[i * _W16 + _TCI]  # type: ignore[no-any-return]
        return None

    @property
    def vlan_tpid(self) -> int | None:
        """802.1Q TPID of the tag the kernel took off the frame, if it reported one."""
        v, i = _views(self), self[1]
        if v.u32[i * _W32 + _STATUS] & lib.TP_STATUS_VLAN_TPID_VALID:
            return v.u16[i * _W16 + _TPID]  # type: ignore[no-any-return]
        return None

    @property
    def rxhash(self) -> int:
        """Flow hash from the kernel (0 unless ``rx_hash=True`` was asked)."""
        v = self[0]._mv
        if v is None:
            raise _released()
        return v.u32[self[1] * _W32 + _RXHASH]  # type: ignore[no-any-return]

    def to_owned(self) -> OwnedPacket:
        """Copy this packet out of the ring."""
        v, i = _views(self), self[1]
        return OwnedPacket.make(
            bytes(self.data), self.timestamp_ns, self.wire_len, v.u8[i * _S + _PKTTYPE],
            self.ifindex, self.protocol, v.u32[i * _W32 + _STATUS], v.u16[i * _W16 + _TCI],
            v.u16[i * _W16 + _TPID], self.rxhash, self.hatype, self.source_address,
        )

    def __reduce__(self) -> Any:
        raise TypeError("a zero-copy Packet cannot be pickled: it is a view into ring memory that "
                        "lives only while its batch is held; pickle packet.to_owned() (an OwnedPacket)")

    def __repr__(self) -> str:
        if self[0]._mv is None:
            return "<Packet (released)>"
        return f"<Packet {self.caplen}/{self.wire_len} bytes ts={self.timestamp_ns}>"


class BlockPool(Protocol):
    """Work memory a ring lends its batches and reuses from block to block
    (implemented next to the ring: ``rings.afpacket.blocks.Scratch``)."""

    def put_meta(self, mv: _MetaViews) -> None: ...


class PacketBatch:
    """One ring block: a context manager whose exit hands the block back.

    ``len(batch)`` packets; ``seq_num`` increases by one per block, so a gap
    shows blocks the reader never saw; ``timed_out`` tells that the kernel
    retired the block on its timer rather than because it was full.

    ``losing``: the kernel dropped packets (ring full) before it closed this
    block, since ``stats()`` was last read. TPACKET_V3 reports loss only here
    and in ``stats()``: a frozen ring opens no block while it drops, so drops
    leave no ``seq_num`` gap.
    """

    __slots__ = (
        "_owner", "_base", "_meta", "_n", "_snaplen", "seq_num",
        "timed_out", "first_timestamp_ns", "last_timestamp_ns", "_data_bytes",
        "_data_end", "losing", "_pool", "_mv", "_datas", "__weakref__",
    )

    def __init__(self, owner: Any, mv: _MetaViews, n: int, info: Any, snaplen: int,
                 pool: BlockPool | None = None) -> None:
        self._pool = pool
        self._owner = owner
        self._base: memoryview | None = None
        self._mv: _MetaViews | None = mv
        self._meta = mv.cdata
        self._datas: list[memoryview] | None = None
        self._n = n
        self._snaplen = snaplen
        self.seq_num: int = int(info.seq_num)
        self.timed_out: bool = bool(info.block_status & lib.TP_STATUS_BLK_TMO)
        self.losing: bool = bool(info.block_status & lib.TP_STATUS_LOSING)
        self.first_timestamp_ns: int = int(info.ts_first_ns)
        self.last_timestamp_ns: int = int(info.ts_last_ns)
        self._data_bytes = int(info.data_bytes)
        self._data_end = int(info.data_end)

    # -- views ---------------------------------------------------------------

    def _view(self, i: int) -> memoryview:
        return self.datas()[i]

    def datas(self) -> list[memoryview]:
        """Zero-copy views of every packet's data, made in one C-driven pass.

        Valid until the batch is released (then each raises ``ValueError``).
        """
        d = self._datas
        if d is None:
            mv = self._mv
            if mv is None:
                raise ReleasedError("packet data used after its batch was released")
            n = self._n
            base = self._base = memoryview(ffi.buffer(self._owner, self._data_end)).toreadonly()
            bounds = memoryview(bytearray(8 * n)).cast("I")
            p = ffi.from_buffer("uint32_t[]", bounds)
            lib.nc_data_bounds(mv.cdata, n, self._snaplen, p, p + n)
            d = self._datas = list(map(base.__getitem__, map(slice, bounds[:n], bounds[n:])))
        return d

    @property
    def timestamps_ns(self) -> array[int]:
        """Every packet's timestamp (ns), copied into an ``array('Q')``."""
        mv = self._mv
        if mv is None:
            raise ReleasedError("batch used after release")
        a = array("Q")
        a.frombytes(mv.u64[_TS:self._n * _W64:_W64].tobytes())
        return a

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
        return Packet((self, i))

    def __iter__(self) -> Iterator[Packet]:
        n = len(self)
        return map(Packet, zip(repeat(self, n), range(n)))

    @property
    def released(self) -> bool:
        """True once the batch was released (its views raise ``ReleasedError``)."""
        return self._meta is None

    def to_owned(self) -> OwnedBatch:
        """Copy every packet out in one C call; the result outlives the ring."""
        if self._meta is None:
            raise ReleasedError("batch used after release")
        return OwnedBatch._copy(self)

    def to_arrow(self) -> Any:
        """The batch as a ``pyarrow.RecordBatch``: ``to_owned().to_arrow()``."""
        return self.to_owned().to_arrow()

    def release(self) -> None:
        """Invalidate every view and let the block go back to the kernel.

        Idempotent. Views the user derived (slices of ``pkt.data``) keep the
        block pinned until they are dropped; they are never left reading a
        recycled block.
        """
        mv = self._mv
        if mv is None:
            return
        self._mv = None
        self._meta = None
        if self._pool is not None:
            self._pool.put_meta(mv)
        views, self._datas = self._datas, None
        if views:
            try:
                deque(map(_release, views), 0)
            except BufferError:  # one was exported further (e.g. numpy): it stays pinned
                for v in views:
                    try:
                        v.release()
                    except BufferError:
                        pass
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
        # A signal's exception (Ctrl-C) can interrupt __init__ before the
        # slots release() reads are set (``_datas`` is the last of them).
        if hasattr(self, "_datas"):
            self.release()

    def __reduce__(self) -> Any:
        raise TypeError("a PacketBatch cannot be pickled: it is ring memory lent by the kernel; "
                        "pickle batch.to_owned() (an OwnedBatch)")

    def __repr__(self) -> str:
        state = "released" if self._meta is None else f"{self._n} packets"
        return f"<PacketBatch seq={self.seq_num} {state}>"


def _ns_to_datetime(ns: int) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(ns // 1_000_000_000, _dt.timezone.utc).replace(
        microsecond=(ns % 1_000_000_000) // 1000
    )


class _Columns:
    """Per-packet metadata of an owned batch, one typed sequence per field."""

    __slots__ = ("ts", "caplen", "wire_len", "status", "rxhash", "ifindex", "protocol",
                 "hatype", "vlan_tci", "vlan_tpid", "pkttype", "halen", "addr")
    ts: Any
    caplen: Any
    wire_len: Any
    status: Any
    rxhash: Any
    ifindex: Any
    protocol: Any
    hatype: Any
    vlan_tci: Any
    vlan_tpid: Any
    pkttype: Any
    halen: Any
    addr: Any

    def __init__(self, cols: Sequence[Any]) -> None:
        for name, col in zip(self.__slots__, cols):
            setattr(self, name, col)

    def row(self, i: int) -> tuple[Any, ...]:
        h = self.halen[i]
        addr = bytes(self.addr[8 * i:8 * i + h]) if isinstance(self.addr, memoryview) else self.addr[i]
        return (self.wire_len[i], self.pkttype[i], self.ifindex[i], self.protocol[i], self.status[i],
                self.vlan_tci[i], self.vlan_tpid[i], self.rxhash[i], self.hatype[i], addr)


def _col(name: str, doc: str) -> Any:
    def get(self: OwnedPacket) -> Any:
        return getattr(self._cols, name)[self._index]
    get.__name__ = name
    return property(get, doc=doc)


class OwnedPacket(PacketBase):
    """A captured frame copied out of the ring: immutable, picklable.

    ``data`` and ``timestamp_ns`` are stored in the packet; the other fields
    are read from its batch's columns on access. A batch's packets are made
    by a C iterator, one allocation each. Build one by hand with
    ``OwnedPacket.make``.
    """

    __slots__ = ()

    # Stored by PacketBase (C); declared here for the reader and the docs.
    data: bytes
    """The captured bytes (at most ``snaplen`` long)."""
    timestamp_ns: int
    """Capture time in nanoseconds since the epoch."""
    wire_len: int = _col("wire_len", "Original length of the frame on the wire.")
    """Original length of the frame on the wire."""
    pkttype: int = _col("pkttype", "``sll_pkttype`` as a plain int (see ``direction``).")
    """``sll_pkttype`` as a plain int (see ``direction``)."""
    ifindex: int = _col("ifindex", "Index of the interface the frame was captured on.")
    """Index of the interface the frame was captured on."""
    protocol: int = _col("protocol", "Link-layer protocol (EtherType), host byte order.")
    """Link-layer protocol (EtherType), host byte order."""
    status_bits: int = _col("status", "The kernel's per-packet status bits as an int (see ``status``).")
    """The kernel's per-packet status bits as an int (see ``status``)."""
    rxhash: int = _col("rxhash", "Flow hash from the kernel (0 unless ``rx_hash=True`` was asked).")
    """Flow hash from the kernel (0 unless ``rx_hash=True`` was asked)."""
    hatype: int = _col("hatype", "ARPHRD_* link type of the interface.")
    """ARPHRD_* link type of the interface."""

    @classmethod
    def make(cls, data: bytes, timestamp_ns: int, wire_len: int | None = None, pkttype: int = 0,
             ifindex: int = 0, protocol: int = 0, status_bits: int = 0, vlan_tci: int = 0,
             vlan_tpid: int = 0, rxhash: int = 0, hatype: int = 1, source_address: bytes = b"") -> OwnedPacket:
        """An owned packet from its fields (for files, tests, synthetic traffic)."""
        data = bytes(data)
        cols = _Columns(([timestamp_ns], [len(data)], [len(data) if wire_len is None else wire_len],
                         [status_bits], [rxhash], [ifindex], [protocol], [hatype], [vlan_tci],
                         [vlan_tpid], [pkttype], [len(source_address)], [bytes(source_address)]))
        return cls(data, timestamp_ns, cols, 0)

    @property
    def source_address(self) -> bytes:
        """Link-layer source address (``sll_addr``, ``sll_halen`` bytes)."""
        c, i = self._cols, self._index
        if isinstance(c.addr, memoryview):
            return bytes(c.addr[8 * i:8 * i + c.halen[i]])
        return bytes(c.addr[i])

    @property
    def timestamp(self) -> float:
        """Capture time as float seconds since the epoch."""
        return int(self.timestamp_ns) / 1e9

    @property
    def datetime(self) -> _dt.datetime:
        """Capture time as an aware UTC ``datetime`` (microsecond precision)."""
        return _ns_to_datetime(self.timestamp_ns)

    @property
    def caplen(self) -> int:
        """Bytes in ``data`` (after kernel and snaplen truncation)."""
        return len(self.data)

    @property
    def truncated(self) -> bool:
        """True when ``data`` is shorter than the frame on the wire."""
        return len(self.data) < self.wire_len

    @property
    def direction(self) -> Direction | int:
        """Where the frame was going (``Direction``; an int the enum does not know)."""
        return _direction(self.pkttype)

    @property
    def status(self) -> Status:
        """The kernel's per-packet status bits (``Status``)."""
        return Status(self.status_bits)

    @property
    def vlan_tci(self) -> int | None:
        """802.1Q TCI the kernel took off the frame, if it had a tag."""
        c, i = self._cols, self._index
        return int(c.vlan_tci[i]) if c.status[i] & lib.TP_STATUS_VLAN_VALID else None

    @property
    def vlan_tpid(self) -> int | None:
        """802.1Q TPID of the tag the kernel took off the frame, if it reported one."""
        c, i = self._cols, self._index
        return int(c.vlan_tpid[i]) if c.status[i] & lib.TP_STATUS_VLAN_TPID_VALID else None

    def _fields(self) -> tuple[Any, ...]:
        row: tuple[Any, ...] = self._cols.row(self._index)
        return (self.data, self.timestamp_ns) + row

    def to_owned(self) -> OwnedPacket:
        """Itself: an owned packet is already a copy."""
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        f = self._fields()
        return (_owned_from_fields, f)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OwnedPacket):
            return NotImplemented
        return self._fields() == other._fields()

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        d = self.data
        return f"OwnedPacket(data={d[:16]!r}{'...' if len(d) > 16 else ''}, " \
               f"timestamp_ns={self.timestamp_ns}, wire_len={self.wire_len}, direction={self.direction!r})"


def _owned_from_fields(data: bytes, ts: int, wire_len: int, pkttype: int, ifindex: int, protocol: int,
                       status: int, vlan_tci: int, vlan_tpid: int, rxhash: int, hatype: int,
                       addr: bytes) -> OwnedPacket:
    return OwnedPacket.make(data, ts, wire_len, pkttype, ifindex, protocol, status, vlan_tci,
                            vlan_tpid, rxhash, hatype, addr)


_release = memoryview.release
_COL_FORMATS = ("Q", "I", "I", "I", "I", "i", "H", "H", "H", "H", "B", "B", "B")


class OwnedBatch(Sequence[OwnedPacket]):
    """The packets of one block, copied out of the ring in one C call.

    Fast paths for bulk consumers: ``datas()`` (a list with each packet's
    bytes) and the typed columns ``timestamps_ns``, ``wire_lens``, ``caplens``;
    iterating yields ``OwnedPacket`` objects built by C-driven iteration.
    Picklable; ``source`` is the index of the source it came from in a service.
    """

    __slots__ = ("_datas", "_cols", "_n", "seq_num", "timed_out", "source", "_c", "_blob")

    def __init__(self, datas: list[bytes], cols: bytes | bytearray, n: int, seq_num: int = 0,
                 timed_out: bool = False, source: int = 0) -> None:
        self._datas: list[bytes] | None = datas
        self._cols = cols
        self._n = n
        self.seq_num = seq_num
        self.timed_out = timed_out
        self.source = source
        self._c: _Columns | None = None
        self._blob: _Blob | None = None

    @classmethod
    def _from_blob(cls, blob: _Blob, cols: bytes | bytearray, seq_num: int = 0, timed_out: bool = False,
                   source: int = 0) -> OwnedBatch:
        # Each packet's own bytes object is made when it is taken (see _fastpath.Blob).
        b = cls.__new__(cls)
        b._datas = None
        b._cols, b._n, b.seq_num, b.timed_out, b.source, b._c = cols, len(blob), seq_num, timed_out, source, None
        b._blob = blob
        return b

    @classmethod
    def _copy(cls, batch: PacketBatch) -> OwnedBatch:
        n = batch._n
        if n == 0:
            return cls([], b"", 0, batch.seq_num, batch.timed_out)
        # Columns and bytes in one C call that lets the GIL go once. It gets
        # addresses, so the block's lease and the records are held here for
        # the call: a release() in another thread meanwhile must not let the
        # block go back to the kernel (or be unmapped) under the copy.
        owner, meta = batch._owner, batch._meta
        if owner is None or meta is None:
            raise ReleasedError("batch used after release")
        cols, blob = _own(int(ffi.cast("uintptr_t", meta)), n, batch._snaplen,
                          int(ffi.cast("uintptr_t", owner)), batch._data_end)
        return cls._from_blob(blob, cols, batch.seq_num, batch.timed_out)

    def _columns(self) -> _Columns:
        c = self._c
        if c is None:
            offs = ffi.new("uint64_t[]", lib.NC_NCOLS + 1)
            lib.nc_cols_layout(self._n, offs)
            mv = memoryview(self._cols).toreadonly()
            c = self._c = _Columns([mv[offs[k]:offs[k + 1]].cast(f)  # type: ignore[call-overload]
                                    for k, f in enumerate(_COL_FORMATS)])
        return c

    def datas(self) -> list[bytes]:
        """Each packet's captured bytes, in order (the batch's own list: do not mutate)."""
        d = self._datas
        if d is None:
            d = self._datas = _split(self._blob_of())
        return d

    @property
    def timestamps_ns(self) -> memoryview:
        """Every packet's capture time in ns, a typed column (``Q``)."""
        return self._columns().ts  # type: ignore[no-any-return]

    @property
    def wire_lens(self) -> memoryview:
        """Every packet's original length on the wire, a typed column (``I``)."""
        return self._columns().wire_len  # type: ignore[no-any-return]

    @property
    def caplens(self) -> memoryview:
        """Every packet's captured length (``len(data)``), a typed column (``I``)."""
        return self._columns().caplen  # type: ignore[no-any-return]

    @property
    def nbytes(self) -> int:
        """Captured bytes in the batch."""
        return sum(self._columns().caplen) if self._n else 0

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[OwnedPacket]:
        c = self._columns()
        d = self._datas
        return Packets(OwnedPacket, d if d is not None else self._blob_of(), c.ts, c)

    def _blob_of(self) -> _Blob:
        b = self._blob
        assert b is not None  # an owned batch has its datas or its blob
        return b

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return list(self)[i]
        n = self._n
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("packet index out of range")
        c = self._columns()
        # One packet's bytes from the blob, not all of them (datas() would
        # keep a second copy of the whole batch).
        d = self._datas
        return OwnedPacket(d[i] if d is not None else self._blob_of()[i], c.ts[i], c, i)

    def to_owned(self) -> OwnedBatch:
        """Itself: an owned batch is already a copy."""
        return self

    def to_arrow(self) -> Any:
        """The batch as a ``pyarrow.RecordBatch``, one row per packet: ``timestamp``
        (``timestamp[ns, UTC]``), ``wire_len``, ``caplen``, ``direction``
        (``sll_pkttype``, see ``Direction``), ``ifindex``, ``protocol``,
        ``vlan_tci`` and ``vlan_tpid`` (null without a tag), ``rxhash`` and
        ``data`` (``binary``). Built from the batch's columns, without a Python
        step per packet; the fixed-width columns share the batch's memory.
        Needs the ``arrow`` extra (``ArrowMissingError`` otherwise)."""
        from ._arrow import to_arrow

        return to_arrow(self)

    def release(self) -> None:
        """Nothing to give back: an owned batch holds no ring memory (the ``Batch`` contract)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __reduce__(self) -> tuple[Any, ...]:
        b = self._blob
        if b is not None:
            return (_owned_from_blob, (b.data(), b.offsets(), bytes(self._cols), self.seq_num, self.timed_out,
                                       self.source))
        return (OwnedBatch, (self._datas, bytes(self._cols), self._n, self.seq_num, self.timed_out, self.source))

    def __repr__(self) -> str:
        return f"<OwnedBatch seq={self.seq_num} {self._n} packets>"


def _owned_from_blob(data: bytes, offsets: bytes, cols: bytes, seq_num: int, timed_out: bool,
                     source: int) -> OwnedBatch:
    return OwnedBatch._from_blob(_blob(data, offsets), cols, seq_num, timed_out, source)


class _RestBatch(OwnedBatch):
    """The packets a per-packet consumer had not handed out when it stopped,
    as an ``OwnedBatch`` (so it can go back to the head of a queue)."""

    __slots__ = ("_pkts",)

    def __init__(self, pkts: list[OwnedPacket], source: int) -> None:
        super().__init__([], b"", 0, source=source)
        self._pkts = pkts

    def __len__(self) -> int:
        return len(self._pkts)

    def __iter__(self) -> Iterator[OwnedPacket]:
        return iter(self._pkts)

    def __getitem__(self, i: Any) -> Any:
        return self._pkts[i]

    def datas(self) -> list[bytes]:
        return [p.data for p in self._pkts]

    @property
    def timestamps_ns(self) -> memoryview:
        return memoryview(array("Q", [p.timestamp_ns for p in self._pkts]))

    @property
    def wire_lens(self) -> memoryview:
        return memoryview(array("I", [p.wire_len for p in self._pkts]))

    @property
    def caplens(self) -> memoryview:
        return memoryview(array("I", [len(p.data) for p in self._pkts]))

    @property
    def nbytes(self) -> int:
        return sum(len(p.data) for p in self._pkts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_RestBatch, (self._pkts, self.source))

    def __repr__(self) -> str:
        return f"<OwnedBatch (rest) {len(self._pkts)} packets>"


class PacketCursor:
    """A consumer's position inside its current owned batch.

    The one place where packets are handed out one at a time: every
    per-packet face (the services' faces, ``Capture.packets``, the fd-driven
    streams) keeps one. ``it`` is the batch's C-driven packet iterator, read
    directly by the hot paths; ``take_rest()`` gives what was not handed out
    as a batch, so a consumer that stops mid-batch can put it back.
    """

    __slots__ = ("it", "source")

    def __init__(self) -> None:
        self.it: Iterator[OwnedPacket] | None = None
        self.source = 0

    def set(self, batch: OwnedBatch) -> Iterator[OwnedPacket]:
        """Start handing out ``batch``; returns its packet iterator."""
        it = self.it = iter(batch)
        self.source = batch.source
        return it

    def next(self) -> OwnedPacket | None:
        """The next packet of the current batch, or ``None`` when it is used up."""
        it = self.it
        if it is None:
            return None
        p = next(it, None)
        if p is None:
            self.it = None
        return p

    def take_rest(self) -> OwnedBatch | None:
        """What is left of the current batch, as a batch (``None`` if nothing)."""
        it, self.it = self.it, None
        rest = list(it) if it is not None else None
        return _RestBatch(rest, self.source) if rest else None
