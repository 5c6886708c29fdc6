"""AF_PACKET receive rings (TPACKET_V3): ``Capture``.

Kernel facts this module depends on (Documentation/networking/packet_mmap.rst
and net/packet/af_packet.c):

* The ring is a sequence of blocks. The kernel fills the current block with
  variable-length records and hands it to user space by storing
  ``TP_STATUS_USER`` in ``block_status`` when it is full or when
  ``tp_retire_blk_tov`` ms passed; we hand it back by storing
  ``TP_STATUS_KERNEL``. Blocks are filled and must be consumed in ring order.
* When the next block is still ours, the kernel *freezes* the queue and drops
  packets (counted in ``tp_drops`` and ``tp_freeze_q_cnt``) until we return it.
* ``PACKET_STATISTICS`` resets the counters on every read, and for V3 its
  ``tp_packets`` already includes ``tp_drops``. We keep 64-bit totals.
* V3 does not truncate to a snap length, so ``snaplen`` is applied here.
* Fanout can only be joined by a bound socket; everything else (version, ring,
  filter) is set before ``bind`` so no packet from another interface, or one
  the filter rejects, ever lands in the ring.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import mmap as _mmap
import threading
import time
import warnings
from typing import Any, Callable, Iterator

from ..._config import resolve
from ..._fastpath import block_release as _block_release
from ..._fastpath import block_status as _block_status
from ..._lowlevel import ffi, lib
from ..._resource import Guarded
from ..._sys import (
    check_timeout, deadline_after,
    check, close_fd, eventfd, eventfd_signal, ifindex, poll_wait, raise_errno,
    pending_error, setsockopt_int, setsockopt_struct,
)
from ...contract import RxStats
from ...errors import ClosedError, ConfigError, FilterError, MalformedBlockError, RingError
from ...packet import OwnedBatch, OwnedPacket, PacketBatch, PacketCursor
from .._mapping import Mapping, check_ring_size
from ._socket import open_packet_socket
from .blocks import Lease, Scratch, Walked as _B, own_block, walk_block
from .bpf import BpfProgram, FilterSpec, as_program
from .fanout import Fanout

__all__ = [
    "Capture",
    "CaptureConfig",
    "CaptureStats",
    "TimestampSource",
    "RingShrunkWarning",
]

PAGE_SIZE = _mmap.PAGESIZE
# ret #0: a classic BPF program that accepts no packet.
_DROP_ALL = BpfProgram([(0x06, 0, 0, 0)])
# Cap on how long quiesce() asks a caller to wait for a partly filled block.
_SETTLE_CAP = 0.4
# Re-check period while poll() stays readable because of a block we hold.
_STALE_BACKOFF_MIN = 0.0005
_STALE_BACKOFF_MAX = 0.01
_ETH_P_ALL_BE = ((lib.ETH_P_ALL & 0xFF) << 8) | (lib.ETH_P_ALL >> 8)


class RingShrunkWarning(RuntimeWarning):
    """The kernel could not allocate the ring asked for; a smaller one is used."""


class TimestampSource(enum.Enum):
    """Which clock stamps captured packets (set with ``PACKET_TIMESTAMP``; software by default)."""
    SOFTWARE = "software"
    RAW_HARDWARE = "raw_hardware"  # NIC clock; needs SIOCSHWTSTAMP on the device
    SYS_HARDWARE = "sys_hardware"  # deprecated by the kernel, kept for completeness


def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


@dataclasses.dataclass(frozen=True)
class CaptureConfig:
    """Options of a ``Capture``; every field is validated, errors name it.

    Ring geometry: ``block_count`` blocks of ``block_size`` bytes (a power of
    two, a multiple of the page size); ``frame_size`` is the V3 frame unit
    (16-byte aligned) and only fixes ``tp_frame_nr``. ``block_timeout_ms`` is
    how long the kernel waits before handing over a block that is not full.
    The ring is locked kernel memory: one ring may take at most a quarter of
    the machine's memory unless ``max_ring_bytes`` allows more on purpose.
    """

    promiscuous: bool = False
    block_size: int = 1 << 20
    block_count: int = 32
    frame_size: int = 2048
    block_timeout_ms: int = 60
    snaplen: int | None = None
    ignore_outgoing: bool = False
    fanout: Fanout | None = None
    busy_poll_us: int = 0
    timestamp_source: TimestampSource = TimestampSource.SOFTWARE
    rx_hash: bool = False
    filter: FilterSpec | None = None
    protocol: int = lib.ETH_P_ALL
    max_ring_bytes: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for name in ("block_size", "block_count", "frame_size", "block_timeout_ms", "busy_poll_us", "protocol"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an int, got {v!r}")
        for name in ("promiscuous", "ignore_outgoing", "rx_hash"):
            v = getattr(self, name)
            need(isinstance(v, bool), f"{name} must be a bool, got {v!r}")
        bs, fs = self.block_size, self.frame_size
        need(_pow2(bs), f"block_size must be a power of two, got {bs}")
        need(bs % PAGE_SIZE == 0, f"block_size must be a multiple of the page size ({PAGE_SIZE}), got {bs}")
        need(bs < 1 << 31, f"block_size must be below 2 GiB, got {bs}")
        need(self.block_count >= 1, f"block_count must be at least 1, got {self.block_count}")
        need(fs % lib.TPACKET_ALIGNMENT == 0,
             f"frame_size must be a multiple of {lib.TPACKET_ALIGNMENT} (TPACKET_ALIGNMENT), got {fs}")
        need(fs >= lib.NC_MIN_RECORD, f"frame_size must be at least {lib.NC_MIN_RECORD} (TPACKET3_HDRLEN), got {fs}")
        need(fs <= bs, f"frame_size ({fs}) must not exceed block_size ({bs})")
        need(0 <= self.block_timeout_ms <= 0xFFFFFFFF, f"block_timeout_ms out of range: {self.block_timeout_ms}")
        need(0 <= self.busy_poll_us <= 0x7FFFFFFF, f"busy_poll_us must be in 0..2147483647, got {self.busy_poll_us}")
        need(0 <= self.protocol <= 0xFFFF, f"protocol must be an EtherType 0..0xffff, got {self.protocol}")
        if self.snaplen is not None:
            need(isinstance(self.snaplen, int) and 0 < self.snaplen <= 0xFFFFFFFF,
                 f"snaplen must be an int in 1..4294967295, got {self.snaplen!r}")
        if self.fanout is not None:
            need(isinstance(self.fanout, Fanout), f"fanout must be a Fanout, got {self.fanout!r}")
        try:
            object.__setattr__(self, "timestamp_source", TimestampSource(self.timestamp_source))
        except ValueError:
            raise ConfigError(f"timestamp_source: unknown source {self.timestamp_source!r}") from None
        check_ring_size(bs * self.block_count, f"block_count x block_size = {self.block_count} x {bs}",
                        self.max_ring_bytes)
        if self.filter is not None:
            object.__setattr__(self, "filter", as_program(self.filter))

    @property
    def ring_bytes(self) -> int:
        """Size of the ring, ``block_size * block_count`` bytes of locked kernel memory."""
        return self.block_size * self.block_count


@dataclasses.dataclass(frozen=True)
class CaptureStats(RxStats):
    """Kernel counters of one capture, as 64-bit totals since it was opened.

    ``packets``: frames the kernel accepted for this socket (past the filter),
    *including* the ``drops`` it could not place in the ring (the kernel's
    ``tp_packets`` counts both); ``received = packets - drops`` reached the
    ring. ``freezes``: times the ring was full and the queue froze.
    ``delta`` holds the same counters for the interval since the last
    ``stats()`` call (``None`` inside a delta).
    """

    delta: CaptureStats | None = None


class _RxRing:
    """Block cursor and lease bookkeeping of a TPACKET_V3 RX ring."""

    def __init__(self, mapping: Mapping, block_size: int, block_count: int) -> None:
        self.map = mapping
        self.block_size = block_size
        self.block_count = block_count
        self.cur = 0
        self.leased = [False] * block_count
        self.lock = threading.Lock()
        self.scratch = Scratch()
        # The ring's address as an int, for _fastpath's block calls (made
        # once; map.addr going None says the ring is gone).
        self.base = int(ffi.cast("uintptr_t", mapping.addr))

    def take(self) -> Lease | None:
        """Lease the next block if the kernel has handed it over."""
        with self.lock:
            i = self.cur
            if self.leased[i] or self.map.addr is None:
                return None
            off = i * self.block_size
            if not _block_status(self.base + off) & lib.TP_STATUS_USER:
                return None
            self.leased[i] = True
            self.cur = (i + 1) % self.block_count

        def give_back(i: int = i, off: int = off, ring: _RxRing = self) -> None:
            if ring.map.addr is not None:
                _block_release(ring.base + off)
            ring.leased[i] = False

        return Lease(self.map.lease(off, give_back), self.block_size)


class Capture(Guarded):
    """A TPACKET_V3 receive ring on one interface.

    ``Capture("eth0", filter="udp port 53", snaplen=96)``; options are the
    fields of ``CaptureConfig`` (or pass ``config=``). A context manager;
    ``close()`` is idempotent. Needs CAP_NET_RAW (and CAP_NET_ADMIN to raise
    ``busy_poll_us`` above the ``net.core.busy_poll`` sysctl).
    """

    def __init__(self, interface: str, *, config: CaptureConfig | None = None, **options: Any) -> None:
        self._fd = -1
        self._wake = -1
        self._closed = True
        self.config = config = resolve(CaptureConfig, config, options, "Capture")
        self.interface = interface
        self.ifindex = ifindex(interface)
        self._snaplen = config.snaplen or 0xFFFFFFFF
        self._guard_reset()
        self._torn_down = False
        self._teardown_lock = threading.Lock()
        self._cursor = PacketCursor()
        self._totals = [0, 0, 0]
        self._lost = 0  # packets in malformed blocks, skipped whole
        self._last = [0, 0, 0, 0]
        self._stats_lock = threading.RLock()
        self._filter_keep: Any = None
        self.malformed_blocks = 0
        self.fanout_group_id: int | None = None

        open_packet_socket(self._setup, lambda: self._mapping)
        self._opened()

    @classmethod
    def open(cls, interface: str, **options: Any) -> Capture:
        """Open a capture on ``interface``; same options as the constructor."""
        return cls(interface, **options)

    # -- setup ---------------------------------------------------------------

    _mapping: Mapping | None = None

    def _setup(self, fd: int) -> None:
        cfg = self.config
        setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_VERSION, lib.TPACKET_V3, "PACKET_VERSION")
        if cfg.timestamp_source is not TimestampSource.SOFTWARE:
            bit = (lib.SOF_TIMESTAMPING_RAW_HARDWARE if cfg.timestamp_source is TimestampSource.RAW_HARDWARE
                   else lib.SOF_TIMESTAMPING_SYS_HARDWARE)
            setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_TIMESTAMP, bit, "PACKET_TIMESTAMP")
        block_count = self._set_ring(fd)
        self.block_count = block_count
        self._fd = fd
        self._mapping = Mapping(fd, cfg.block_size * block_count, on_unmapped=lambda: close_fd(fd))
        self._ring = _RxRing(self._mapping, cfg.block_size, block_count)
        if cfg.filter is not None:
            self._attach(fd, as_program(cfg.filter))
        if cfg.ignore_outgoing:
            setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
        if cfg.busy_poll_us:
            setsockopt_int(fd, lib.SOL_SOCKET, lib.SO_BUSY_POLL, cfg.busy_poll_us, "SO_BUSY_POLL", cap="busy_poll")
        if cfg.promiscuous:
            mr = ffi.new("struct packet_mreq *")
            mr.mr_ifindex = self.ifindex
            mr.mr_type = lib.PACKET_MR_PROMISC
            setsockopt_struct(fd, lib.SOL_PACKET, lib.PACKET_ADD_MEMBERSHIP, mr, "promiscuous mode", cap="promiscuous")
        self._bind(fd, cfg.protocol)
        if cfg.fanout is not None:
            fo = cfg.fanout
            setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_FANOUT, fo.sockopt(), f"join fanout group {fo}")
            self.fanout_group_id = fo.group_id
            if fo.group_id is None:
                v = ffi.new("int *")
                ln = ffi.new("socklen_t *", 4)
                check(lib.getsockopt(fd, lib.SOL_PACKET, lib.PACKET_FANOUT, v, ln), "getsockopt(PACKET_FANOUT)")
                self.fanout_group_id = v[0] & 0xFFFF
        self._wake = eventfd()

    def _set_ring(self, fd: int) -> int:
        cfg = self.config
        count = cfg.block_count
        while True:
            req = ffi.new("struct tpacket_req3 *")
            req.tp_block_size = cfg.block_size
            req.tp_block_nr = count
            req.tp_frame_size = cfg.frame_size
            req.tp_frame_nr = (cfg.block_size // cfg.frame_size) * count
            req.tp_retire_blk_tov = cfg.block_timeout_ms
            req.tp_feature_req_word = lib.TP_FT_REQ_FILL_RXHASH if cfg.rx_hash else 0
            if lib.setsockopt(fd, lib.SOL_PACKET, lib.PACKET_RX_RING, req, ffi.sizeof(req[0])) == 0:
                break
            err = ffi.errno
            if err == errno.ENOMEM and count > 1:
                # As libpcap does: the kernel could not find the memory; halve
                # the ring and say so rather than fail.
                count //= 2
                warnings.warn(RingShrunkWarning(
                    f"{self.interface}: could not allocate {cfg.block_count} blocks of {cfg.block_size} "
                    f"bytes; retrying with {count}"), stacklevel=4)
                continue
            raise_errno(err, f"PACKET_RX_RING ({count} x {cfg.block_size} bytes, frame {cfg.frame_size})")
        return count

    def _bind(self, fd: int, protocol: int) -> None:
        sll = ffi.new("struct sockaddr_ll *")
        sll.sll_family = lib.AF_PACKET
        sll.sll_protocol = ((protocol & 0xFF) << 8) | (protocol >> 8)
        sll.sll_ifindex = self.ifindex if protocol else 0
        rc = lib.bind(fd, ffi.cast("struct sockaddr *", sll), ffi.sizeof(sll[0]))
        if rc < 0:
            raise_errno(ffi.errno, f"bind to {self.interface!r}", interface=self.interface)

    def _attach(self, fd: int, prog: BpfProgram) -> None:
        fprog, arr = prog._fprog()
        try:
            setsockopt_struct(fd, lib.SOL_SOCKET, lib.SO_ATTACH_FILTER, fprog, f"attach filter {prog}")
        except ConfigError as e:  # EINVAL: the kernel's BPF checker refused the program
            raise FilterError(f"the kernel rejected BPF program {prog} "
                              "(bad opcode, jump out of range or no final return)") from e
        self._filter_keep = (fprog, arr)
        self.filter = prog

    filter: BpfProgram | None = None

    def set_filter(self, spec: FilterSpec | None) -> None:
        """Replace the BPF filter of the live capture (``None`` removes it).

        The swap is atomic in the kernel; frames already in the ring stay.
        """
        with self._use():
            if spec is None:
                z = ffi.new("int *", 0)
                if lib.setsockopt(self._fd, lib.SOL_SOCKET, lib.SO_DETACH_FILTER, z, 4) < 0 and ffi.errno != errno.ENOENT:
                    raise_errno(ffi.errno, "detach filter")
                self.filter = None
                return
            self._attach(self._fd, as_program(spec))

    # -- use and close -------------------------------------------------------

    def _raise_closed(self) -> None:
        self._check_usable(f"capture on {self.interface!r}")

    def _teardown_due(self) -> bool:
        return self._closed and not self._active

    def _after_fork_in_child(self) -> None:
        # Fresh locks: one a parent thread held at the fork stays held here.
        super()._after_fork_in_child()  # the guard's bookkeeping too
        self._teardown_lock = threading.Lock()
        self._stats_lock = threading.RLock()
        self._torn_down = True
        self._ring.lock = threading.Lock()

    def fileno(self) -> int:
        """The socket fd (readable when a block is ready), for event loops."""
        self._check_usable(f"capture on {self.interface!r}")
        return self._fd

    @property
    def label(self) -> str:
        """The interface name (the ``Source`` contract's label)."""
        return self.interface

    @property
    def at_end(self) -> bool:
        """Never: a live interface has no end (the ``Source`` contract)."""
        return False

    def quiesce(self) -> float:
        """Stop admitting frames; return how long to wait for the last block.

        A reject-all BPF filter goes on, so the kernel neither counts nor
        queues anything more; the frames already accepted are in the ring or
        in the block it is filling. That block is handed over by the retire
        timer on its second expiry at the latest (the first only notes which
        block is active), so the wait is two block timeouts, capped at
        0.4 s. (With ``block_timeout_ms`` above ~190 ms the cap wins and a
        partly filled block may still be on its way.) Idempotent.
        """
        self.set_filter(_DROP_ALL)
        return min(2 * self.config.block_timeout_ms / 1000 + 0.02, _SETTLE_CAP)

    def next_batch(self) -> PacketBatch | None:
        """The next ready block as a ``PacketBatch``, or ``None`` (never blocks)."""
        with self._use():
            return self._next()

    def _next(self) -> PacketBatch | None:
        return self._take(walk_block)

    def _next_owned(self) -> OwnedBatch | None:
        return self._take(own_block)

    def _take(self, walk: Callable[[Lease, int, Scratch], _B]) -> _B | None:
        lease = self._ring.take()
        if lease is None:
            return None
        try:
            return walk(lease, self._snaplen, self._ring.scratch)
        except MalformedBlockError as e:
            self.malformed_blocks += 1
            with self._stats_lock:
                self._lost += e.packets
            del lease  # skipped: back to the kernel now (see PacketBatch._walk)
            raise

    def next_batch_blocking(self, timeout: float | None = None) -> PacketBatch | None:
        """Wait up to ``timeout`` seconds (``None``: forever) for a block.

        Returns ``None`` on timeout, or early when the capture is closed from
        another thread. Signals do not interrupt it (EINTR is retried). An
        interface that goes down or disappears raises ``RingError``.
        """
        return self._blocking(self._next, timeout)

    def next_owned_blocking(self, timeout: float | None = None) -> OwnedBatch | None:
        """``next_batch_blocking(timeout)``, copied out, the block handed back at once.

        What the capture services read: the walk of the block and the copy
        are one C call that lets the GIL go once (see ``contract.Source``).
        ``MalformedBlockError`` as ``next_batch_blocking``.
        """
        return self._blocking(self._next_owned, timeout)

    def _blocking(self, take: Callable[[], _B | None], timeout: float | None) -> _B | None:
        deadline = deadline_after(timeout)
        stale = False
        backoff = _STALE_BACKOFF_MIN
        with self._use():
            while True:
                b = take()
                if b is not None:
                    return b
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                if stale:
                    # packet_poll reports POLLIN while the block before the
                    # kernel's current one is not back in its hands. When
                    # that block is one we still hold (a batch, or a view
                    # kept alive), poll() returns at once forever and the
                    # next block's arrival raises no new event: re-check on
                    # a short, growing timer instead of spinning, still
                    # waking at once on close().
                    poll_wait(-1, 0, self._wake, backoff if left is None else min(backoff, left))
                    backoff = min(2 * backoff, _STALE_BACKOFF_MAX)
                    stale = False
                    if self._closed:
                        return None
                    continue
                r = poll_wait(self._fd, lib.POLLIN, self._wake, left)
                if self._closed:
                    return None
                stale = bool(r & 1)
                if r & 4:
                    b = take()
                    if b is not None:
                        return b
                    e = pending_error(self._fd, f"capture on {self.interface!r}")
                    if e is not None:
                        raise e

    def packets(self, count: int | None = None, duration: float | None = None,
                idle_timeout: float | None = None) -> Iterator[OwnedPacket]:
        """Owned packets, one by one, for simple scripts.

        Stops after ``count`` packets, after ``duration`` seconds, after
        ``idle_timeout`` seconds without a block, or when the capture closes.
        """
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise ConfigError(f"count must be an int >= 0 or None, got {count!r}")
        check_timeout(idle_timeout, "idle_timeout")
        end = deadline_after(duration, "duration")
        left = count
        # A block holds many packets; those past ``count`` wait here for the
        # next call instead of being thrown away with the block.
        cur = self._cursor
        while left is None or left > 0:
            wait = idle_timeout
            if end is not None:
                rem = end - time.monotonic()
                if rem <= 0:
                    return
                wait = rem if wait is None else min(wait, rem)
            p = cur.next()
            if p is not None:
                yield p
                if left is not None:
                    left -= 1
                continue
            if self._closed:
                return
            try:
                batch = self.next_batch_blocking(wait)
            except ClosedError:  # closed by another thread since the check
                return
            if batch is None:
                if self._closed or (idle_timeout is not None and (end is None or time.monotonic() < end)):
                    return
                continue
            with batch:
                cur.set(batch.to_owned())

    def __iter__(self) -> Iterator[OwnedPacket]:
        return self.packets()

    def stats(self) -> CaptureStats:
        """Cumulative kernel counters (see ``CaptureStats``) and the delta since the last call."""
        if self._forked:
            raise self._forked_error()
        # Never hold _stats_lock while entering or leaving a call: leaving
        # may run the teardown, which takes _teardown_lock then _stats_lock.
        try:
            with self._use():
                with self._stats_lock:
                    self._read_kernel_stats()
        except ClosedError:
            pass  # the teardown read the counters one last time
        with self._stats_lock:
            (p, dr, fr), (lp, ldr, lfr, llost) = self._totals, self._last
            lost = self._lost
            self._last = [*self._totals, lost]
            return CaptureStats(p, dr, fr, lost, delta=CaptureStats(p - lp, dr - ldr, fr - lfr, lost - llost))

    def _read_kernel_stats(self) -> None:
        st = ffi.new("struct tpacket_stats_v3 *")
        ln = ffi.new("socklen_t *", ffi.sizeof(st[0]))
        check(lib.getsockopt(self._fd, lib.SOL_PACKET, lib.PACKET_STATISTICS, st, ln), "PACKET_STATISTICS")
        self._totals[0] += st.tp_packets
        self._totals[1] += st.tp_drops
        self._totals[2] += st.tp_freeze_q_cnt

    def close(self) -> None:
        """Stop capturing and release the ring. Idempotent, returns promptly.

        A thread blocked in ``next_batch_blocking`` wakes and returns None.
        Batches still held keep their memory mapped (and readable) until they
        are released; the socket stops receiving at once.
        """
        if self._forked:
            return  # a child's copy: nothing of the parent's is touched
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._wake >= 0:
                    eventfd_signal(self._wake)
            # A second close() (another thread's is in progress) waits like
            # the first, so that every close() returns with the ring released.
            # Calls in other threads wake at once through the eventfd.
            if not self._wait_idle():
                return
        self._teardown()  # idempotent; waits for one running in another thread

    def _teardown(self) -> None:
        # close() and the last call to leave (a wait in another thread that
        # close() woke) can both get here at once. The first does the work
        # while the other waits on the lock: close() returns only once the fds
        # and the ring are released, and no fd is closed twice (a second close
        # could hit a number another thread has just been given).
        with self._teardown_lock:
            if self._torn_down:
                return
            self._torn_down = True
            mapping = self._mapping
            try:
                with self._stats_lock:
                    self._read_kernel_stats()
                if mapping is not None and any(self._ring.leased):
                    # Views are still alive, so the socket lives on with the
                    # mapping until they are gone; from now on it accepts
                    # nothing. (Not by binding to protocol 0: packet_bind
                    # reads protocol 0 as "keep the current one" and ifindex
                    # 0 as "every interface", so that would widen it.)
                    fprog, _keep = _DROP_ALL._fprog()
                    setsockopt_struct(self._fd, lib.SOL_SOCKET, lib.SO_ATTACH_FILTER, fprog,
                                      "attach drop-all filter on close")
            except RingError:
                pass
            finally:
                close_fd(self._wake)
                self._wake = -1
                if mapping is not None:
                    mapping.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<Capture {getattr(self, 'interface', '?')!r} {state}>"
