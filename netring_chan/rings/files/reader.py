"""pcap and pcapng readers: ``Reader`` (a ``Source`` of the contract) and ``open_reader``.

The file is read in chunks into one buffer; one C call (``nc_file_read``)
turns the packet records in it into an ``OwnedBatch`` laid out as a ring
block's copy-out (so a file replays through ``CaptureService`` and every
face exactly as a capture does). Non-packet pcapng blocks (section and
interface descriptions, statistics) are parsed here; unknown block types are
skipped by their length, as pcapng §3.1 asks, without reading them.

Bounds: every length is checked against the bytes actually read; a record or
block longer than ``MAX_RECORD`` (64 MiB) is a ``FileFormatError``, and one
that reaches past the end of the file is never allocated for: it is the
file's truncated tail (see ``Reader.truncated``).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import struct
import sys
import threading
import time
from typing import Any

from ..._lowlevel import ffi, lib
from ..._resource import Resource
from ..._sys import close_fd, deadline_after, eventfd, eventfd_signal
from ...contract import RxStats
from ...errors import ConfigError, FileFormatError
from ...packet import OwnedBatch

__all__ = ["Reader", "FileInterface", "open_reader", "MAX_RECORD"]

MAX_RECORD = 64 << 20  # the largest record or block accepted (bytes)
_CHUNK = 1 << 20  # read size; also the most packet bytes in one batch
_MAX_PKTS = 1024  # packets in one batch at most
def _cols_per_packet() -> int:
    offs = ffi.new("uint64_t[]", lib.NC_NCOLS + 1)
    lib.nc_cols_layout(1, offs)
    return int(offs[lib.NC_NCOLS])


_COL_BYTES = _cols_per_packet()  # bytes of columns per packet, as the copy-out lays them out
_NO_LIMIT = (1 << 64) - 1

_PCAP_MAGIC = {0xA1B2C3D4: (False, False), 0xD4C3B2A1: (True, False),
               0xA1B23C4D: (False, True), 0x4D3CB2A1: (True, True)}  # (swapped, nanosecond)
_SHB, _IDB, _ISB = 0x0A0D0D0A, 1, 5
_BOM = 0x1A2B3C4D
_ISB_OPTS = {2: "starttime", 3: "endtime", 4: "ifrecv", 5: "ifdrop", 6: "filteraccept",
             7: "osdrop", 8: "usrdeliv"}
_ERRORS = {
    lib.NC_RD_E_LEN: "length {} out of range (at most {} bytes, pcapng blocks a multiple of 4, at least 12)",
    lib.NC_RD_E_IFACE: "packet of interface {} that no interface description block declared",
    lib.NC_RD_E_TRAIL: "trailing block length {} differs from the leading one",
    lib.NC_RD_E_CAPLEN: "captured length {} larger than its block",
}
_other = ">" if sys.byteorder == "little" else "<"


@dataclasses.dataclass(frozen=True)
class FileInterface:
    """One interface of a file (pcap: the file; pcapng: an interface description block).

    ``linktype``: LINKTYPE_* (1: Ethernet); also in each packet's
    ``hatype`` field. ``tsresol``: the ``if_tsresol`` byte (6: µs, 9: ns).
    """

    id: int
    linktype: int
    snaplen: int
    name: str = ""
    tsresol: int = 6
    tsoffset: int = 0  # if_tsoffset, seconds added to every timestamp


class Reader(Resource):
    """A pcap or pcapng file as a ``Source`` (use ``open_reader``).

    ``next_batch()`` / ``next_batch_blocking(timeout)`` give ``OwnedBatch``es
    of up to 1024 packets or 1 MiB, with ``timestamps_ns`` (to the
    nanosecond), original lengths (``wire_lens``), ``direction`` (pcapng
    ``epb_flags``: inbound HOST — or BROADCAST/MULTICAST/OTHER_HOST by the
    reception type — outbound OUTGOING; HOST when the file does not say),
    ``ifindex`` = the pcapng interface id (0 for pcap), ``hatype`` = the
    interface's link type, and for Ethernet ``protocol`` (the EtherType) and
    ``source_address``. At the end of the file both return ``None`` at
    once and ``at_end`` is True; a ``CaptureService`` whose sources are all
    at their end ends its stream (consumers get what is queued, then the
    end). ``pace="recorded"`` hands packets out no earlier than the file's
    timestamps say (relative to the first packet); ``loop=N`` plays the file
    N times (0: for ever; timestamps are kept as recorded).

    A record cut short at the end of the file (a writer that was killed) is
    no error: everything before it is delivered, then ``truncated`` is True
    and ``problem`` says what was left (``strict=True`` raises
    ``FileFormatError`` instead). ``interfaces`` (``FileInterface`` of the
    current section) and ``interface_stats`` (one dict per pcapng interface
    statistics block read so far: ``interface``, ``timestamp_ns`` and the
    ``isb_*`` counters present, named ``ifrecv``, ``ifdrop``, ``osdrop``,
    ``usrdeliv``, ``filteraccept``, ``starttime``, ``endtime``) describe
    the file.
    """

    def __init__(self, path: str, pace: str, loop: int, strict: bool) -> None:
        self._fd = -1
        self._wake = -1
        self.path = path
        self.pace = pace
        self._loops_left = loop
        self.strict = strict
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._buf = bytearray(_CHUNK)
        self._cbuf = ffi.from_buffer(self._buf)
        self._out = bytearray(_CHUNK + lib.NC_STREAM_OVERHEAD(_MAX_PKTS) + 16)
        self._cout = ffi.from_buffer(self._out)
        self._cols = bytearray(_COL_BYTES * _MAX_PKTS)
        self._ccols = ffi.from_buffer(self._cols)
        self._st = ffi.new("struct nc_rd *")
        self._ifs = ffi.new("struct nc_iface[]", 1)
        self.interfaces: list[FileInterface] = []
        self.interface_stats: list[dict[str, int]] = []
        self.truncated = False
        self.problem = ""
        self._packets = 0
        self._seq = 0
        self._done = False
        self._quiet = False
        self._due = 0.0
        self._base_ts: int | None = None
        self._base_mono = 0.0
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._start()
            self._wake = eventfd()
            eventfd_signal(self._wake)  # always readable: readiness is a hint
        except BaseException as e:
            fd, self._fd = self._fd, -1
            close_fd(fd)
            if isinstance(e, OSError) and e.filename is None and e.errno is not None:
                # readv() on a directory, an I/O error: name the file, as open() does
                raise OSError(e.errno, e.strerror, path) from None
            raise
        self._opened()

    # -- reading the file ---------------------------------------------------------

    def _start(self) -> None:
        """(Re)start at the beginning: the file header."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._base = 0  # file offset of _buf[0]
        self._lo = self._hi = 0
        self._eof = False
        self._base_ts = None
        self._pass_start = self._packets
        if self._fill(4) < 4:
            what = "empty file" if self._hi == 0 else "file shorter than any header"
            raise FileFormatError(self.path, 0, f"{what}: not a pcap or pcapng file")
        magic = struct.unpack_from("=I", self._buf, 0)[0]
        if magic in _PCAP_MAGIC:
            self.format = "pcap"
            self._swapped, ns = _PCAP_MAGIC[magic]
            if self._fill(24) < 24:
                raise FileFormatError(self.path, 0, "pcap file header cut short (24 bytes needed)")
            e = _other if self._swapped else "="
            major, minor, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "HHiIII", self._buf, 4)
            if major != 2:
                raise FileFormatError(self.path, 4, f"pcap version {major}.{minor} (only 2.x is known)")
            self.interfaces = [FileInterface(0, network & 0xFFFF, snaplen, "", 9 if ns else 6)]
            self._set_ifaces()
            self._lo = 24
            self._fmt = lib.NC_FMT_PCAP
        elif magic == _SHB:
            self.format = "pcapng"
            self._fmt = lib.NC_FMT_PCAPNG
            self._swapped = False
            self.interfaces = []
            self._set_ifaces()
            self._other_block(first=True)  # the section header block
        else:
            raise FileFormatError(self.path, 0, f"not a pcap or pcapng file (magic 0x{magic:08x})")

    def _set_ifaces(self) -> None:
        ifs = self._ifs = ffi.new("struct nc_iface[]", max(1, len(self.interfaces)))
        for k, f in enumerate(self.interfaces):
            num, den = _resolution(f.tsresol)
            ifs[k].num, ifs[k].den = num, den
            ifs[k].snaplen, ifs[k].linktype = f.snaplen, f.linktype
            ifs[k].off_ns = f.tsoffset * 1_000_000_000

    def _fill(self, need: int) -> int:
        """Try to have ``need`` bytes from ``_lo`` in the buffer; returns how many there are.

        ``need`` is never more than ``MAX_RECORD`` + a header (checked by the
        caller) and the buffer grows only up to what the file really holds.
        """
        have = self._hi - self._lo
        if have >= need or self._eof:
            return have
        size = os.fstat(self._fd).st_size
        if self._base + self._lo + need > size:  # never allocate for what is not there
            need = max(have, size - self._base - self._lo)
        if self._lo:
            self._buf[:have] = self._buf[self._lo:self._hi]
            self._base += self._lo
            self._lo, self._hi = 0, have
        if need > len(self._buf):
            self._buf = bytearray(self._buf[:self._hi]) + bytearray(need - self._hi)
            self._cbuf = ffi.from_buffer(self._buf)
        with memoryview(self._buf) as mv:
            while self._hi - self._lo < need or (self._hi < len(self._buf) and not self._eof and
                                                  self._hi - self._lo < _CHUNK // 2):
                k = os.readv(self._fd, [mv[self._hi:]])
                if k == 0:
                    self._eof = True
                    break
                self._hi += k
        return self._hi - self._lo

    def _fail(self, at: int, what: str) -> FileFormatError:
        return FileFormatError(self.path, self._base + at, what)

    def _other_block(self, first: bool = False) -> None:
        """A pcapng block that is not a packet block, at ``_lo``: parse it or skip it.
        ``first``: the file's first block, which must be whole."""
        at = self._lo
        if self._fill(12) < 12:
            if first:
                raise self._fail(at, "pcapng section header cut short")
            self._tail(f"{self._hi - self._lo} bytes of a block header")
            return
        btype = struct.unpack_from("=I", self._buf, at)[0]
        if btype == _SHB:
            # Section header block (pcapng §4.1): its byte-order magic sets
            # the byte order of the whole section, this length included.
            bom = struct.unpack_from("=I", self._buf, at + 8)[0]
            if bom == _BOM:
                self._swapped = False
            elif bom == 0x4D3C2B1A:
                self._swapped = True
            else:
                raise self._fail(at, f"section header with byte-order magic 0x{bom:08x}")
            self.interfaces = []
            self._set_ifaces()
        e = _other if self._swapped else "="
        btype, blen = struct.unpack_from(e + "II", self._buf, at)
        if blen < 12 or blen % 4 or blen > MAX_RECORD or (btype == _SHB and blen < 28):
            raise self._fail(at, f"block type 0x{btype:08x} with length {blen}")
        if btype not in (_SHB, _IDB, _ISB):
            # Unknown (or unused) block types are skipped by their length (pcapng §3.1).
            self._skip(blen)
            return
        if self._fill(blen) < blen:
            if first:
                raise self._fail(at, f"pcapng section header of {blen} bytes cut short")
            self._tail(f"a block of {blen} bytes cut short")
            return
        body = bytes(self._buf[at + 8:at + blen - 4])
        if struct.unpack_from(e + "I", self._buf, at + blen - 4)[0] != blen:
            raise self._fail(at, "trailing block length differs from the leading one")
        if btype == _SHB:
            major = struct.unpack_from(e + "H", body, 4)[0]
            if major != 1:
                raise self._fail(at, f"pcapng version {major} (only 1.x is known)")
        elif btype == _IDB:
            self._idb(body, e, at)
        else:
            self._isb(body, e, at)
        self._lo = at + blen

    def _options(self, body: bytes, start: int, e: str, at: int) -> list[tuple[int, bytes]]:
        """Options (pcapng §3.5) from ``body[start:]``, bounds-checked."""
        out, k = [], start
        while k + 4 <= len(body):
            code, n = struct.unpack_from(e + "HH", body, k)
            if code == 0:
                break
            if k + 4 + n > len(body):
                raise self._fail(at, f"option {code} of {n} bytes overruns its block")
            out.append((code, body[k + 4:k + 4 + n]))
            k += 4 + n + (-n % 4)
        return out

    def _idb(self, body: bytes, e: str, at: int) -> None:
        # Interface description block (pcapng §4.2): if_name 2, if_tsresol 9, if_tsoffset 14.
        if len(body) < 8:
            raise self._fail(at, "interface description block too short")
        linktype, _res, snaplen = struct.unpack_from(e + "HHI", body, 0)
        name, tsresol, offset = "", 6, 0
        for code, val in self._options(body, 8, e, at):
            if code == 2:
                name = val.decode("utf-8", "replace").rstrip("\0")
            elif code == 9 and len(val) >= 1:
                tsresol = val[0]
                try:
                    _resolution(tsresol)
                except ValueError as err:
                    raise self._fail(at, str(err)) from None
            elif code == 14 and len(val) == 8:
                offset = struct.unpack(e + "q", val)[0]
        k = len(self.interfaces)
        self.interfaces.append(FileInterface(k, linktype, snaplen, name, tsresol, offset))
        self._set_ifaces()

    def _isb(self, body: bytes, e: str, at: int) -> None:
        # Interface statistics block (pcapng §4.6).
        if len(body) < 12:
            raise self._fail(at, "interface statistics block too short")
        iface, hi, lo = struct.unpack_from(e + "III", body, 0)
        scale = (lambda t: t) if iface >= len(self.interfaces) else self._scale(iface)
        st: dict[str, int] = {"interface": iface, "timestamp_ns": scale((hi << 32) | lo)}
        for code, val in self._options(body, 12, e, at):
            key = _ISB_OPTS.get(code)
            if key is None or len(val) != 8:
                continue
            if code in (2, 3):
                h, low = struct.unpack(e + "II", val)
                st[key] = scale((h << 32) | low)
            else:
                st[key] = struct.unpack(e + "Q", val)[0]
        self.interface_stats.append(st)

    def _scale(self, iface: int) -> Any:
        f = self.interfaces[iface]
        num, den = _resolution(f.tsresol)
        off = f.tsoffset * 1_000_000_000
        return lambda t: t * num // den + off

    def _skip(self, n: int) -> None:
        """Skip ``n`` bytes from ``_lo`` without reading them into memory."""
        have = self._hi - self._lo
        if n <= have:
            self._lo += n
            return
        target = self._base + self._lo + n
        if target > os.fstat(self._fd).st_size:
            self._tail(f"a block of {n} bytes that reaches past the end of the file")
            return
        os.lseek(self._fd, target, os.SEEK_SET)
        self._base, self._lo, self._hi = target, 0, 0

    def _tail(self, what: str) -> None:
        """A record cut short at the end of the file: the documented stop (or an error if strict)."""
        at = self._base + self._lo
        if self.strict:
            raise FileFormatError(self.path, at, f"file ends inside a record: {what}")
        self.truncated = True
        self.problem = f"{self.path}: at offset {at}: file ends inside a record ({what}); ignored"
        self._end_of_file()

    def _end_of_file(self) -> None:
        # Another pass, unless this one found no packet (a loop over nothing would never end).
        if self._loops_left != 1 and not self._quiet and self._packets > self._pass_start:
            if self._loops_left > 1:
                self._loops_left -= 1
            self._start()
            return
        self._done = True
        self._lo = self._hi

    def _next_locked(self) -> OwnedBatch | None:
        st = self._st
        while not self._done:
            have = self._hi - self._lo
            if self.pace == "recorded" and self._base_ts is not None:
                st.ts_limit = self._base_ts + int((time.monotonic() - self._base_mono) * 1e9)
            else:
                st.ts_limit = 0 if self.pace == "recorded" else _NO_LIMIT
            st.pos = 0
            rc = lib.nc_file_read(self._fmt, int(self._swapped), self._ifs, len(self.interfaces),
                                  self._cbuf + self._lo, have, _MAX_PKTS, MAX_RECORD,
                                  self._cout, len(self._out), self._ccols, st)
            at = self._lo
            self._lo += int(st.pos)
            n = int(st.n)
            if n:
                datas = pickle.loads(self._out)
                self._packets += n
                self._seq += 1
                return OwnedBatch(datas, self._cols[:_COL_BYTES * n], n, self._seq)
            if rc == lib.NC_RD_MORE:
                need = int(st.need)
                if self._fill(need) < need:
                    if self._hi == self._lo:
                        self._end_of_file()
                    else:
                        self._tail(f"{self._hi - self._lo} bytes of a {need}-byte record")
            elif rc == lib.NC_RD_OTHER:
                self._other_block()
            elif rc == lib.NC_RD_LATER:
                if self._base_ts is None:
                    self._base_ts, self._base_mono = int(st.next_ts), time.monotonic()
                    continue
                self._due = self._base_mono + (int(st.next_ts) - self._base_ts) / 1e9
                return None
            elif rc == lib.NC_RD_BIG_OUT:
                self._out = bytearray(int(st.need) + 16)
                self._cout = ffi.from_buffer(self._out)
            elif rc < 0:
                what = _ERRORS.get(rc, "malformed record").format(int(st.bad), MAX_RECORD)
                raise FileFormatError(self.path, self._base + at, what)
        return None

    # -- the Source contract ----------------------------------------------------

    @property
    def label(self) -> str:
        """The file's name (thread names, messages)."""
        return os.path.basename(self.path)

    @property
    def at_end(self) -> bool:
        """True once the file (every loop of it) is read, or after ``quiesce()``:
        no batch will come any more."""
        return self._done

    def fileno(self) -> int:
        """An eventfd that is always readable: readiness is only a hint (the contract allows it)."""
        self._check_usable(f"reader {self.path!r}")
        return self._wake

    def next_batch(self) -> OwnedBatch | None:
        """The next batch, or ``None`` at the end (or, at recorded pace, when none is due yet)."""
        with self._lock:
            self._check_usable(f"reader {self.path!r}")
            return self._next_locked()

    def next_batch_blocking(self, timeout: float | None = None) -> OwnedBatch | None:
        """The next batch, waiting up to ``timeout`` s at recorded pace; ``None``
        at once at the end of the file, and early when closed meanwhile."""
        deadline = deadline_after(timeout)
        while True:
            with self._lock:
                if self._closed:
                    return None
                b = self._next_locked()
            if b is not None or self._done:
                return b
            now = time.monotonic()
            wait = self._due - now
            if deadline is not None:
                if now >= deadline:
                    return None
                wait = min(wait, deadline - now)
            if wait > 0 and self._closing.wait(wait):
                return None

    def quiesce(self) -> float:
        """Hand out nothing more (``at_end`` becomes True); nothing is in flight."""
        self._quiet = True
        self._done = True
        return 0.0

    def stats(self) -> RxStats:
        """Packets read so far; a file drops nothing."""
        return RxStats(self._packets, 0)

    def close(self) -> None:
        """Close the file. Idempotent; wakes a ``next_batch_blocking`` waiting in another thread."""
        self._closing.set()
        with self._lock:
            if self._closed and self._fd < 0:
                return
            self._closed = True
            fd, self._fd = self._fd, -1
            wake, self._wake = self._wake, -1
        close_fd(fd)
        close_fd(wake)

    def __repr__(self) -> str:
        fmt = getattr(self, "format", "?")
        return f"<Reader {fmt} {self.path!r}{' closed' if self._closed else ''}>"


def _resolution(tsresol: int) -> tuple[int, int]:
    """``if_tsresol`` (pcapng §4.2) as (num, den): one unit is num/den ns."""
    v = tsresol & 0x7F
    if tsresol & 0x80:
        if v > 63:
            raise ValueError(f"if_tsresol 2^-{v} is not supported")
        return 1_000_000_000, 1 << v
    if v > 18:
        raise ValueError(f"if_tsresol 10^-{v} is not supported")
    return (10 ** (9 - v), 1) if v <= 9 else (1, 10 ** (v - 9))


def open_reader(path: str | os.PathLike[str], *, pace: str = "fast", loop: int = 1,
                strict: bool = False) -> Reader:
    """Open a pcap (either byte order, µs or ns) or pcapng file as a ``Source``.

    The format is told by the file's magic number (``FileFormatError``
    otherwise). ``pace``: ``"fast"`` (as fast as it is read) or
    ``"recorded"`` (as the timestamps say). ``loop``: times to play the file
    (0: for ever). ``strict``: a record cut short at the end of the file is
    an error rather than the end.
    """
    if pace not in ("fast", "recorded"):
        raise ConfigError(f"pace must be 'fast' or 'recorded', got {pace!r}")
    if not isinstance(loop, int) or isinstance(loop, bool) or loop < 0:
        raise ConfigError(f"loop must be an int >= 0 (0: for ever), got {loop!r}")
    return Reader(os.fspath(path), pace, loop, bool(strict))
