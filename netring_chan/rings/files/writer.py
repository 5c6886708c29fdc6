"""pcap and pcapng writers: ``Writer`` (a ``Sink`` of the contract) and ``open_writer``.

A whole owned batch becomes records in one C call (``nc_file_write``), laid
out in a bounded user-space buffer and handed to ``os.write`` only in
whole records (blocks), so a process killed at any moment leaves a file that
every reader accepts up to the last whole packet (a SIGKILL can cut a
``write(2)`` short inside a record: readers, ours included, stop before it). ``close()`` (also at
interpreter exit, on a ``with`` exit by exception or Ctrl-C, or when a writer
is collected open) flushes and, for pcapng, ends the file with an interface
statistics block.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import re
import struct
import time
import weakref
from array import array
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union, cast

from ..._lowlevel import ffi, lib
from ..._resource import Resource
from ...contract import Frame, Sink, TxStats, check_each, frame_length
from ...errors import ConfigError
from ...packet import OwnedBatch, PacketBatch

__all__ = ["Rotate", "Writer", "open_writer", "FORMATS"]

FORMATS = ("pcap", "pcapng", "parquet")
_EXT = {".pcap": "pcap", ".pcapng": "pcapng", ".parquet": "parquet"}
_BUF = 1 << 20  # user-space buffer: flushed when full, at flush(), at close
_FLUSH_EVERY = 1.0  # seconds: a live capture reaches the file at least this often
_MAX_SNAPLEN = 1 << 26
_VERSION = "netring_chan"

Writable = Union[OwnedBatch, PacketBatch, Iterable[Any]]

if TYPE_CHECKING:
    from .parquet import ParquetWriter


@dataclasses.dataclass(frozen=True)
class Rotate:
    """When to start a new file, as tcpdump does.

    ``size``: once a file holds at least this many bytes, the next packet
    goes to a new file (tcpdump ``-C``, here in bytes). ``seconds``: a new
    file every so many seconds of wall time, checked at each write (``-G``).
    ``files``: keep at most this many files, a ring: the oldest is
    overwritten or removed (``-W``).

    Names: ``path`` may hold ``{n}`` (the file's number, 0-based, modulo
    ``files`` for a ring; a format spec works: ``{n:03d}``) and strftime
    fields (``%Y%m%d-%H%M%S``: the local time the file was opened). Without
    ``{n}`` the names are tcpdump's: ``path``, ``path1``, ``path2``...; with
    ``files`` (a ring) ``path0`` .. ``path{files-1}``, zero-padded to the
    width of ``files - 1``. A Parquet writer puts that number before the
    extension (``x1.parquet``), and counts ``size`` in bytes as buffered,
    before compression.
    """

    size: int | None = None
    seconds: float | None = None
    files: int | None = None

    def __post_init__(self) -> None:
        for name in ("size", "files"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"Rotate.{name} must be a positive int or None, got {v!r}")
        s = self.seconds
        if s is not None and (not isinstance(s, (int, float)) or isinstance(s, bool) or not s > 0):
            raise ConfigError(f"Rotate.seconds must be a number > 0 or None, got {s!r}")
        if self.size is None and self.seconds is None:
            raise ConfigError("Rotate needs size=, seconds= or both")


_N_FIELD = re.compile(r"\{n(:[^}]*)?\}")


def _opt(code: int, value: bytes) -> bytes:
    """One pcapng option (pcapng §3.5): code, length, value padded to 32 bits."""
    return struct.pack("=HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(btype: int, body: bytes) -> bytes:
    """A pcapng block (§3.1): type, total length, body, total length again."""
    n = 12 + len(body)
    return struct.pack("=II", btype, n) + body + struct.pack("=I", n)


def _pcapng_header(interfaces: Sequence[str], snaplen: int, linktype: int) -> bytes:
    # Section header block (§4.1): byte-order magic, version 1.0, section
    # length -1 (not given).
    shb = _block(0x0A0D0D0A, struct.pack("=IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + _opt(4, _VERSION.encode()) + _opt(0, b""))
    idbs = []
    for name in interfaces:
        # Interface description block (§4.2): if_name (2), if_tsresol (9) = 9:
        # timestamps in nanoseconds.
        opts = (_opt(2, name.encode()) if name else b"") + _opt(9, b"\x09") + _opt(0, b"")
        idbs.append(_block(1, struct.pack("=HHI", linktype, 0, snaplen) + opts))
    return shb + b"".join(idbs)


def _pcap_header(snaplen: int, linktype: int) -> bytes:
    # The nanosecond variant of the libpcap header (magic 0xa1b23c4d), version 2.4.
    return struct.pack("=IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen, linktype)


_live: weakref.WeakSet[_Rotating] = weakref.WeakSet()  # every file writer still open


@atexit.register
def _close_all() -> None:
    for w in list(_live):
        try:
            w.close()
        except Exception:  # noqa: BLE001 - never raise at interpreter exit
            pass


class _Rotating(Resource):
    """The rotation policy of every file writer, written once: names from the
    template (``Rotate``), the ring of files, and when a file is due to end.

    A subclass opens the file ``_next_path()`` names, then calls
    ``_started(name)`` (it registers the name and removes the oldest of a
    ring), and calls ``_rotation_due()`` before it writes; it keeps
    ``_file_bytes`` and ``_file_packets`` up to date.
    ``_numbered``: number files even without a ``Rotate`` (a writer that
    opens several files for another reason). ``_number_before_ext``: put
    the number before the extension (``x1.parquet``) instead of after
    (tcpdump's ``x.pcap1``).
    """

    _numbered = False
    _number_before_ext = False
    interfaces: tuple[str, ...]  # the subclass's: interface indices are checked against it

    def __init__(self, template: str, rotate: Rotate | None, clock: Callable[[], float]) -> None:
        self._template = template
        self.rotate = rotate
        self._clock = clock
        self.path = ""
        self.paths: list[str] = []
        self._ring: list[str] = []
        self._file_bytes = 0
        self._file_packets = 0
        self._file_start = 0.0
        self._nfile = 0

    def _name(self, k: int) -> str:
        r = self.rotate
        if r is None and not self._numbered:
            return self._template
        name = self._template
        if "%" in name:
            name = time.strftime(name, time.localtime(self._clock()))
        files = r.files if r is not None else None
        num = k % files if files else k
        if _N_FIELD.search(name):
            return _N_FIELD.sub(lambda m: format(num, (m.group(1) or ":")[1:]), name)
        if files:
            suffix = str(num).zfill(len(str(files - 1)))
        else:
            suffix = str(num) if num else ""
        if self._number_before_ext:
            root, ext = os.path.splitext(name)
            return root + suffix + ext
        return name + suffix

    def _next_path(self, subdir: str = "") -> str:
        """The next file's name. ``subdir``: put the file in that subdirectory
        of the name's directory (the template's, its fields filled in)."""
        name = self._name(self._nfile)
        if subdir:
            head, tail = os.path.split(name)
            name = os.path.join(head, subdir, tail)
        self._nfile += 1
        return name

    def _started(self, name: str) -> None:
        """The file ``name`` was opened: it is the current one, and the oldest
        of a ring is removed (only now: a file that could not be opened
        replaces none)."""
        self.path = name
        self.paths.append(name)
        r = self.rotate
        if r is not None and r.files:
            if name in self._ring:
                self._ring.remove(name)
            self._ring.append(name)
            while len(self._ring) > r.files:
                old = self._ring.pop(0)
                try:
                    os.unlink(old)
                except FileNotFoundError:
                    pass
        self._file_bytes = self._file_packets = 0
        self._file_start = self._clock()

    @staticmethod
    def _interface_names(interface: object) -> tuple[str, ...]:
        """The writer's interface names from a str or a non-empty sequence of str."""
        names = (interface,) if isinstance(interface, str) else interface
        if not isinstance(names, (tuple, list)) or not names or not all(isinstance(i, str) for i in names):
            raise ConfigError(f"interface must be a str or a non-empty sequence of str, got {interface!r}")
        return tuple(names)

    def _iface(self, iface: object) -> int:
        """An interface index of this writer, or ``ConfigError`` naming it."""
        n = len(self.interfaces)
        if not isinstance(iface, int) or isinstance(iface, bool) or not 0 <= iface < n:
            raise ConfigError(f"interface must be an index of the writer's {n} interface(s), got {iface!r}")
        return iface

    def _rotation_due(self) -> bool:
        """True when the current file holds packets and reached the size or age
        ``rotate`` sets."""
        r = self.rotate
        if r is None or not self._file_packets:
            return False
        return (r.size is not None and self._file_bytes >= r.size) or \
            (r.seconds is not None and self._clock() - self._file_start >= r.seconds)

    # The Sink surface every file writer shares (a file is never full); the
    # subclass's ``publish`` lays out the frames ``_accepted`` gives it and
    # adds them to ``_published``.
    snaplen: int
    _published = 0

    @property
    def capacity(self) -> int:
        """Frames one ``publish`` takes at most (a file is never full)."""
        return 1 << 16

    @property
    def drain_timeout(self) -> float:
        """0: nothing is ever pending (``publish`` writes or buffers at once)."""
        return 0.0

    def check_frame(self, frame: Frame) -> int:
        """A bytes-like frame of 1..snaplen bytes; returns its length."""
        n = frame_length(frame)
        if n > self.snaplen:
            raise ValueError(f"frame of {n} bytes is longer than the file's snaplen {self.snaplen}")
        return n

    def check_frames(self, frames: Sequence[Frame]) -> None:
        """``check_frame`` for each; the error names the frame's index."""
        check_each(cast("Sink", self), frames)  # every subclass is a Sink

    def _accepted(self, frames: Sequence[Frame]) -> list[bytes]:
        """What ``publish`` takes of ``frames``: the leading run (at most
        ``capacity``) that passes ``check_frame``, as bytes; the first
        frame's error is raised, a later bad frame ends the run."""
        self._check_usable(f"writer {self.path!r}")
        if not frames:
            return []
        self.check_frame(frames[0])
        ok: list[bytes] = []
        for f in frames[:self.capacity]:
            try:
                self.check_frame(f)
            except (TypeError, ValueError):
                break
            ok.append(bytes(f))
        return ok

    def room(self) -> int:
        """Always ``capacity``: a file is never full."""
        self._check_usable(f"writer {self.path!r}")
        return self.capacity

    def wait_room(self, timeout: float | None = None) -> None:
        """Returns at once (there is always room); ``ClosedError`` if closed."""
        self._check_usable(f"writer {self.path!r}")

    def stats(self) -> TxStats:
        """Frames taken through ``publish`` (all of them at once)."""
        return TxStats(self._published, self._published, 0, 0)


