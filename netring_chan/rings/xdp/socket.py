"""AF_XDP sockets: ``XdpSocket``, a ``Source`` and a ``Sink`` over one UMEM.

Kernel facts this module depends on (Documentation/networking/af_xdp.rst,
net/xdp/xsk.c):

* The UMEM is user memory split into equal frames (``frame_size``, a power
  of two from 2048 to the page size: aligned chunk mode) and registered with
  ``XDP_UMEM_REG``. Four rings are mapped from the socket: *fill* (frames we
  give the kernel to receive into), *RX* (received frames: address and
  length), *TX* (frames to send) and *completion* (sent frames given back).
  A bind without both a fill and a completion ring is refused, so a TX-only
  socket still has a fill ring; it just never puts a frame on it.
* The ring protocol (acquire/release on the producer and consumer indexes)
  is in C (``_build/c/xsk.h``), so is the RX walk that checks every
  descriptor against the UMEM: a descriptor outside its RX frames, or crossing its
  frame, is counted (``rx_bad_descs``) and skipped, never read.
* The kernel timestamps nothing: a batch carries one ``CLOCK_REALTIME``
  stamp taken when it is taken off the RX ring.
* Nothing reaches the RX ring without an XDP program redirecting the
  queue's frames into an XSKMAP entry holding this socket. ``XdpSocket``
  makes its own ``XdpProgram`` (and closes it) unless given one, or the
  fd of a map the caller's own program uses.
* ``XDP_ZEROCOPY`` is refused with EOPNOTSUPP by drivers without it (veth
  among them); ``zerocopy=None`` then binds in copy mode, and
  ``bind_mode`` says which is in effect.
* With ``XDP_USE_NEED_WAKEUP`` the kernel sets ``XDP_RING_NEED_WAKEUP`` on
  the fill and TX rings when it needs a system call to go on: a
  ``recvfrom`` for the fill ring, a ``sendto`` for the TX ring. In copy mode
  every TX kick is a ``sendto`` that sends at most 32 frames and fails with
  EAGAIN when more are left (so ``flush`` kicks while the kernel takes
  frames), with EBUSY when the device dropped a frame (its descriptor still
  completes; a frame over the MTU does that, hence the length check before
  queueing), and with ENXIO once the interface is gone.
* When the interface is removed the socket's error becomes ENETDOWN, but
  ``poll`` reports nothing: blocking waits poll in slices and read the
  pending error between them (and, once it has been read, the ENXIO that
  ``recvfrom`` gives on the socket unbound for good).
* The rings must be unmapped before the socket is closed, or its queue stays
  busy (EBUSY on a new bind) until the process exits; ``close()`` does it in
  that order at once. A batch still held reads only the UMEM, which is the
  process's own memory: it stays mapped until the last such batch is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import mmap as _mmap
import socket as _socket
import threading
import time
from array import array
from collections import deque
from itertools import islice
from typing import Any, Iterable, Sequence

from ..._config import resolve
from ..._lowlevel import ffi, lib
from ..._resource import Guarded
from ..._sys import (
    check_timeout, close_fd, deadline_after, eventfd, eventfd_signal, ifindex, interface_gone,
    pending_error, poll_wait, raise_errno, setsockopt_int,
)
from ...contract import Frame, RxStats, TxStats, publish_all
from ...errors import ClosedError, ConfigError, RingError, RingFullError
from ...packet import PacketBatch
from .._mapping import Mapping, check_ring_size
from ..afpacket.blocks import Scratch
from ..afpacket.frames import ETH_HLEN, LinkFrames, check_frame_len
from .program import XdpAttach, XdpProgram, _attach_mode, register_socket, rx_queue_count, unregister_socket

__all__ = ["XdpSocket", "XdpConfig", "XdpMode", "XdpStats"]

PAGE_SIZE = _mmap.PAGESIZE
XDP_PACKET_HEADROOM = 256  # the kernel keeps this much before a received frame
# Longest wait in one poll(): the socket reports no event when its interface
# goes away, so the error is looked for this often while waiting.
_POLL_SLICE = 0.1
_BUSY_WAIT = 1.0  # how long a bind waits for a queue another socket just left
_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EBUSY)


class XdpMode(enum.Enum):
    """How an ``XdpSocket`` uses its UMEM: receive, send or both (frames split in two)."""

    RX = "rx"
    TX = "tx"
    BOTH = "both"

    @property
    def rx(self) -> bool:
        """Whether the socket receives."""
        return self is not XdpMode.TX

    @property
    def tx(self) -> bool:
        """Whether the socket sends."""
        return self is not XdpMode.RX


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclasses.dataclass(frozen=True)
class XdpConfig:
    """Options of an ``XdpSocket``; every field is validated, errors name it.

    ``mode``: ``XdpMode`` (RX, TX or BOTH). ``attach``: how its own XDP
    program is attached (``XdpAttach`` or its value: ``"auto"``, ``"skb"``,
    ``"native"``; kept as the ``XdpAttach``). ``zerocopy``: ``None`` tries zero-copy and falls back to
    copy mode when the driver refuses it; ``True`` insists; ``False`` copies.
    ``need_wakeup``: bind with ``XDP_USE_NEED_WAKEUP`` (system calls only
    when the kernel asks). UMEM: ``frame_count`` frames of ``frame_size``
    bytes (a power of two, 2048 to the page size) with ``headroom`` bytes
    kept free before received data; ``None`` sizes it from the rings (fill
    ring's worth for RX, TX ring's worth for TX). With BOTH the first half
    of the frames receives, the rest sends. Ring sizes are powers of two;
    the RX frames must fit the fill ring, the TX frames the completion ring.
    ``batch_size``: most packets in one batch. Busy polling:
    ``busy_poll_us`` (SO_BUSY_POLL), ``prefer_busy_poll``
    (SO_PREFER_BUSY_POLL), ``busy_poll_budget`` (SO_BUSY_POLL_BUDGET, 0:
    the kernel's default). ``drain_timeout``: how long ``close()`` waits for
    queued frames. ``max_ring_bytes``: allow a UMEM above a quarter of the
    machine's memory on purpose.
    """

    mode: XdpMode = XdpMode.BOTH
    attach: XdpAttach = XdpAttach.AUTO
    zerocopy: bool | None = None
    need_wakeup: bool = True
    frame_size: int = 4096
    frame_count: int | None = None
    headroom: int = 0
    fill_size: int = 2048
    rx_size: int = 2048
    tx_size: int = 2048
    completion_size: int = 2048
    batch_size: int = 256
    busy_poll_us: int = 0
    prefer_busy_poll: bool = False
    busy_poll_budget: int = 0
    drain_timeout: float = 1.0
    max_ring_bytes: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        try:
            object.__setattr__(self, "mode", XdpMode(self.mode))
        except ValueError:
            raise ConfigError(f"mode must be an XdpMode (rx, tx, both), got {self.mode!r}") from None
        object.__setattr__(self, "attach", _attach_mode(self.attach))
        for name in ("frame_size", "headroom", "fill_size", "rx_size", "tx_size", "completion_size",
                     "batch_size", "busy_poll_us", "busy_poll_budget"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an int, got {v!r}")
        for name in ("need_wakeup", "prefer_busy_poll"):
            v = getattr(self, name)
            need(isinstance(v, bool), f"{name} must be a bool, got {v!r}")
        need(self.zerocopy is None or isinstance(self.zerocopy, bool),
             f"zerocopy must be None (try), True or False, got {self.zerocopy!r}")
        fs = self.frame_size
        need(_pow2(fs) and 2048 <= fs <= PAGE_SIZE,
             f"frame_size must be a power of two from 2048 to the page size ({PAGE_SIZE}), got {fs}")
        need(0 <= self.headroom < fs - XDP_PACKET_HEADROOM - ETH_HLEN,
             f"headroom must be in 0..{fs - XDP_PACKET_HEADROOM - ETH_HLEN - 1} for frame_size {fs}, "
             f"got {self.headroom}")
        for name in ("fill_size", "rx_size", "tx_size", "completion_size"):
            v = getattr(self, name)
            need(_pow2(v) and v <= 1 << 20, f"{name} must be a power of two from 1 to {1 << 20}, got {v}")
        need(1 <= self.batch_size <= 1 << 16, f"batch_size must be in 1..65536, got {self.batch_size}")
        need(0 <= self.busy_poll_us <= 0x7FFFFFFF, f"busy_poll_us must be in 0..2147483647, got {self.busy_poll_us}")
        need(0 <= self.busy_poll_budget <= 0xFFFF, f"busy_poll_budget must be in 0..65535, got {self.busy_poll_budget}")
        need(isinstance(self.drain_timeout, (int, float)) and not isinstance(self.drain_timeout, bool)
             and self.drain_timeout >= 0, f"drain_timeout must be a number >= 0, got {self.drain_timeout!r}")
        fc = self.frame_count
        if fc is None:
            fc = (self.fill_size if self.mode.rx else 0) + (self.tx_size if self.mode.tx else 0)
            object.__setattr__(self, "frame_count", fc)
        need(isinstance(fc, int) and not isinstance(fc, bool) and fc >= (2 if self.mode is XdpMode.BOTH else 1),
             f"frame_count must be an int >= {2 if self.mode is XdpMode.BOTH else 1}, got {fc!r}")
        need(fc * fs < 1 << 32, f"UMEM of frame_count x frame_size = {fc} x {fs} bytes must stay below 4 GiB")
        rx, tx = self.split
        need(rx <= self.fill_size, f"the {rx} RX frames (of frame_count={fc}, mode {self.mode.value}) must fit "
             f"the fill ring (fill_size={self.fill_size})")
        need(tx <= self.completion_size, f"the {tx} TX frames (of frame_count={fc}, mode {self.mode.value}) "
             f"must fit the completion ring (completion_size={self.completion_size})")
        check_ring_size(fc * fs, f"UMEM frame_count x frame_size = {fc} x {fs}", self.max_ring_bytes)

    @property
    def split(self) -> tuple[int, int]:
        """``(rx_frames, tx_frames)``: how the UMEM's frames are shared out."""
        fc = int(self.frame_count or 0)
        if self.mode is XdpMode.RX:
            return fc, 0
        if self.mode is XdpMode.TX:
            return 0, fc
        return fc // 2, fc - fc // 2


@dataclasses.dataclass(frozen=True)
class XdpStats(RxStats, TxStats):
    """Counters of one ``XdpSocket`` since it opened: an ``RxStats`` and a ``TxStats``.

    Receiving: ``packets`` = frames taken off the RX ring, those waiting on
    it, and ``drops``; ``drops`` = frames the kernel had for the socket but
    could not place (``rx_dropped``: no fill frame or too long for a frame;
    ``rx_ring_full``: the RX ring was full); ``lost`` = RX descriptors that
    failed the bounds check (``rx_bad_descs``). Sending: ``queued`` frames
    put on the TX ring, ``sent`` completed by the kernel (transmitted, or
    dropped by the device: ``tx_busy`` counts the kicks that said so),
    ``rejected`` always 0 (frames are checked before queueing), ``ring_full``
    publishes that found no room. The rest are the kernel's
    ``XDP_STATISTICS`` as they are, cumulative, and ``zerocopy``: whether the
    socket is bound in zero-copy mode.
    """

    rx_dropped: int = 0
    rx_invalid_descs: int = 0
    tx_invalid_descs: int = 0
    rx_ring_full: int = 0
    rx_fill_ring_empty_descs: int = 0
    tx_ring_empty_descs: int = 0
    rx_bad_descs: int = 0
    bad_completions: int = 0
    tx_busy: int = 0
    zerocopy: bool = False


class _Ring:
    """One of the four rings, mapped from the socket."""

    def __init__(self, fd: int, off: Any, size: int, entry: int, pgoff: int, what: str) -> None:
        self.length = int(off.desc) + size * entry
        addr = lib.mmap(ffi.NULL, self.length, lib.PROT_READ | lib.PROT_WRITE,
                        lib.MAP_SHARED | lib.MAP_POPULATE, fd, pgoff)
        if addr == ffi.cast("void *", -1):
            raise_errno(ffi.errno, f"mmap of the {what} ring ({size} entries)")
        self.addr: Any = addr
        base = ffi.cast("uint8_t *", addr)
        r = self.r = ffi.new("struct nc_xring *")
        r.producer = ffi.cast("uint32_t *", base + off.producer)
        r.consumer = ffi.cast("uint32_t *", base + off.consumer)
        r.flags = ffi.cast("uint32_t *", base + off.flags)
        r.desc = base + off.desc
        r.size = size
        # Our own index starts where the kernel's view of it is: both 0 on a new socket.
        r.cached = r.producer[0] if what in ("fill", "TX") else r.consumer[0]

    def unmap(self) -> None:
        addr, self.addr = self.addr, None
        if addr is not None:
            lib.munmap(addr, self.length)


class XdpSocket(LinkFrames, Guarded):
    """An AF_XDP socket on one queue of an interface: a ``Source`` and a ``Sink``.

    ``XdpSocket("eth0", queue_id=0)``; options are the fields of
    ``XdpConfig`` (or pass ``config=``). Received frames come as zero-copy
    ``PacketBatch`` views into the UMEM (``next_batch`` /
    ``next_batch_blocking``), exactly like a ``Capture``'s; leaving the batch
    gives its frames back to the fill ring. Frames to send are whole
    Ethernet frames (14 bytes up to MTU + 14, +4 with an 802.1Q tag, at most
    ``frame_size``), copied into TX frames (``send``, ``send_many``,
    ``publish``) and sent on ``flush()``.

    Frames reach the socket through an XDP program redirecting the queue
    into an XSKMAP: by default its own ``XdpProgram`` (attached per
    ``attach``, closed with the socket); ``program=`` shares one (one socket
    per queue through one program; the caller closes it); ``xsk_map_fd=``
    registers in the caller's own map. A TX-only socket needs no program.
    A frame redirected to the socket is taken: the kernel stack does not
    see it (AF_PACKET gets a copy instead).

    Needs CAP_NET_RAW for the socket, and CAP_NET_ADMIN with CAP_BPF (or
    CAP_SYS_ADMIN) for its own program. ``bind_mode`` is ``"zerocopy"`` or
    ``"copy"``; ``attach_mode`` the program's mode in effect (``None``
    without one of its own or given).
    """

    def __init__(self, interface: str, queue_id: int = 0, *, program: XdpProgram | None = None,
                 xsk_map_fd: int | None = None, config: XdpConfig | None = None, **options: Any) -> None:
        self._fd = -1
        self._wake = -1
        self._closed = True
        self._closing = False
        self._mapping: Mapping | None = None
        self._rings: list[_Ring] = []
        self._program: XdpProgram | None = None
        self._own_program = False
        self._registered = False
        self.config = config = resolve(XdpConfig, config, options, "XdpSocket")
        self.interface = interface
        self.ifindex = ifindex(interface)
        if not isinstance(queue_id, int) or isinstance(queue_id, bool) or queue_id < 0:
            raise ConfigError(f"queue_id must be an int >= 0, got {queue_id!r}")
        if program is not None and xsk_map_fd is not None:
            raise ConfigError("pass program= or xsk_map_fd=, not both")
        if xsk_map_fd is not None and (not isinstance(xsk_map_fd, int) or isinstance(xsk_map_fd, bool)
                                       or xsk_map_fd < 0):
            raise ConfigError(f"xsk_map_fd must be an open file descriptor (int >= 0), got {xsk_map_fd!r}")
        if program is not None and not isinstance(program, XdpProgram):
            raise ConfigError(f"program must be an XdpProgram, got {type(program).__name__}")
        if program is not None and program.ifindex != self.ifindex:
            raise ConfigError(f"program is attached to {program.interface!r}, not to {interface!r}")
        queues = rx_queue_count(interface)
        if queue_id >= queues:
            raise ConfigError(f"queue_id {queue_id} is out of range: {interface!r} has {queues} RX "
                              f"queue{'s' if queues != 1 else ''} (0..{queues - 1})")
        self.queue_id = queue_id
        self.mode = config.mode
        self.frame_size = config.frame_size
        self.frame_count = int(config.frame_count or 0)
        self.rx_frames, self.tx_frames = config.split
        self.bind_mode = ""
        self._guard_reset()
        self._rx_lock = threading.Lock()
        self._tx_lock = threading.RLock()
        self._fill_lock = threading.Lock()
        self._returned: deque[Any] = deque()  # frames of released batches, for the fill ring
        self._scratch = Scratch()
        self._seq = 0
        self._rx_taken = 0
        self._rx_bad = 0
        self._counts = [0, 0, 0, 0]  # queued, sent, rejected, ring_full
        self._tx_busy = 0
        self._final: XdpStats | None = None
        try:
            self._setup(program, xsk_map_fd)
        except BaseException:
            self._release()
            raise
        self._opened()

    # -- setup ---------------------------------------------------------------

    def _setup(self, program: XdpProgram | None, xsk_map_fd: int | None) -> None:
        cfg = self.config
        fd = lib.socket(lib.AF_XDP, lib.SOCK_RAW | lib.SOCK_CLOEXEC, 0)
        if fd < 0:
            err = ffi.errno
            if err in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
                raise RingError(err, "socket(AF_XDP): this kernel lacks AF_XDP sockets "
                                "(CONFIG_XDP_SOCKETS, Linux 4.18+); use the AF_PACKET Capture/Injector")
            raise_errno(err, "socket(AF_XDP)")
        self._fd = fd
        size = self.frame_count * self.frame_size
        self._mapping = Mapping(-1, size, on_unmapped=self._unmap_rings)
        reg = ffi.new("struct xdp_umem_reg *")
        reg.addr = int(ffi.cast("uintptr_t", self._mapping.addr))
        reg.len = size
        reg.chunk_size = self.frame_size
        reg.headroom = cfg.headroom
        what = f"XDP_UMEM_REG ({self.frame_count} frames of {self.frame_size} bytes)"
        if lib.setsockopt(fd, lib.SOL_XDP, lib.XDP_UMEM_REG, reg, ffi.sizeof(reg[0])) < 0:
            err = ffi.errno
            if err in (errno.ENOBUFS, errno.ENOMEM):
                # The kernel pins the UMEM and charges it to RLIMIT_MEMLOCK
                # unless the process has CAP_IPC_LOCK.
                raise RingError(err, f"{what}: the kernel could not pin {size} bytes of UMEM; it counts "
                                "against RLIMIT_MEMLOCK (ulimit -l) without CAP_IPC_LOCK: raise the limit, "
                                "grant CAP_IPC_LOCK or ask for fewer frames")
            raise_errno(err, what)
        mode = cfg.mode
        setsockopt_int(fd, lib.SOL_XDP, lib.XDP_UMEM_FILL_RING, cfg.fill_size, f"fill ring size {cfg.fill_size}")
        setsockopt_int(fd, lib.SOL_XDP, lib.XDP_UMEM_COMPLETION_RING, cfg.completion_size,
                       f"completion ring size {cfg.completion_size}")
        if mode.rx:
            setsockopt_int(fd, lib.SOL_XDP, lib.XDP_RX_RING, cfg.rx_size, f"RX ring size {cfg.rx_size}")
        if mode.tx:
            setsockopt_int(fd, lib.SOL_XDP, lib.XDP_TX_RING, cfg.tx_size, f"TX ring size {cfg.tx_size}")
        off = ffi.new("struct xdp_mmap_offsets *")
        ln = ffi.new("socklen_t *", ffi.sizeof(off[0]))
        if lib.getsockopt(fd, lib.SOL_XDP, lib.XDP_MMAP_OFFSETS, off, ln) < 0:
            raise_errno(ffi.errno, "getsockopt(XDP_MMAP_OFFSETS)")
        if ln[0] < ffi.sizeof(off[0]):
            raise RingError(errno.ENOTSUP, "this kernel's AF_XDP ring layout predates Linux 5.4 (no ring "
                            "flags): need-wakeup and this library's ring code need 5.4 or later")
        self._fq = self._map(off.fr, cfg.fill_size, 8, lib.XDP_UMEM_PGOFF_FILL_RING, "fill")
        self._cq = self._map(off.cr, cfg.completion_size, 8, lib.XDP_UMEM_PGOFF_COMPLETION_RING, "completion")
        self._rx = self._map(off.rx, cfg.rx_size, lib.NC_XDP_DESC_SIZE, lib.XDP_PGOFF_RX_RING, "RX") \
            if mode.rx else None
        self._tx = self._map(off.tx, cfg.tx_size, lib.NC_XDP_DESC_SIZE, lib.XDP_PGOFF_TX_RING, "TX") \
            if mode.tx else None
        self._umem = u = ffi.new("struct nc_umem *")
        u.base = self._mapping.addr
        u.size = size
        u.frame_size = self.frame_size
        u.tx_first = self.rx_frames * self.frame_size
        u.tx_count = self.tx_frames
        self._tx_free = ffi.new("uint64_t[]", max(self.tx_frames, 1))
        self._tx_state = ffi.new("uint8_t[]", max(self.tx_frames, 1))
        for i in range(self.tx_frames):
            self._tx_free[i] = (self.rx_frames + self.tx_frames - 1 - i) * self.frame_size
        u.tx_free = self._tx_free
        u.tx_nfree = self.tx_frames
        u.tx_state = self._tx_state
        if cfg.busy_poll_us:
            setsockopt_int(fd, lib.SOL_SOCKET, lib.SO_BUSY_POLL, cfg.busy_poll_us, "SO_BUSY_POLL", cap="busy_poll")
        if cfg.prefer_busy_poll:
            setsockopt_int(fd, lib.SOL_SOCKET, lib.SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL", cap="busy_poll")
        if cfg.busy_poll_budget:
            setsockopt_int(fd, lib.SOL_SOCKET, lib.SO_BUSY_POLL_BUDGET, cfg.busy_poll_budget,
                           "SO_BUSY_POLL_BUDGET", cap="busy_poll")
        self._hwaddr = ffi.new("uint8_t[8]")
        self._refresh_mtu()
        self._bind()
        if mode.rx:
            frames = array("Q", (i * self.frame_size for i in range(self.rx_frames)))
            self._fill(frames)
            if program is not None:
                program.register(self.queue_id, fd)
                self._program = program
            elif xsk_map_fd is not None:
                register_socket(xsk_map_fd, self.queue_id, fd)
                self._map_fd = xsk_map_fd
            else:
                self._program = XdpProgram(self.interface, attach=self.config.attach)
                self._own_program = True
                self._program.register(self.queue_id, fd)
            self._registered = True
        self._wake = eventfd()

    _map_fd: int | None = None

    def _map(self, off: Any, size: int, entry: int, pgoff: int, what: str) -> _Ring:
        ring = _Ring(self._fd, off, size, entry, pgoff, what)
        self._rings.append(ring)
        return ring

    def _bind(self) -> None:
        cfg = self.config
        sxdp = ffi.new("struct sockaddr_xdp *")
        sxdp.sxdp_family = lib.AF_XDP
        sxdp.sxdp_ifindex = self.ifindex
        sxdp.sxdp_queue_id = self.queue_id
        wake = lib.XDP_USE_NEED_WAKEUP if cfg.need_wakeup else 0
        tries = [lib.XDP_ZEROCOPY, lib.XDP_COPY] if cfg.zerocopy is None else \
            [lib.XDP_ZEROCOPY if cfg.zerocopy else lib.XDP_COPY]
        for k, how in enumerate(tries):
            sxdp.sxdp_flags = how | wake
            # A socket closed on this queue a moment ago releases it from a
            # kernel work item, a few ms later: EBUSY until then.
            busy_until = time.monotonic() + _BUSY_WAIT
            while True:
                if lib.bind(self._fd, ffi.cast("struct sockaddr *", sxdp), ffi.sizeof(sxdp[0])) == 0:
                    err = 0
                    break
                err = ffi.errno
                if err != errno.EBUSY or time.monotonic() > busy_until:
                    break
                time.sleep(0.005)
            if not err:
                break
            if err == errno.EOPNOTSUPP and k + 1 < len(tries):
                continue  # no zero-copy in this driver (or mode): copy instead
            what = f"bind AF_XDP socket to {self.interface!r} queue {self.queue_id}"
            if err == errno.EOPNOTSUPP:
                raise RingError(err, f"{what}: the driver does not support "
                                f"{'zero-copy' if how == lib.XDP_ZEROCOPY else 'this'} AF_XDP mode "
                                "(EOPNOTSUPP); zerocopy=None falls back to copy mode")
            if err == errno.EINVAL:
                # Our flags and rings are valid: what bind refuses is a queue
                # at or past those in use (real_num_rx/tx_queues), which can
                # be fewer than the queues allocated that netlink reports.
                raise ConfigError(f"queue_id {self.queue_id} is out of range: {self.interface!r} has fewer "
                                  f"queues in use than it has allocated (EINVAL from {what}; "
                                  f"'ethtool -l {self.interface}' shows them)")
            if err == errno.EBUSY:
                raise RingError(err, f"{what}: the queue already has an AF_XDP socket (or one was "
                                "closed a moment ago and the kernel has not released it yet) (EBUSY)")
            raise_errno(err, what, interface=self.interface)
        opts = ffi.new("struct xdp_options *")
        ln = ffi.new("socklen_t *", ffi.sizeof(opts[0]))
        zc = lib.getsockopt(self._fd, lib.SOL_XDP, lib.XDP_OPTIONS, opts, ln) == 0 \
            and bool(opts.flags & lib.XDP_OPTIONS_ZEROCOPY)
        self.bind_mode = "zerocopy" if zc else "copy"

    def _refresh_mtu(self, relearn: bool = False) -> None:
        """MTU and hardware address by ioctl, on a throwaway UDP socket: an
        AF_XDP socket answers no ioctl (EOPNOTSUPP, no fall-through to the
        device ioctls). The ioctl goes by name in the calling thread's
        network namespace: ``relearn`` (a later call, maybe from a thread in
        another namespace) changes nothing unless that is the socket's own."""
        name = self.interface.encode()
        with _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM) as tmp:
            if relearn and not _same_netns(self._fd, tmp.fileno()):
                return
            mtu = lib.nc_if_mtu(tmp.fileno(), name)
            if mtu < 0:
                raise_errno(-mtu, f"SIOCGIFMTU {self.interface!r}", interface=self.interface)
            rc = lib.nc_if_hwaddr(tmp.fileno(), name, self._hwaddr)
            if rc < 0:
                raise_errno(-rc, f"SIOCGIFHWADDR {self.interface!r}", interface=self.interface)
        self.mtu = int(mtu)
        self._plain_max = min(self.mtu + ETH_HLEN, self.frame_size)

    @property
    def attach_mode(self) -> XdpAttach | None:
        """How the XDP program feeding this socket is attached (``SKB`` or
        ``NATIVE``), ``None`` when the caller's own map is used or TX only."""
        p = self._program
        return None if p is None else p.mode

    @property
    def program(self) -> XdpProgram | None:
        """The ``XdpProgram`` this socket is registered in (its own or the one given)."""
        return self._program

    # -- calls in progress and close -----------------------------------------

    def _refuses_calls(self) -> bool:
        return self._closed or self._closing

    def _raise_closed(self) -> None:
        self._check_open()

    def _teardown_due(self) -> bool:
        return self._closing and not self._closed and not self._active

    def _check_open(self) -> None:
        if self._forked:
            raise self._forked_error()
        if self._closed or self._closing:
            raise ClosedError(f"AF_XDP socket on {self.interface!r} queue {self.queue_id} is closed")

    def _unmap_rings(self) -> None:
        # The rings go before the socket (or the queue stays busy), then the
        # fd (idempotent: also the UMEM mapping's release hook).
        for r in self._rings:
            r.unmap()
        self._rings = []
        fd, self._fd = self._fd, -1
        close_fd(fd)

    def _release(self) -> None:
        """Give back everything made so far (a failed constructor, the last step of close)."""
        self._unregister()
        # A held batch reads only the UMEM (our own memory), never a ring:
        # the rings and the fd go now, which frees the queue for a new bind.
        # The fill lock waits out a lease callback already in the fill ring.
        with self._fill_lock:
            self._unmap_rings()
        mapping, self._mapping = self._mapping, None
        if mapping is not None:
            mapping.close()  # the UMEM: unmapped now, or when the last batch's lease dies
        close_fd(self._wake)
        self._wake = -1

    def _unregister(self) -> None:
        """Stop the XDP program from redirecting to this socket (idempotent);
        close its own program even if registering in it failed."""
        registered, self._registered = self._registered, False
        p = self._program
        try:
            if not registered:
                pass
            elif p is not None:
                if not p.closed:
                    p.unregister(self.queue_id)
            elif self._map_fd is not None:
                unregister_socket(self._map_fd, self.queue_id)
        except (OSError, ConfigError):
            pass  # the interface (and with it the program) is already gone
        finally:
            if self._own_program and p is not None:
                p.close()

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()  # the guard's bookkeeping too
        self._rx_lock = threading.Lock()
        self._tx_lock = threading.RLock()
        self._fill_lock = threading.Lock()

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (waiting at most ``timeout``, default the
        config's ``drain_timeout``), stop receiving, release the socket.

        Idempotent. A thread blocked in ``next_batch_blocking`` returns
        ``None``; one waiting for TX room raises ``ClosedError``. Batches
        still held keep the UMEM mapped (and readable) until they are
        released; the socket receives nothing more at once (its XSKMAP entry
        is removed and its own program detached) and its queue is free for a
        new socket.
        """
        check_timeout(timeout)
        if self._forked or self._closed or self._closing:
            return
        wait = self.config.drain_timeout if timeout is None else timeout
        if self._tx is not None:
            try:
                self._drain(time.monotonic() + wait, wake=False)
            except OSError:
                pass
        with self._lock:
            if self._closing:
                return
            self._closing = True
            if self._wake >= 0:
                eventfd_signal(self._wake)
            if not self._wait_idle():
                return
        self._teardown()

    def _teardown(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._final = self._stats_now()
            except OSError:
                pass
            self._closed = True
        # No publish, flush or RX walk may be inside the rings while they go.
        with self._tx_lock, self._rx_lock:
            self._release()

    def _close_on_leak(self) -> None:
        self.close(timeout=0)

    # -- the Source contract -------------------------------------------------

    @property
    def label(self) -> str:
        """``interface:queue`` (the contract's label)."""
        return f"{self.interface}:{self.queue_id}"

    error_poll_interval = _POLL_SLICE
    """Seconds between looks at the socket's pending error while waiting: its
    fd shows no event when the interface goes (the ``Source`` contract)."""

    @property
    def at_end(self) -> bool:
        """Never: a live interface has no end (the ``Source`` contract)."""
        return False

    def fileno(self) -> int:
        """The socket fd: readable when the RX ring has frames, writable when
        the TX ring has room (both hints), for event loops."""
        self._check_usable(f"AF_XDP socket on {self.interface!r}")
        return self._fd

    def quiesce(self) -> float:
        """Stop admitting frames (the socket leaves the XSKMAP, so its queue's
        frames go to the kernel stack) and return how long to wait for those
        in flight: a frame the program redirected is on the RX ring within
        the same softirq, so a short moment. Idempotent."""
        with self._use():
            self._unregister()
        return 0.02

    def _give_back(self, frames: Any, n: int) -> None:
        """A batch's frames go back to the fill ring (from any thread, at
        any time: a lease dies where the last reference does)."""
        if n and not (self._closed or self._closing):
            self._returned.append((frames, n))
            self._refill()

    def _refill(self) -> None:
        # Never wait for the lock: this runs from lease destructors, which
        # may fire inside the very thread that holds it. Whoever holds it
        # drains the queue before letting go.
        while self._returned and self._fill_lock.acquire(blocking=False):
            try:
                while self._returned:
                    frames, n = self._returned.popleft()
                    self._fill(frames, n)
            finally:
                self._fill_lock.release()

    def _fill(self, frames: Any, n: int | None = None) -> None:
        if self._fq.addr is None:
            return
        if isinstance(frames, array):
            n = len(frames) if n is None else n
            frames = ffi.from_buffer("uint64_t[]", frames)
        assert n is not None
        placed = lib.nc_xsk_fill(self._fq.r, frames, n)
        if placed < n:  # cannot happen: the fill ring holds every RX frame
            raise RingError(errno.EOVERFLOW, f"fill ring full with {n - placed} frames left over")
        if lib.nc_xring_needs_wakeup(self._fq.r):
            # The driver waits for a system call to pick up the new frames.
            lib.recvfrom(self._fd, ffi.NULL, 0, lib.MSG_DONTWAIT, ffi.NULL, ffi.NULL)

    def next_batch(self) -> PacketBatch | None:
        """The frames on the RX ring now (at most ``batch_size``) as a
        ``PacketBatch`` of zero-copy views, or ``None`` (never blocks)."""
        with self._use():
            return self._next()

    def _next(self) -> PacketBatch | None:
        rx = self._rx
        if rx is None:
            raise ConfigError(f"AF_XDP socket on {self.interface!r} was opened with mode={self.mode.value}: "
                              "it does not receive")
        self._refill()
        with self._rx_lock:
            cap = min(int(lib.nc_xring_ready(rx.r)), self.config.batch_size)
            if cap <= 0:
                return None
            mv = self._scratch.meta(cap)
            frames = ffi.new("uint64_t[]", cap)
            info = ffi.new("struct nc_block_info *")
            xi = ffi.new("struct nc_xsk_rx_info *")
            n = int(lib.nc_xsk_rx(rx.r, self._umem, self.ifindex, self._hwaddr, cap, mv.cdata,
                                  frames, info, xi))
            self._rx_taken += int(xi.taken)
            self._rx_bad += int(xi.invalid)
            nframes = int(xi.nframes)
            if n == 0:
                self._scratch.put_meta(mv)
                self._give_back(frames, nframes)
                return None
            info.seq_num = self._seq
            self._seq += 1
            assert self._mapping is not None
            owner = self._mapping.lease(0, lambda: self._give_back(frames, nframes))
        return PacketBatch(owner, mv, n, info, 0xFFFFFFFF, self._scratch)

    def next_batch_blocking(self, timeout: float | None = None) -> PacketBatch | None:
        """Wait up to ``timeout`` seconds (``None``: forever) for frames.

        Returns ``None`` on timeout, or early when the socket is closed from
        another thread. Signals do not interrupt it. An interface that goes
        away raises ``RingError`` (ENETDOWN).
        """
        deadline = deadline_after(timeout)
        with self._use():
            while True:
                b = self._next()
                if b is not None:
                    return b
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                r = poll_wait(self._fd, lib.POLLIN, self._wake,
                              _POLL_SLICE if left is None else min(left, _POLL_SLICE))
                if self._closing or self._closed:
                    return None
                if not r & 1:
                    self._raise_pending()

    def _raise_pending(self) -> None:
        who = f"AF_XDP socket on {self.interface!r}"
        e = pending_error(self._fd, who)
        if e is not None:
            raise e
        # The error is read once; the socket is unbound for good once its
        # interface is gone, which recvfrom reports as ENXIO every time.
        if lib.recvfrom(self._fd, ffi.NULL, 0, lib.MSG_DONTWAIT, ffi.NULL, ffi.NULL) < 0 \
                and ffi.errno == errno.ENXIO:
            raise interface_gone(who)

    # -- the Sink contract ---------------------------------------------------

    @property
    def capacity(self) -> int:
        """The most frames queued at once: the TX frames (at most the TX ring)."""
        return min(self.tx_frames, self.config.tx_size)

    @property
    def drain_timeout(self) -> float:
        """How long ``close()`` waits for queued frames by default (from the config)."""
        return float(self.config.drain_timeout)

    def _check_len(self, n: int, head: Any = None) -> None:
        check_frame_len(n, head, mtu=self.mtu, slot_size=self.frame_size, slot_cap=self.frame_size,
                        interface=self.interface)

    def _need_tx(self) -> Any:
        tx = self._tx
        if tx is None:
            raise ConfigError(f"AF_XDP socket on {self.interface!r} was opened with mode={self.mode.value}: "
                              "it does not send")
        return tx

    def _reap(self) -> int:
        """Completed frames back to the free list (TX lock held)."""
        k = int(lib.nc_xsk_complete(self._cq.r, self._umem))
        self._counts[1] += k
        return k

    def _room(self) -> int:
        return int(lib.nc_xsk_tx_room(self._need_tx().r, self._umem))

    def room(self) -> int:
        """How many frames fit now; kicks the kernel to make room when there is none."""
        with self._tx_lock:
            self._check_open()
            self._reap()
            m = self._room()
            if not m:
                self._flush_locked()
                m = self._room()
            return m

    def publish(self, frames: Sequence[Frame]) -> int:
        """Queue, without waiting, as many of the leading ``frames`` as fit
        now (one C call copies them into TX frames); return how many (not
        flushed). 0: no room, counted in ``ring_full`` (the kernel is kicked
        once to make room). An invalid ``frames[0]`` raises; a later invalid
        frame ends the run before it."""
        if not frames:
            return 0
        with self._tx_lock:
            self._check_open()
            tx = self._need_tx()
            self._reap()
            m = self._room()
            if not m:
                self._flush_locked()
                m = self._room()
            if not m:
                self.check_frame(frames[0])
                self._counts[3] += 1
                return 0
            blob, lens = self._valid_run(frames[:m])
            k = int(lib.nc_xsk_tx(tx.r, self._umem, ffi.from_buffer("uint8_t[]", blob),
                                  ffi.from_buffer("uint32_t[]", lens), len(lens)))
            self._counts[0] += k
            return k

    def try_send(self, data: Frame) -> bool:
        """Queue ``data`` if there is room now; False (``ring_full`` counted) if not."""
        return self.publish((data,)) == 1

    def send(self, data: Frame, *, timeout: float | None = None, flush: bool = False) -> None:
        """Queue one frame, waiting up to ``timeout`` (None: forever) for room.

        ``ValueError`` for a frame the interface cannot carry (nothing is
        queued), ``RingFullError`` when no room came in time, ``ClosedError``
        after ``close()``. ``flush=True`` kicks the kernel too.
        """
        publish_all(self, (data,), timeout)
        if flush:
            self.flush()

    def send_many(self, frames: Iterable[Frame], *, timeout: float | None = None) -> int:
        """Queue every frame (waiting for room as needed), flush, return the count.

        ``timeout`` bounds each wait for room. A bad frame raises
        ``ValueError`` after the frames before it were queued and flushed.
        """
        n = 0
        it = iter(frames)
        try:
            while True:
                chunk = list(islice(it, max(self.capacity, 1)))
                if not chunk:
                    break
                n += publish_all(self, chunk, timeout)
        finally:
            if not (self._closed or self._closing):
                self.flush()
        return n

    def flush(self) -> int:
        """Kick the kernel to send what is queued; return how many frames it
        took off the TX ring. Never blocks."""
        with self._tx_lock:
            self._check_open()
            return self._flush_locked()

    def _flush_locked(self) -> int:
        tx = self._need_tx()
        total = 0
        relearnt = False
        while True:
            before = int(lib.nc_xring_outstanding(tx.r))
            if before == 0:
                break
            if self.config.need_wakeup and not lib.nc_xring_needs_wakeup(tx.r):
                break  # the driver is sending on its own
            err = self._kick()
            after = int(lib.nc_xring_outstanding(tx.r))
            total += before - after
            if err == errno.EBUSY:
                self._tx_busy += 1  # the device dropped a frame; its descriptor completes
                if not relearnt:
                    # A lowered MTU: refuse longer frames before queueing. Once
                    # per flush: each dropped frame ends a kick with EBUSY.
                    relearnt = True
                    try:
                        self._refresh_mtu(relearn=True)
                    except OSError:
                        pass
            if err in (errno.ENETDOWN, errno.ENXIO):
                raise interface_gone(f"AF_XDP socket on {self.interface!r}")
            if err and err not in _RETRY_LATER:
                raise_errno(err, f"sendto (TX kick) on {self.interface!r}")
            if after == before or not err:
                break  # no progress now (or all sent): the next flush tries again
        self._reap()
        return total

    def _kick(self) -> int:
        """``sendto(fd, NULL, 0, MSG_DONTWAIT)``: 0 or the errno (EINTR retried)."""
        while True:
            if lib.sendto(self._fd, ffi.NULL, 0, lib.MSG_DONTWAIT, ffi.NULL, 0) >= 0:
                return 0
            err = int(ffi.errno)
            if err != errno.EINTR:
                return err

    def wait_room(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` s (``None``: forever) until a frame fits
        (``RingFullError`` on timeout, ``ClosedError`` if closed meanwhile)."""
        deadline = deadline_after(timeout)
        while True:
            if self.room():
                return
            self._wait_progress(deadline)

    def _wait_progress(self, deadline: float | None, wake: bool = True) -> None:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise RingFullError(errno.EAGAIN, f"no room on the AF_XDP TX ring of {self.interface!r} in time")
        step = 0.005 if left is None else min(0.005, left)
        with self._use() if wake else contextlib.nullcontext():
            poll_wait(self._fd, lib.POLLOUT, self._wake if wake else -1, step)
        if wake and (self._closing or self._closed):
            raise ClosedError(f"AF_XDP socket on {self.interface!r} is closed")

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Flush, then wait until every queued frame is completed; False on timeout."""
        return self._drain(deadline_after(timeout), wake=True)

    def _drain(self, deadline: float | None, wake: bool) -> bool:
        self._need_tx()
        while True:
            with self._tx_lock:
                if wake:
                    self._check_open()
                self._flush_locked()
                if self._umem.tx_nfree == self.tx_frames:
                    return True
            try:
                self._wait_progress(deadline, wake=wake)
            except RingFullError:
                return False

    # -- statistics ----------------------------------------------------------

    def stats(self) -> XdpStats:
        """Counters since the socket opened (see ``XdpStats``)."""
        if self._forked:
            raise self._forked_error()
        with self._lock:
            if self._closed:
                if self._final is None:
                    raise ClosedError(f"AF_XDP socket on {self.interface!r} is closed")
                return self._final
            return self._stats_now()

    def _stats_now(self) -> XdpStats:
        st = ffi.new("struct xdp_statistics *")
        ln = ffi.new("socklen_t *", ffi.sizeof(st[0]))
        if lib.getsockopt(self._fd, lib.SOL_XDP, lib.XDP_STATISTICS, st, ln) < 0:
            raise_errno(ffi.errno, "getsockopt(XDP_STATISTICS)")
        if self._tx is not None:
            with self._tx_lock:
                self._reap()
        drops = int(st.rx_dropped) + int(st.rx_ring_full)
        waiting = int(lib.nc_xring_ready(self._rx.r)) if self._rx is not None and self._rx.addr is not None else 0
        q, s, r, f = self._counts
        return XdpStats(
            queued=q, sent=s, rejected=r, ring_full=f,
            packets=self._rx_taken + waiting + drops, drops=drops, lost=self._rx_bad,
            rx_dropped=int(st.rx_dropped), rx_invalid_descs=int(st.rx_invalid_descs),
            tx_invalid_descs=int(st.tx_invalid_descs), rx_ring_full=int(st.rx_ring_full),
            rx_fill_ring_empty_descs=int(st.rx_fill_ring_empty_descs),
            tx_ring_empty_descs=int(st.tx_ring_empty_descs), rx_bad_descs=self._rx_bad,
            bad_completions=int(self._umem.bad_completions), tx_busy=self._tx_busy,
            zerocopy=self.bind_mode == "zerocopy",
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd} {self.bind_mode}"
        return f"<XdpSocket {getattr(self, 'interface', '?')!r} queue {getattr(self, 'queue_id', '?')} {state}>"


def _netns_cookie(fd: int) -> int | None:
    v = ffi.new("uint64_t *")
    ln = ffi.new("socklen_t *", ffi.sizeof("uint64_t"))
    if lib.getsockopt(fd, lib.SOL_SOCKET, lib.SO_NETNS_COOKIE, v, ln) < 0:
        return None  # before Linux 5.14
    return int(v[0])


def _same_netns(a: int, b: int) -> bool:
    """Whether sockets ``a`` and ``b`` are in the same network namespace (False if unknown)."""
    ca = _netns_cookie(a)
    return ca is not None and ca == _netns_cookie(b)
