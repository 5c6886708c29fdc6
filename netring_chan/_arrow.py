"""Owned batches as Apache Arrow record batches (``OwnedBatch.to_arrow``).

pyarrow is an optional extra: it is imported on first use, and its absence
is an ``ArrowMissingError`` naming the extra to install.

An ``OwnedBatch`` already holds its metadata as a struct-of-arrays area of
typed columns (the copy-out's layout), so every fixed-width Arrow column is a
zero-copy view of it (``pa.Array.from_buffers``: the Arrow array keeps the
batch's column memory alive). The packet bytes become one ``binary`` column
from one data buffer (``b"".join`` of the batch's bytes objects) and one
offsets buffer (``itertools.accumulate`` over their lengths): both loops run
in C; building the column with ``pa.array(list_of_bytes)`` measured 2.5-3x
slower. The VLAN columns are null where the kernel reported no tag: their
validity bitmaps are the bit-packed result of one vectorised test of the
status column.
"""

from __future__ import annotations

import itertools
from array import array
from typing import TYPE_CHECKING, Any, Iterable

from ._lowlevel import lib
from .errors import ArrowMissingError

if TYPE_CHECKING:
    import pyarrow as pa

    from .packet import OwnedBatch

__all__ = ["pyarrow", "schema", "to_arrow", "batch_to_arrow", "packets_to_arrow", "COLUMNS"]

COLUMNS = ("timestamp", "wire_len", "caplen", "direction", "ifindex", "protocol", "vlan_tci", "vlan_tpid",
           "rxhash", "data")

_pa: Any = None
_schema: Any = None


def pyarrow() -> Any:
    """The ``pyarrow`` module, or ``ArrowMissingError`` naming the extra."""
    global _pa
    if _pa is None:
        try:
            import pyarrow as mod
            import pyarrow.compute  # noqa: F401 - the VLAN masks
        except ImportError as e:
            raise ArrowMissingError(f"this needs pyarrow, which is not installed ({e}): "
                                    "pip install 'netring_chan[arrow]'") from e
        _pa = mod
    return _pa


def schema() -> pa.Schema:
    """The schema of every record batch ``to_arrow`` gives (and of the Parquet files)."""
    global _schema
    if _schema is None:
        pa = pyarrow()
        _schema = pa.schema([
            pa.field("timestamp", pa.timestamp("ns", tz="UTC"), nullable=False),
            pa.field("wire_len", pa.uint32(), nullable=False),
            pa.field("caplen", pa.uint32(), nullable=False),
            pa.field("direction", pa.uint8(), nullable=False),  # sll_pkttype: netring_chan.Direction
            pa.field("ifindex", pa.int32(), nullable=False),
            pa.field("protocol", pa.uint16(), nullable=False),  # EtherType, host order
            pa.field("vlan_tci", pa.uint16()),  # null: the kernel took no 802.1Q tag off
            pa.field("vlan_tpid", pa.uint16()),
            pa.field("rxhash", pa.uint32(), nullable=False),
            pa.field("data", pa.binary(), nullable=False),
        ])
    return _schema  # type: ignore[no-any-return]


def _binary(pa: Any, datas: list[bytes]) -> Any:
    """One ``binary`` array from a list of bytes, without a Python loop per packet."""
    try:  # int32 offsets: array() itself refuses one past 2**31 - 1 (cannot happen for one ring block)
        offsets = array("i", itertools.accumulate(map(len, datas), initial=0))
    except OverflowError:
        raise OverflowError("a batch of more than 2 GiB of packet bytes does not fit one Arrow binary column") \
            from None
    return pa.Array.from_buffers(pa.binary(), len(datas), [None, pa.py_buffer(offsets),
                                                          pa.py_buffer(b"".join(datas))])


def _blob_binary(pa: Any, blob: Any) -> Any:
    """One ``binary`` array from a batch's blob: its bounds already are Arrow's
    offsets (n + 1, from 0; a blob holds less than 2 GiB) and its data one copy."""
    return pa.Array.from_buffers(pa.binary(), len(blob), [None, pa.py_buffer(blob.offsets()),
                                                          pa.py_buffer(blob.data())])