class Writer(_Rotating):
    """A pcap or pcapng file being written (use ``open_writer``).

    ``write(batch_or_packets)`` takes an ``OwnedBatch`` (one C call lays
    out the whole batch), a ``PacketBatch`` (copied out first) or an
    iterable of packets (``OwnedPacket`` or ``Packet``); returns the packets
    written. ``write_stats(...)`` records interface statistics that
    ``close()`` writes as an interface statistics block (pcapng only; a pcap
    file has no place for them and they are not written). ``path`` is the
    file being written, ``paths`` every file opened, in order; ``packets``
    and ``bytes_written`` count over all files (``bytes_written`` includes
    headers and what is still buffered).

    Also a ``Sink`` of the contract: ``publish(frames)`` writes raw frames
    with the current time as outgoing packets, so an ``InjectService`` can
    "send" into a file; it never runs out of room.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str, snaplen: int, linktype: int,
                 interface: str | Sequence[str], rotate: Rotate | None,
                 clock: Callable[[], float] = time.time) -> None:
        self._fd = -1
        super().__init__(os.fspath(path), rotate, clock)
        self.format = fmt
        self.snaplen = snaplen
        self.linktype = linktype
        self.interfaces = self._interface_names(interface)
        self._fmt = lib.NC_FMT_PCAP if fmt == "pcap" else lib.NC_FMT_PCAPNG
        if fmt == "pcap" and len(self.interfaces) > 1:
            raise ConfigError("a pcap file has one interface; use pcapng for several")
        self._buf = bytearray(max(_BUF, snaplen + 256))
        self._out = ffi.from_buffer(self._buf)
        self._used = 0
        self._st = ffi.new("struct nc_wr *")
        self._stats: dict[int, dict[str, int]] = {}
        self.packets = 0
        self.bytes_written = 0
        self._start_ns = time.time_ns()
        self._last_flush = time.monotonic()
        self._open_next()
        self._opened()
        _live.add(self)

    # -- files ------------------------------------------------------------------

    def _open_next(self) -> None:
        name = self._next_path()
        self._fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        self._started(name)
        hdr = (_pcap_header(self.snaplen, self.linktype) if self._fmt == lib.NC_FMT_PCAP
               else _pcapng_header(self.interfaces, self.snaplen, self.linktype))
        self._append(hdr)

    def _append(self, data: bytes) -> None:
        """Put one whole block (or header) into the buffer."""
        if self._used + len(data) > len(self._buf):
            self._flush_buf()
        if len(data) > len(self._buf):
            self._write_all(data)
        else:
            self._buf[self._used:self._used + len(data)] = data
            self._used += len(data)
        self._file_bytes += len(data)
        self.bytes_written += len(data)

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                k = os.write(self._fd, view)
            except InterruptedError:
                continue
            view = view[k:]

    def _flush_buf(self) -> None:
        if self._used:
            with memoryview(self._buf) as mv:
                self._write_all(mv[:self._used])
            self._used = 0
        self._last_flush = time.monotonic()

    def _finish_file(self) -> None:
        """The end of one file: its statistics block (pcapng), the buffer, close."""
        if self._fmt == lib.NC_FMT_PCAPNG:
            for iface, st in sorted(self._stats.items()):
                self._append(self._isb(iface, st))
        try:
            self._flush_buf()
        finally:  # a failed write (disk full) must not leak the fd
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _isb(self, iface: int, st: dict[str, int]) -> bytes:
        # Interface statistics block (pcapng §4.6); timestamps in the
        # interface's resolution (ns). isb_starttime 2, isb_endtime 3,
        # isb_ifrecv 4, isb_ifdrop 5, isb_osdrop 7, isb_usrdeliv 8.
        now = time.time_ns()
        opts = _opt(2, struct.pack("=II", self._start_ns >> 32, self._start_ns & 0xFFFFFFFF))
        opts += _opt(3, struct.pack("=II", now >> 32, now & 0xFFFFFFFF))
        for code, key in ((4, "ifrecv"), (5, "ifdrop"), (7, "osdrop"), (8, "usrdeliv")):
            if key in st:
                opts += _opt(code, struct.pack("=Q", st[key]))
        return _block(5, struct.pack("=III", iface, now >> 32, now & 0xFFFFFFFF) + opts + _opt(0, b""))

    def _maybe_rotate(self) -> None:
        if self._rotation_due():
            self._finish_file()
            self._open_next()

    # -- writing ------------------------------------------------------------------

    def write(self, packets: Writable, *, interface: int | None = None) -> int:
        """Write a batch or packets; returns how many were written.

        ``interface``: the pcapng interface id (an index into the
        writer's interfaces); by default an ``OwnedBatch``'s ``source``
        (its source's index in a ``CaptureService``) when the writer has
        several interfaces, else 0.
        """
        self._check_usable(f"writer {self.path!r}")
        if interface is not None:  # checked even when there is nothing to write
            self._iface(interface)
        if isinstance(packets, PacketBatch):
            packets = packets.to_owned()
        if type(packets) is OwnedBatch:  # not a _RestBatch: it keeps no columns
            n = len(packets)
            if not n:
                return 0
            c = packets._columns()
            if interface is None and len(self.interfaces) > 1 and packets.source < len(self.interfaces):
                interface = packets.source
            # A ring block's copy has its bytes in one blob already: no
            # bytes per packet made (and kept on the batch) only to be joined.
            blob = packets._blob
            data = blob.data() if blob is not None else b"".join(packets.datas())
            self._write_cols(data, c.ts, c.caplen, c.wire_len, c.pkttype, n, interface or 0)
            return n
        datas: list[bytes] = []
        ts, caps, wires, kinds = array("Q"), array("I"), array("I"), array("B")
        i = -1
        try:
            for i, p in enumerate(packets):
                d = bytes(p.data)
                ts.append(p.timestamp_ns)
                wires.append(p.wire_len)
                kinds.append(int(p.direction) & 0xFF)
                caps.append(len(d))
                datas.append(d)
        except (AttributeError, TypeError, OverflowError) as e:
            # Not a packet, or a field out of the file's range (a negative
            # time, a length over 32 bits): say which, not cffi's words.
            what = "packets must be an OwnedBatch, a PacketBatch or packets" if i < 0 else f"packet {i}"
            raise ConfigError(f"write: {what}: {type(e).__name__}: {e}") from None
        if datas:
            self._write_cols(b"".join(datas), ts, caps, wires, kinds, len(datas), interface or 0)
        return len(datas)

    def _write_cols(self, data: bytes, ts: Any, caps: Any, wires: Any, kinds: Any, n: int,
                    iface: int) -> None:
        iface = self._iface(iface)
        st = self._st
        st.done = 0
        st.data_off = 0
        pd, pts = ffi.from_buffer("uint8_t[]", data), ffi.from_buffer("uint64_t[]", ts)
        pc, pw = ffi.from_buffer("uint32_t[]", caps), ffi.from_buffer("uint32_t[]", wires)
        pk = ffi.from_buffer("uint8_t[]", kinds) if kinds is not None else ffi.NULL
        size = self.rotate.size if self.rotate is not None else None
        while st.done < n:
            self._maybe_rotate()
            st.pos = self._used
            # C stops once the file reaches `size` (after at least one record):
            # the next packet then opens a new file, as tcpdump -C does.
            st.stop_at = 1 << 63 if size is None else self._used + max(0, size - self._file_bytes)
            before = self._used
            k = lib.nc_file_write(self._fmt, iface, self.snaplen, pd, pts, pc, pw, pk, n,
                                  self._out, len(self._buf), st)
            grown = int(st.pos) - before
            self._used = int(st.pos)
            self._file_bytes += grown
            self.bytes_written += grown
            self._file_packets += k
            self.packets += k
            if st.done < n and (size is None or self._file_bytes < size):
                self._flush_buf()  # the buffer is full (else: rotation, at the loop's top)
        if time.monotonic() - self._last_flush >= _FLUSH_EVERY:
            self._flush_buf()

    def write_stats(self, *, ifrecv: int | None = None, ifdrop: int | None = None,
                    osdrop: int | None = None, usrdeliv: int | None = None, interface: int = 0) -> None:
        """Record interface statistics for ``close()`` to write (pcapng
        §4.6: ``isb_ifrecv`` packets the interface received — the kernel's
        packet count; ``isb_ifdrop`` dropped by the interface/kernel;
        ``isb_osdrop`` dropped by the capture system — the queue's drops;
        ``isb_usrdeliv`` delivered to the user). A later call replaces the
        counters given. A pcap file has no statistics: nothing is written."""
        self._check_usable(f"writer {self.path!r}")
        st = self._stats.setdefault(self._iface(interface), {})
        for key, v in (("ifrecv", ifrecv), ("ifdrop", ifdrop), ("osdrop", osdrop), ("usrdeliv", usrdeliv)):
            if v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
                raise ConfigError(f"{key} must be an int in 0..2**64-1, got {v!r}")
            st[key] = v

    def close(self, timeout: float | None = None) -> None:
        """Flush, write the statistics block (pcapng), close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        if self._fd >= 0:
            self._finish_file()

    # -- the Sink contract -----------------------------------------------------------

    @property
    def label(self) -> str:
        """The current file's name (thread names, messages)."""
        return os.path.basename(self.path)

    def fileno(self) -> int:
        """The file being written."""
        self._check_usable(f"writer {self.path!r}")
        return self._fd

    def publish(self, frames: Sequence[Frame]) -> int:
        """Write raw frames now, stamped with the current time, as outgoing packets."""
        ok = self._accepted(frames)
        n = len(ok)
        if not n:
            return 0
        now = time.time_ns()
        lens = array("I", map(len, ok))
        self._write_cols(b"".join(ok), array("Q", [now]) * n, lens, lens, bytes([4]) * n, n, 0)
        self._published += n
        return n

    def flush(self) -> int:
        """Write out what is buffered (whole records only); returns 0."""
        self._check_usable(f"writer {self.path!r}")
        self._flush_buf()
        return 0

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Flush; always True (nothing stays pending)."""
        self.flush()
        return True

    def __repr__(self) -> str:
        return f"<Writer {self.format} {self.path!r}{' closed' if self._closed else ''}>"


def _check_options(snaplen: object, linktype: object, rotate: object) -> None:
    """The options every writer takes (pcap, pcapng, Parquet), checked alike."""
    if not isinstance(snaplen, int) or isinstance(snaplen, bool) or not 0 < snaplen <= _MAX_SNAPLEN:
        raise ConfigError(f"snaplen must be an int in 1..{_MAX_SNAPLEN}, got {snaplen!r}")
    if not isinstance(linktype, int) or isinstance(linktype, bool) or not 0 <= linktype <= 0xFFFF:
        raise ConfigError(f"linktype must be an int in 0..65535, got {linktype!r}")
    if rotate is not None and not isinstance(rotate, Rotate):
        raise ConfigError(f"rotate must be a Rotate or None, got {rotate!r}")


def file_format(path: str | os.PathLike[str], format: str | None = None) -> str:
    """The format a file at ``path`` is written in: ``format`` if given (checked),
    else by the extension (``.pcap``, ``.pcapng``, ``.parquet``); ``ConfigError`` naming the
    path otherwise. ``open_writer`` decides this way; a program can ask first,
    before it opens anything else."""
    p = os.fspath(path)
    if format is None:
        found = _EXT.get(os.path.splitext(p)[1].lower())
        if found is None:
            raise ConfigError(f"cannot tell the format of {p!r} by its extension; "
                              f"pass format= one of {FORMATS} (or name it .pcap / .pcapng / .parquet)")
        return found
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {FORMATS}, got {format!r}")
    return format


def open_writer(path: str | os.PathLike[str], *, format: str | None = None, snaplen: int = 262144,
                linktype: int = 1, interface: str | Sequence[str] = "", rotate: Rotate | None = None,
                _clock: Callable[[], float] = time.time) -> Writer | ParquetWriter:
    """Open a pcap, pcapng or Parquet file for writing (created or truncated).

    ``format``: ``"pcap"`` (nanosecond magic), ``"pcapng"`` or
    ``"parquet"`` (a ``ParquetWriter``, see ``open_parquet`` for its
    dataset options; needs the ``arrow`` extra); ``None`` picks it by the
    extension (``.pcap``, ``.pcapng``, ``.parquet``). ``snaplen``: longer
    packets are cut (their original length kept). ``linktype``: LINKTYPE_*
    (1: Ethernet). ``interface``: the interface name (pcapng ``if_name``),
    or a sequence of names, one interface description each. ``rotate``: a
    ``Rotate`` (then ``path`` is a name template, see ``Rotate``).
    """
    p = os.fspath(path)
    format = file_format(p, format)
    if format == "parquet":
        from .parquet import open_parquet

        return open_parquet(p, snaplen=snaplen, linktype=linktype, interface=interface, rotate=rotate,
                            _clock=_clock)
    _check_options(snaplen, linktype, rotate)
    return Writer(p, format, snaplen, linktype, interface, rotate, _clock)
