"""The Parquet writer: ``ParquetWriter`` (a ``Sink`` of the contract) and ``open_parquet``.

Batches become Arrow record batches (``OwnedBatch.to_arrow``: no Python
step per packet), are buffered up to a bound (``row_group_bytes``,
``row_group_rows``) and written as one Parquet row group each. Rotation is
the pcap writer's (``Rotate``: size, seconds, a ring of files; the same
names, with the number before the extension so every shard ends in
``.parquet``).

A shard for a dataset directory: ``partition={"worker": 3}`` puts the files
under hive-style ``worker=3/`` directories, and ``partition_time="hour"``
(or ``"day"``) under ``date=YYYY-MM-DD/hour=HH/`` by each packet's UTC
capture time (a file holds one time partition; a batch that crosses an
hour is split by hour, each hour's rows in their order). DuckDB
(``read_parquet('dir/**/*.parquet', hive_partitioning=true)``),
``pyarrow.dataset``, Spark, Trino and Polars
read such a directory as one table with the partition keys as columns.

A Parquet file is readable only once it is closed (its footer is written
last): ``close()`` (also at interpreter exit, or when a writer is collected
open) and every rotation finish the file; a process killed before leaves
that file unreadable, the shards it finished before intact. Rotating by
``seconds`` bounds what a crash can lose while packets keep coming: the
age is checked at each write, so after a burst and then silence the file
stays open (and its rows in memory) until the next packet or ``close()``.
"""

from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from ..._arrow import COLUMNS, packets_to_arrow, pyarrow, schema
from ...contract import Frame
from ...errors import ConfigError
from ...packet import OwnedBatch, PacketBatch
from .writer import Rotate, _check_options, _live, _Rotating

__all__ = ["ParquetWriter", "open_parquet", "PARTITION_TIMES"]

PARTITION_TIMES = ("hour", "day")
_ROW_BYTES = 35  # fixed-width columns and the data offset, per row: the buffer's estimate of a row
_NS = {"hour": 3600 * 10**9, "day": 86400 * 10**9}
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# pyarrow.dataset skips files and directories whose names start with '.'
# or '_'. Hive readers match keys case-insensitively (DuckDB), and a key
# that names a column replaces that column's values; they percent-decode
# values, read the default partition as null, and drop a path segment with
# a control character (DuckDB).
_RESERVED = frozenset(("date", "hour") + COLUMNS)
_BAD_VALUE = re.compile(r"[/\\=%\x00-\x1f\x7f]")
_NULL_VALUE = "__HIVE_DEFAULT_PARTITION__"
_NAME_MAX = 255  # bytes in a directory entry's name (Linux NAME_MAX)
_OUTGOING = 4  # PACKET_OUTGOING
_CODECS = ("none", "snappy", "gzip", "brotli", "lz4", "lz4_raw", "zstd")  # Parquet's, that pyarrow writes
# Dictionary encoding where values repeat; min/max statistics where a query
# prunes row groups by them (time, lengths, protocol). Not on the packet
# bytes: measured, each cost a third of the write rate there for nothing.
_DICTIONARY = ["direction", "ifindex", "protocol", "vlan_tci", "vlan_tpid"]
_STATISTICS = ["timestamp", "wire_len", "caplen", "ifindex", "protocol"]

Writable = Union[OwnedBatch, PacketBatch, Iterable[Any]]

def _check_partition(partition: object) -> tuple[tuple[str, str], ...]:
    if partition is None:
        return ()
    if not isinstance(partition, Mapping):
        raise ConfigError(f"partition must be a mapping of key to value (e.g. {{'worker': 0}}), got {partition!r}")
    out: list[tuple[str, str]] = []
    for k, v in partition.items():
        if not isinstance(k, str) or not _KEY.fullmatch(k) or k.lower() in _RESERVED or \
                any(k.lower() == seen.lower() for seen, _ in out):
            raise ConfigError(f"partition key must be an ASCII identifier starting with a letter, other than 'date', "
                              f"'hour', the column names {COLUMNS} and the other keys (in any case), got {k!r}")
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ConfigError(f"partition value of {k!r} must be a str or an int, got {v!r}")
        try:
            text = str(int(v)) if isinstance(v, int) else str.__str__(v)  # an enum's value, not its name
        except ValueError:  # an int past Python's int-to-str limit (its repr fails too)
            raise ConfigError(f"partition value of {k!r} is an int too long to name a directory") from None
        if not text or _BAD_VALUE.search(text) or text in (".", "..", _NULL_VALUE) or \
                len(f"{k}={text}".encode(errors="surrogateescape")) > _NAME_MAX:
            raise ConfigError(f"partition value of {k!r} must be a non-empty name without '/', '\\\\', '=', "
                              f"'%' or control characters, '{k}=value' at most {_NAME_MAX} bytes, "
                              f"got {v!r:.80}")
        out.append((k, text))
    return tuple(out)