def _masked(pa: Any, typ: Any, n: int, values: Any, status: Any, bit: int) -> Any:
    """``values`` with nulls where ``status & bit`` is clear."""
    valid = pa.compute.not_equal(pa.compute.bit_wise_and(status, pa.scalar(bit, pa.uint32())),
                                 pa.scalar(0, pa.uint32()))
    nulls = n - valid.true_count
    if nulls == 0:
        return pa.Array.from_buffers(typ, n, [None, values])
    if nulls == n:
        return pa.nulls(n, typ)
    # A boolean array with no nulls at offset 0 is exactly a validity bitmap.
    return pa.Array.from_buffers(typ, n, [valid.buffers()[1], values], null_count=nulls)


def to_arrow(batch: OwnedBatch) -> pa.RecordBatch:
    """``OwnedBatch.to_arrow``: from the columns, or, for a batch that keeps
    none (the rest of a batch a consumer stopped in), from its packets."""
    from .packet import OwnedBatch

    if type(batch) is OwnedBatch:
        return batch_to_arrow(batch)
    return packets_to_arrow(batch)


def batch_to_arrow(batch: OwnedBatch) -> pa.RecordBatch:
    """The record batch of an ``OwnedBatch`` (see ``OwnedBatch.to_arrow``)."""
    pa = pyarrow()
    sch = schema()
    n = len(batch)
    if n == 0:
        return pa.RecordBatch.from_pylist([], schema=sch)
    c = batch._columns()
    buf = pa.py_buffer
    status = pa.Array.from_buffers(pa.uint32(), n, [None, buf(c.status)])
    cols = [
        pa.Array.from_buffers(sch.field("timestamp").type, n, [None, buf(c.ts)]),
        pa.Array.from_buffers(pa.uint32(), n, [None, buf(c.wire_len)]),
        pa.Array.from_buffers(pa.uint32(), n, [None, buf(c.caplen)]),
        pa.Array.from_buffers(pa.uint8(), n, [None, buf(c.pkttype)]),
        pa.Array.from_buffers(pa.int32(), n, [None, buf(c.ifindex)]),
        pa.Array.from_buffers(pa.uint16(), n, [None, buf(c.protocol)]),
        _masked(pa, pa.uint16(), n, buf(c.vlan_tci), status, lib.TP_STATUS_VLAN_VALID),
        _masked(pa, pa.uint16(), n, buf(c.vlan_tpid), status, lib.TP_STATUS_VLAN_TPID_VALID),
        pa.Array.from_buffers(pa.uint32(), n, [None, buf(c.rxhash)]),
        _blob_binary(pa, batch._blob) if batch._blob is not None else _binary(pa, batch.datas()),
    ]
    return pa.RecordBatch.from_arrays(cols, schema=sch)


def packets_to_arrow(packets: Iterable[Any]) -> pa.RecordBatch:
    """The record batch of any packets (``OwnedPacket``, ``Packet``): the slow,
    general path, one Python step per packet (``TypeError`` naming a packet
    that is not one)."""
    pa = pyarrow()
    sch = schema()
    rows: list[list[Any]] = [[] for _ in COLUMNS]
    ts, wl, cl, dr, ix, pr, tci, tpid, rx, data = rows
    i = -1
    try:
        for i, p in enumerate(packets):
            d = bytes(p.data)
            ts.append(p.timestamp_ns)
            wl.append(p.wire_len)
            cl.append(len(d))
            dr.append(int(p.direction))
            ix.append(p.ifindex)
            pr.append(p.protocol)
            tci.append(p.vlan_tci)
            tpid.append(p.vlan_tpid)
            rx.append(p.rxhash)
            data.append(d)
    except (AttributeError, TypeError) as e:
        what = "packets must be packets (OwnedPacket or Packet)" if i < 0 else f"packet {i}"
        raise TypeError(f"{what}: {type(e).__name__}: {e}") from None
    try:
        arrays = [pa.array(col, type=f.type) for col, f in zip(rows, sch)]
    except (pa.ArrowInvalid, OverflowError) as e:  # a field out of its column's range
        raise ValueError(f"a packet field does not fit its Arrow column: {e}") from None
    return pa.RecordBatch.from_arrays(arrays, schema=sch)