def _positive(name: str, v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{name} must be a positive int, got {v!r}")
    return v


class ParquetWriter(_Rotating):
    """Parquet files being written, one row per packet (use ``open_parquet``
    or ``open_writer`` with a ``.parquet`` name).

    The columns are those of ``OwnedBatch.to_arrow`` (packets longer than
    ``snaplen`` are cut, their ``wire_len`` kept). ``write(batch_or_packets)``
    takes what the pcap ``Writer.write`` takes and returns the packets
    written (buffered: they reach the file by row groups, and are readable
    once the file is closed). ``write_stats(...)`` records the capture's
    counters; ``close()`` puts them in the file's key-value metadata
    (``netring_chan.stats``, JSON), beside ``netring_chan.snaplen``,
    ``netring_chan.linktype`` and ``netring_chan.interfaces`` written at open.
    ``path`` is the file being written (``""`` before the first file of a
    time-partitioned dataset), ``paths`` every file opened, in order;
    ``packets`` counts over all files, ``bytes_written`` is the size of
    the files finished so far plus the row groups written to the current one.

    Also a ``Sink`` of the contract: ``publish(frames)`` buffers raw frames
    with the current time as outgoing packets (``protocol`` 0), so an
    ``InjectService`` can "send" into a dataset; it never runs out of room.
    """

    _number_before_ext = True
    format = "parquet"

    def __init__(self, path: str, snaplen: int, linktype: int, interface: str | Sequence[str],
                 rotate: Rotate | None, partition: tuple[tuple[str, str], ...], partition_time: str | None,
                 compression: str, compression_level: int | None, row_group_bytes: int, row_group_rows: int,
                 clock: Callable[[], float] = time.time) -> None:
        self._file: Any = None
        self._pw: Any = None
        super().__init__(path, rotate, clock)
        self._pa = pyarrow()
        import pyarrow.parquet as pq

        self._pq = pq
        self.snaplen = snaplen
        self.linktype = linktype
        self.interfaces = self._interface_names(interface)
        self.partition = dict(partition)
        self.partition_time = partition_time
        # Several files in one directory for a reason other than Rotate
        # (time partitions) must never reuse a name: number them.
        self._numbered = partition_time is not None
        self.compression = compression
        self.compression_level = compression_level
        self._rg_bytes = row_group_bytes
        self._rg_rows = row_group_rows
        self._schema = schema().with_metadata({
            "netring_chan.snaplen": str(snaplen), "netring_chan.linktype": str(linktype),
            "netring_chan.interfaces": json.dumps(list(self.interfaces))})
        self._buf: list[Any] = []
        self._buf_rows = 0
        self._buf_bytes = 0
        self._key: int | None = None  # the current file's time partition
        self._stats: dict[str, int] = {}
        self.packets = 0
        self.bytes_written = 0
        self._done_bytes = 0  # files finished
        self._published = 0
        if partition_time is None:
            self._open_next(None)  # a path it cannot write fails here, not at the first packet
        self._opened()
        _live.add(self)

    def _after_fork_in_child(self) -> None:
        # pyarrow's writer writes the footer when it is collected, through
        # the child's copy of the fd, which shares the parent's file offset:
        # in the child, that fd is pointed at /dev/null, so nothing the child
        # does (or collects) reaches the parent's file.
        super()._after_fork_in_child()
        f = self._file
        if f is not None and not f.closed:
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.dup2(null, f.fileno(), inheritable=False)
            finally:
                os.close(null)

    # -- files ------------------------------------------------------------------

    def _directory(self, key: int | None) -> str:
        parts = [f"{k}={v}" for k, v in self.partition.items()]
        if key is not None:
            t = time.gmtime(key * (_NS[self.partition_time or "day"] // 10**9))
            parts.append(time.strftime("date=%Y-%m-%d", t))
            if self.partition_time == "hour":
                parts.append(time.strftime("hour=%H", t))
        return os.path.join(*parts) if parts else ""

    def _open_next(self, key: int | None) -> None:
        d = self._directory(key)
        name = self._next_path(d)
        if d:
            os.makedirs(os.path.dirname(name), exist_ok=True)
        # Unbuffered: pyarrow writes whole pages and the footer itself, and a
        # forked child must hold no buffered bytes of ours (see below).
        f = open(name, "wb", buffering=0)  # noqa: SIM115 - closed in _finish_file
        try:
            self._pw = self._pq.ParquetWriter(
                f, self._schema, compression=self.compression, compression_level=self.compression_level,
                use_dictionary=_DICTIONARY, write_statistics=_STATISTICS)
        except BaseException:
            f.close()
            raise
        self._file = f
        self._key = key
        self._started(name)

    def _write_group(self) -> None:
        """The buffered rows, as one row group of the current file."""
        if not self._buf:
            return
        table = self._pa.Table.from_batches(self._buf, schema=self._schema)
        self._buf, self._buf_rows, self._buf_bytes = [], 0, 0
        self._pw.write_table(table, row_group_size=table.num_rows)
        self.bytes_written = self._done_bytes + self._file.tell()

    def _finish_file(self) -> None:
        """The end of one file: the last row group, the footer, close."""
        pw, f = self._pw, self._file
        if f is None:
            return
        try:
            try:
                self._write_group()
                if self._stats:
                    pw.add_key_value_metadata({"netring_chan.stats": json.dumps(self._stats)})
            finally:  # a failed write (disk full) must not leak the file
                self._pw = self._file = None
                pw.close()
        finally:
            self._done_bytes += f.tell()
            self.bytes_written = self._done_bytes
            f.close()

    # -- writing ------------------------------------------------------------------

    def write(self, packets: Writable, *, interface: int | None = None) -> int:
        """Write a batch or packets; returns how many were written (buffered).

        ``interface`` is accepted for the pcap writer's signature (``None``
        or an index of the writer's interfaces) and not recorded: every row
        carries its own ``ifindex``.
        """
        self._check_usable(f"writer {self.path!r}")
        if interface is not None:
            self._iface(interface)
        if isinstance(packets, PacketBatch):
            packets = packets.to_owned()
        if isinstance(packets, OwnedBatch):
            rb = packets.to_arrow()
        else:
            try:
                rb = packets_to_arrow(packets)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"write: {e}") from None
        return self._write_rows(rb)

    def _write_rows(self, rb: Any) -> int:
        n: int = rb.num_rows
        if not n:
            return 0
        pc = self._pa.compute
        caplen = rb.column("caplen")
        if pc.max(caplen).as_py() > self.snaplen:
            rb = self._cut(rb)
            caplen = rb.column("caplen")
        key = None
        if self.partition_time is not None:
            ts, unit = rb.column("timestamp").cast(self._pa.int64()), _NS[self.partition_time]
            keys = pc.divide(ts, unit)  # truncates toward zero: floor it for a time before 1970
            keys = pc.subtract(keys, pc.cast(pc.less(ts, pc.multiply(keys, unit)), self._pa.int64()))
            parts = pc.unique(keys)
            if len(parts) > 1:
                # Each time partition's rows together, in their order: packets
                # a little out of order across a boundary (from several CPUs)
                # must not end a file at each change, one file per packet.
                for part in parts:
                    self._write_rows(rb.filter(pc.equal(keys, part)))
                return n
            key = parts[0].as_py()
        size = self.rotate.size if self.rotate is not None else None
        at = 0
        while at < n:
            k = n - at
            if self._file is None or key != self._key or self._rotation_due():
                self._finish_file()
                self._open_next(key)
            # Rows up to the bounds: the buffer is one row group at most, and
            # a file ends once it holds `size` bytes (as buffered, before
            # compression), as tcpdump -C does. The rows that start below a
            # bound are taken, the one crossing it included.
            k = min(k, self._rg_rows - self._buf_rows)
            room = self._rg_bytes - self._buf_bytes
            if size is not None:
                room = min(room, size - self._file_bytes)
            est = pc.sum(caplen.slice(at, k)).as_py() + _ROW_BYTES * k
            if est > room:  # only then: where does the bound fall?
                used = pc.cumulative_sum(pc.add(caplen.slice(at, k).cast(self._pa.int64()), _ROW_BYTES))
                k = min(k, (pc.sum(pc.less(used, max(room, 0))).as_py() or 0) + 1)
                est = used[k - 1].as_py()
            self._buf.append(rb.slice(at, k))
            self._buf_rows += k
            self._buf_bytes += est
            self._file_bytes += est
            self._file_packets += k
            self.packets += k
            at += k
            if self._buf_rows >= self._rg_rows or self._buf_bytes >= self._rg_bytes:
                self._write_group()
        return n

    def _cut(self, rb: Any) -> Any:
        """Packets longer than ``snaplen`` cut to it (their ``wire_len`` kept)."""
        pa, pc = self._pa, self._pa.compute
        data = pc.binary_slice(rb.column("data"), 0, self.snaplen)
        caplen = pc.min_element_wise(rb.column("caplen"), pa.scalar(self.snaplen, pa.uint32()))
        cols = [caplen if f.name == "caplen" else data if f.name == "data" else rb.column(f.name)
                for f in self._schema]
        return pa.RecordBatch.from_arrays(cols, schema=self._schema)

    def write_stats(self, *, ifrecv: int | None = None, ifdrop: int | None = None,
                    osdrop: int | None = None, usrdeliv: int | None = None, interface: int = 0) -> None:
        """Record the capture's counters (as the pcap ``Writer.write_stats``:
        ``ifrecv`` packets the kernel accepted, ``ifdrop`` it dropped,
        ``osdrop`` the queue dropped, ``usrdeliv`` delivered); ``close()``
        writes them into the file's key-value metadata. A later call
        replaces the counters given. ``interface`` must be 0 or a valid
        index, and is not recorded (rows carry ``ifindex``)."""
        self._check_usable(f"writer {self.path!r}")
        self._iface(interface)
        for key, v in (("ifrecv", ifrecv), ("ifdrop", ifdrop), ("osdrop", osdrop), ("usrdeliv", usrdeliv)):
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
                raise ConfigError(f"{key} must be an int in 0..2**64-1, got {v!r}")
            self._stats[key] = v

    def close(self, timeout: float | None = None) -> None:
        """Write what is buffered and the footer, close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self._finish_file()

    # -- the Sink contract -----------------------------------------------------------

    @property
    def label(self) -> str:
        """The current file's name (thread names, messages)."""
        return os.path.basename(self.path or self._template)

    def fileno(self) -> int:
        """The file being written (-1 before the first file of a time-partitioned dataset)."""
        self._check_usable(f"writer {self.path!r}")
        return self._file.fileno() if self._file is not None else -1

    def publish(self, frames: Sequence[Frame]) -> int:
        """Buffer raw frames now, stamped with the current time, as outgoing packets."""
        ok = self._accepted(frames)
        n = len(ok)
        if not n:
            return 0
        pa = self._pa
        lens = pa.array(map(len, ok), pa.uint32(), size=n)

        def same(v: int, typ: Any) -> Any:  # a constant column, with no Python step per frame
            return pa.repeat(pa.scalar(v, typ), n)

        cols = {
            "timestamp": same(time.time_ns(), self._schema.field("timestamp").type),
            "wire_len": lens, "caplen": lens, "direction": same(_OUTGOING, pa.uint8()),
            "ifindex": same(0, pa.int32()), "protocol": same(0, pa.uint16()),
            "vlan_tci": pa.nulls(n, pa.uint16()), "vlan_tpid": pa.nulls(n, pa.uint16()),
            "rxhash": same(0, pa.uint32()), "data": pa.array(ok, pa.binary()),
        }
        self._write_rows(pa.RecordBatch.from_arrays([cols[f.name] for f in self._schema], schema=self._schema))
        self._published += n
        return n

    def flush(self) -> int:
        """Returns 0 and writes nothing: rows go to the file by whole row groups,
        and a Parquet file is readable only once closed, so an early small
        row group would make the file worse without making it readable."""
        self._check_usable(f"writer {self.path!r}")
        return 0

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Always True: what was published is buffered by the writer, nothing is pending."""
        self._check_usable(f"writer {self.path!r}")
        return True

    def __repr__(self) -> str:
        return f"<ParquetWriter {self.path or self._template!r}{' closed' if self._closed else ''}>"


def open_parquet(path: str | os.PathLike[str], *, snaplen: int = 262144, linktype: int = 1,
                 interface: str | Sequence[str] = "", rotate: Rotate | None = None,
                 partition: Mapping[str, str | int] | None = None, partition_time: str | None = None,
                 compression: str = "zstd", compression_level: int | None = None, row_group_bytes: int = 32 << 20,
                 row_group_rows: int = 1 << 17, _clock: Callable[[], float] = time.time) -> ParquetWriter:
    """Open a Parquet file (or a shard of a dataset directory) for writing.

    ``path``: the file, or with ``partition``/``partition_time`` the dataset
    root and the file name: ``root/name.parquet`` gives
    ``root/worker=3/date=2026-12-02/hour=01/name.parquet``, then
    ``name1.parquet``... (a ``Rotate`` template's ``{n}`` and strftime
    fields work as for pcap; the directories are made as needed). Give each
    writer into one partition a distinct name (a host, a process id, a
    start time), not starting with ``.`` or ``_`` (readers skip those): a
    name is truncated when it is opened again. ``partition``: hive-style ``key=value`` directories (keys are
    identifiers starting with a letter, in any case neither a column's
    name nor ``date`` or ``hour``, which readers would confuse with them;
    values str or int,
    without ``/``, ``\\``, ``=``, ``%`` or control characters, which
    readers decode or drop). ``partition_time``: ``"hour"``
    (``date=.../hour=...``), ``"day"`` (``date=...``) or ``None``, by the
    packets' UTC capture time. ``snaplen``, ``linktype``, ``interface``:
    as ``open_writer`` (kept in the file's metadata). ``compression``: a
    Parquet codec pyarrow knows (``"zstd"``, ``"snappy"``, ``"none"``...);
    ``compression_level``: the codec's level (``None``: its default, 1 for zstd).
    ``row_group_bytes``/``row_group_rows``: the bound of the buffer, which
    is written as one row group when either is reached.
    Needs the ``arrow`` extra (``ArrowMissingError`` otherwise).
    """
    p = os.fspath(path)
    if not isinstance(p, str) or not p or p.endswith(os.sep):
        raise ConfigError(f"path must name a file (the dataset root and a file name), got {path!r}")
    _check_options(snaplen, linktype, rotate)
    parts = _check_partition(partition)
    if partition_time is not None and partition_time not in PARTITION_TIMES:
        raise ConfigError(f"partition_time must be one of {PARTITION_TIMES} or None, got {partition_time!r}")
    if (parts or partition_time is not None) and os.path.basename(p).startswith((".", "_")):
        raise ConfigError(f"path: the name of a dataset's shard must not start with '.' or '_' "
                          f"(dataset readers skip such files), got {path!r}")
    pa = pyarrow()
    # Parquet's own codecs only: pyarrow's Codec also knows bz2, which its
    # Parquet writer refuses (an ArrowException after the file was made).
    codec = compression.lower() if isinstance(compression, str) else ""
    if codec not in _CODECS or (codec != "none" and not pa.Codec.is_available(codec)):
        raise ConfigError(f"compression must be a Parquet codec this pyarrow has "
                          f"({', '.join(_CODECS)}), got {compression!r}")
    if compression_level is not None:
        C = pa.Codec
        if codec == "none" or not C.supports_compression_level(codec):
            raise ConfigError(f"compression {compression!r} takes no compression_level, got {compression_level!r}")
        lo, hi = C.minimum_compression_level(codec), C.maximum_compression_level(codec)
        if not isinstance(compression_level, int) or isinstance(compression_level, bool) or \
                not lo <= compression_level <= hi:
            raise ConfigError(f"compression_level for {compression} must be an int in {lo}..{hi}, "
                              f"got {compression_level!r}")
    _positive("row_group_bytes", row_group_bytes)
    _positive("row_group_rows", row_group_rows)
    return ParquetWriter(p, snaplen, linktype, interface, rotate, parts, partition_time, compression,
                         compression_level, row_group_bytes, row_group_rows, _clock)
