"""AF_PACKET transmit rings (PACKET_TX_RING, TPACKET_V2): ``Injector``.

Kernel facts this module depends on (Documentation/networking/packet_mmap.rst
and ``tpacket_snd`` in net/packet/af_packet.c):

* Why V2: the TX ring is a fixed array of fixed-size slots whatever the
  version. V3 adds nothing for sending (its TX path refuses any
  ``tp_next_offset`` but 0 and needs RX-style block geometry), so V2, the
  version every TX user (libpcap, netsniff-ng's trafgen) relies on, is used.
  The slot starts with a ``struct tpacket2_hdr``; the kernel reads the frame
  at ``TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)`` from the slot start
  (PACKET_TX_HAS_OFF is not set) and its length from ``tp_len``.
* A slot goes AVAILABLE -> SEND_REQUEST (we publish it) -> SENDING (the
  kernel built an skb that still points into the slot's pages) -> AVAILABLE
  (the skb was freed). Nothing moves until ``sendto(fd, NULL, 0)``: the kernel
  then walks the ring *from its own head, in order*, and stops at the first
  slot that is not SEND_REQUEST. Slots must therefore be published in ring
  order, without gaps, and a slot is reusable only after its skb is gone.
* A frame the kernel cannot send (longer than MTU + link header, +4 only for
  an 802.1Q-tagged frame, or shorter than the link header) is marked
  TP_STATUS_WRONG_FORMAT and ``sendto`` fails (EMSGSIZE / EINVAL) *without
  moving the kernel's head past it*: the ring is stuck on that slot. (With
  PACKET_LOSS, which can only be set before the ring exists, the kernel would
  instead mark it AVAILABLE and carry on; a rejection would then look exactly
  like a send and could not be counted, so PACKET_LOSS stays off.) We catch
  what we can in user space, and for what the kernel still refuses (the MTU
  was lowered under us) we count the frame, move the frames queued behind it
  one slot down and free the last slot, so the ring flows again.
* MSG_DONTWAIT makes ``sendto`` push every queued slot and return without
  waiting for completions; it fails with EAGAIN when the socket's send buffer
  is full (the slot stays queued) and with ENOBUFS when the device dropped a
  frame it had already freed (the kernel re-marks it SEND_REQUEST).
* ``poll`` reports POLLOUT when the slot at the kernel's head is AVAILABLE,
  but *also* whenever the send buffer is less than half used, so POLLOUT is
  only a hint: after it we look at the slots themselves, and back off briefly
  when it brought nothing.
* The socket is created and bound with protocol 0: a TX-only socket bound
  with ETH_P_ALL would also be handed a copy of every frame on the interface
  (into a receive queue nobody reads).
* Views that outlive their slot (``TxSlot``): ``slot.data`` is built on a
  lease of the mapping, so the lease lives as long as anything that can
  address the slot (the view, a slice or cast of it, an exporter such as a
  numpy array). A slot whose lease is alive is *pinned*: it is not handed to
  a new ``allocate()`` and no ``send`` copies a frame into it. It cannot be
  skipped either: the kernel sends from its head in ring order and stops at
  the first slot that is not SEND_REQUEST, so leaving the pinned slot
  AVAILABLE would stall every frame queued after it, and filling it with a
  dummy frame would put garbage on the wire. A pinned slot at the head
  therefore applies back-pressure: producers wait for it (``RingFullError``
  naming the slot on timeout) and the frames queued before it are flushed.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import gc
import mmap as _mmap
import threading
import time
from itertools import islice
from typing import Any, Iterable, Sequence

from ..._config import resolve
from ..._fastpath import tx_fill as _tx_fill
from ..._lowlevel import ffi, lib
from ..._resource import Resource
from ..._sys import (
    check_timeout, deadline_after,
    close_fd, eventfd, eventfd_signal, ifindex, interface_gone, poll_wait, raise_errno, retry_eintr,
    setsockopt_int,
)
from ...contract import Frame, TxStats, publish_all
from ...errors import ClosedError, ConfigError, RingError, RingFullError
from .._mapping import Mapping, check_ring_size
from ._socket import open_packet_socket
from .frames import ETH_HLEN, TPID_8021Q, LinkFrames, check_frame_len

__all__ = ["Injector", "InjectorConfig", "InjectorStats", "TxSlot", "RingFullError"]

PAGE_SIZE = _mmap.PAGESIZE
DATA_OFF = int(lib.NC_TX_DATA_OFF)
_AVAILABLE = int(lib.TP_STATUS_AVAILABLE)
_WRONG = int(lib.TP_STATUS_WRONG_FORMAT)
_RETRY_LATER = (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)


@dataclasses.dataclass(frozen=True)
class InjectorConfig:
    """Options of an ``Injector``; every field is validated, errors name it.

    ``frame_size``: bytes per slot, a multiple of 16 (TPACKET_ALIGNMENT); a
    frame may use ``frame_size - 32`` of it. ``frame_count``: slots in the
    ring (rounded up to fill whole blocks). ``qdisc_bypass``: hand frames to
    the driver directly (PACKET_QDISC_BYPASS), skipping traffic control.
    ``priority``: SO_PRIORITY of the frames (0..6 without CAP_NET_ADMIN).
    ``drain_timeout``: how long ``close()`` waits for queued frames to go.
    ``max_ring_bytes``: allow a ring larger than a quarter of the machine's
    memory (locked kernel memory) on purpose.
    """

    frame_size: int = 2048
    frame_count: int = 256
    qdisc_bypass: bool = False
    priority: int | None = None
    drain_timeout: float = 1.0
    max_ring_bytes: int | None = None

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for name in ("frame_size", "frame_count"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool), f"{name} must be an int, got {v!r}")
        fs = self.frame_size
        need(fs % lib.TPACKET_ALIGNMENT == 0,
             f"frame_size must be a multiple of {lib.TPACKET_ALIGNMENT} (TPACKET_ALIGNMENT), got {fs}")
        need(fs >= DATA_OFF + 64, f"frame_size must be at least {DATA_OFF + 64}, got {fs}")
        need(fs <= 1 << 20, f"frame_size must be at most 1 MiB, got {fs}")
        need(1 <= self.frame_count <= 1 << 20, f"frame_count must be in 1..{1 << 20}, got {self.frame_count}")
        need(isinstance(self.qdisc_bypass, bool), f"qdisc_bypass must be a bool, got {self.qdisc_bypass!r}")
        if self.priority is not None:
            need(isinstance(self.priority, int) and not isinstance(self.priority, bool)
                 and 0 <= self.priority <= 0xFFFFFFFF, f"priority must be a non-negative int, got {self.priority!r}")
        need(isinstance(self.drain_timeout, (int, float)) and not isinstance(self.drain_timeout, bool)
             and self.drain_timeout >= 0, f"drain_timeout must be a number >= 0, got {self.drain_timeout!r}")
        per_block = self.block_size // fs
        blocks = -(-self.frame_count // per_block)
        check_ring_size(blocks * self.block_size, f"{self.frame_count} slots of {fs} bytes", self.max_ring_bytes)

    @property
    def block_size(self) -> int:
        """Smallest power-of-two number of pages holding one slot (the kernel
        allocates blocks in powers of two pages anyway)."""
        bs = PAGE_SIZE
        while bs < self.frame_size:
            bs <<= 1
        return bs


@dataclasses.dataclass(frozen=True)
class InjectorStats(TxStats):
    """Counters of one injector since it opened.

    ``queued``: frames handed to the ring (``send``). ``sent``: frames the
    kernel took and finished with (its skb was freed: transmitted, or dropped
    further down the stack, which the ring cannot see). ``rejected``: frames
    the kernel refused (TP_STATUS_WRONG_FORMAT); their slots were reused.
    ``ring_full``: publishes or allocations that found no free slot.
    ``pending``: still in the ring, ``queued - sent - rejected``.
    """


class TxSlot:
    """One TX slot lent by ``Injector.allocate``: fill ``data``, then ``send()``.

    ``data`` is a writable memoryview straight into the ring (zero copy).
    Leaving the ``with`` block (or calling ``discard()``) without ``send()``
    gives the slot back unsent; after either, ``data`` is released and
    ``slot.data`` raises ``ClosedError``.

    Slices of ``data`` (or anything else exporting it, e.g. a numpy array)
    may outlive ``send()``/``discard()``: they keep the memory mapped (never
    a segfault) and *pin* the slot. A pinned slot is never handed out again
    nor overwritten by a later frame, so a kept slice keeps reading this
    frame's bytes. Because the kernel sends slots strictly in ring order, a
    pinned slot blocks the ring when its turn comes round again:
    ``allocate``/``send`` wait for the slice to die and raise
    ``RingFullError`` naming the slot on timeout (after ``discard()`` the
    very next allocation is that slot). Drop such slices promptly.

    Not preventable without a copy: writing through a kept slice *after*
    ``send()`` changes the bytes the kernel may still be reading (the frame
    goes out as it is when the kernel copies it). The one other exception:
    a frame the kernel itself refuses (the MTU was lowered after the frame
    was queued) is removed by moving the frames queued behind it one slot
    down, so kept slices of those queued frames then address a neighbour.
    """

    __slots__ = ("_inj", "index", "_frame", "_view", "_owner", "length", "_done")

    def __init__(self, inj: Injector, index: int, frame: Any, owner: Any, length: int) -> None:
        self._inj = inj
        self.index = index
        self._frame = frame
        self._owner = owner
        self.length = length
        self._view: memoryview | None = memoryview(ffi.buffer(owner, length))
        self._done = False

    @property
    def data(self) -> memoryview:
        """The slot's bytes, writable in place (``ClosedError`` after ``send()``/``discard()``)."""
        if self._view is None:
            raise ClosedError("TX slot used after send() or discard()")
        return self._view

    def send(self, length: int | None = None) -> None:
        """Queue the slot's first ``length`` bytes (default: all) for sending."""
        if self._done:
            raise ClosedError("TX slot already sent or discarded")
        n = self.length if length is None else length
        if not isinstance(n, int) or not 0 < n <= self.length:
            raise ValueError(f"send length must be in 1..{self.length}, got {length!r}")
        self._inj._commit(self, n)

    def discard(self) -> None:
        """Give the slot back unsent (idempotent after send)."""
        if not self._done:
            self._inj._abandon(self)

    def _finish(self) -> None:
        self._done = True
        v, self._view = self._view, None
        if v is not None:
            try:
                v.release()
            except BufferError:  # exported further (e.g. numpy): stays mapped
                pass
        self._owner = None

    def __reduce__(self) -> Any:
        raise TypeError("a TxSlot cannot be pickled: it is a slot of a TX ring in this process; "
                        "pickle the frame's bytes (bytes(slot.data))")

    def __enter__(self) -> TxSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def __repr__(self) -> str:
        state = "done" if self._done else "open"
        return f"<TxSlot {self.index} len={self.length} {state}>"


class Injector(LinkFrames, Resource):
    """A PACKET_TX_RING on one interface (TPACKET_V2).

    ``Injector("eth0", frame_count=512)``; options are the fields of
    ``InjectorConfig`` (or pass ``config=``). Frames are queued by ``send`` /
    ``send_many`` / ``allocate`` and go out on ``flush()`` (``send_many``
    flushes when it is done; a full ring is flushed on its own). Frames are
    whole link-layer frames (Ethernet header included, no FCS), 14 bytes up
    to MTU + 14 (+4 with an 802.1Q tag). Thread-safe; one slot can be open
    (``allocate``) at a time, other producers wait for it. Needs CAP_NET_RAW.
    """

    def __init__(self, interface: str, *, config: InjectorConfig | None = None, **options: Any) -> None:
        self._fd = -1
        self._wake = -1
        self._closed = True
        self._closing = False
        self._mapping: Mapping | None = None
        self.config = config = resolve(InjectorConfig, config, options, "Injector")
        self.interface = interface
        self.ifindex = ifindex(interface)
        self.block_size = config.block_size
        self.per_block = self.block_size // config.frame_size
        self.block_count = -(-config.frame_count // self.per_block)
        self.frame_count = self.block_count * self.per_block
        self.frame_size = config.frame_size
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._open: TxSlot | None = None
        self._open_thread = 0
        # Ring bookkeeping, all under _lock. Slots [tail, head) are ours in
        # flight: [tail, kpos) taken by the kernel (SENDING or done),
        # [kpos, head) queued (SEND_REQUEST) and not yet taken.
        self._head = 0
        self._tail = 0
        self._kpos = 0
        self._counts = [0, 0, 0, 0]  # queued, sent, rejected, ring_full
        # _pinned[i] is 1 while the lease of slot i (its TxSlot.data and any
        # slice of it) is alive. The lease destructor clears it without a
        # lock: it may run from any thread, at any point, even while another
        # thread holds _lock.
        self._pinned = bytearray(self.frame_count)
        self._gc_at = 0.0

        try:
            open_packet_socket(self._setup, lambda: self._mapping)
        except BaseException:
            close_fd(self._wake)
            raise
        self._opened()

    # -- setup ---------------------------------------------------------------

    def _setup(self, fd: int) -> None:
        cfg = self.config
        setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_VERSION, lib.TPACKET_V2, "PACKET_VERSION")
        if cfg.qdisc_bypass:
            setsockopt_int(fd, lib.SOL_PACKET, lib.PACKET_QDISC_BYPASS, 1, "PACKET_QDISC_BYPASS")
        if cfg.priority is not None:
            setsockopt_int(fd, lib.SOL_SOCKET, lib.SO_PRIORITY, cfg.priority, f"SO_PRIORITY={cfg.priority}")
        req = ffi.new("struct tpacket_req *")
        req.tp_block_size = self.block_size
        req.tp_block_nr = self.block_count
        req.tp_frame_size = cfg.frame_size
        req.tp_frame_nr = self.frame_count
        if lib.setsockopt(fd, lib.SOL_PACKET, lib.PACKET_TX_RING, req, ffi.sizeof(req[0])) < 0:
            raise_errno(ffi.errno, f"PACKET_TX_RING ({self.frame_count} slots of {cfg.frame_size} bytes)")
        self._fd = fd
        self._mapping = Mapping(fd, self.block_size * self.block_count, on_unmapped=lambda: close_fd(fd))
        ring = ffi.new("struct nc_txring *")
        ring.base = self._mapping.addr
        ring.block_size = self.block_size
        ring.frame_size = cfg.frame_size
        ring.per_block = self.per_block
        ring.count = self.frame_count
        self._ring = ring
        self._ring_addr = int(ffi.cast("uintptr_t", ring))  # for _fastpath.tx_fill
        self._frames = [lib.nc_tx_frame(ring, i) for i in range(self.frame_count)]
        self._offsets = [(i // self.per_block) * self.block_size + (i % self.per_block) * cfg.frame_size
                         for i in range(self.frame_count)]
        hatype = lib.nc_if_hatype(fd, self.interface.encode())
        if hatype < 0:
            raise_errno(-hatype, f"SIOCGIFHWADDR {self.interface!r}", interface=self.interface)
        if hatype not in (lib.ARPHRD_ETHER, lib.ARPHRD_LOOPBACK):
            raise ConfigError(f"{self.interface!r}: only Ethernet-framed interfaces are supported (ARPHRD {hatype})")
        self._refresh_mtu(fd)
        sll = ffi.new("struct sockaddr_ll *")
        sll.sll_family = lib.AF_PACKET
        sll.sll_protocol = 0  # TX only: no protocol hook, nothing is received
        sll.sll_ifindex = self.ifindex
        if lib.bind(fd, ffi.cast("struct sockaddr *", sll), ffi.sizeof(sll[0])) < 0:
            raise_errno(ffi.errno, f"bind to {self.interface!r}", interface=self.interface)
        self._wake = eventfd()

    def _refresh_mtu(self, fd: int) -> None:
        mtu = lib.nc_if_mtu(fd, self.interface.encode())
        if mtu < 0:
            raise_errno(-mtu, f"SIOCGIFMTU {self.interface!r}", interface=self.interface)
        self.mtu = int(mtu)
        # Longest frame that needs no closer look (no 802.1Q allowance).
        self._plain_max = min(self.mtu + ETH_HLEN, self.frame_size - DATA_OFF)

    def _check_len(self, n: int, head: Any = None) -> None:
        check_frame_len(n, head, mtu=self.mtu, slot_size=self.frame_size,
                        slot_cap=self.frame_size - DATA_OFF, interface=self.interface)

    # -- the Sink contract ---------------------------------------------------

    @property
    def label(self) -> str:
        """The interface name (the ``Sink`` contract's label)."""
        return self.interface

    @property
    def capacity(self) -> int:
        """Slots in the ring: the most frames it holds at once."""
        return self.frame_count

    @property
    def drain_timeout(self) -> float:
        """How long ``close()`` waits for queued frames by default (from the config)."""
        return float(self.config.drain_timeout)

    def room(self) -> int:
        """How many frames fit now (free, unpinned slots from the head); may
        kick the kernel to make room. 0 while another thread holds an open slot."""
        with self._lock:
            self._check_open()
            if self._open is not None:
                return 0
            return self._free_run(self.frame_count)

    def wait_room(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` s (``None``: forever) until a frame fits.

        ``RingFullError`` saying why on timeout (a retained view pinning the
        next slot is named); ``ClosedError`` if the injector is closed meanwhile.
        """
        deadline = deadline_after(timeout)
        while True:
            with self._lock:
                self._check_open()
                if not self._wait_slot_free(deadline):
                    raise RingFullError(errno.EAGAIN, "another thread held the open TX slot until the timeout")
                if self._free_run(1):
                    return
            self._wait_progress(deadline)

    # -- state ---------------------------------------------------------------

    def fileno(self) -> int:
        """The socket fd (POLLOUT is a hint that slots may be free)."""
        self._check_usable(f"injector on {self.interface!r}")
        return self._fd

    def _after_fork_in_child(self) -> None:
        # Fresh locks: one a parent thread held at the fork stays held here.
        super()._after_fork_in_child()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._open = None

    def _check_open(self) -> None:
        if self._forked:
            raise self._forked_error()
        if self._closed or self._closing:
            raise ClosedError(f"injector on {self.interface!r} is closed")

    @property
    def _inuse(self) -> int:
        return self._head - self._tail

    def _reap(self) -> int:
        """Count the slots the kernel is done with, oldest first."""
        taken = self._kpos - self._tail
        if taken <= 0:
            return 0
        k = int(lib.nc_tx_reap(self._ring, self._tail % self.frame_count, taken))
        if k:
            self._tail += k
            self._counts[1] += k
        return k

    # -- producing -----------------------------------------------------------

    def _wait_slot_free(self, deadline: float | None) -> bool:
        """Wait (lock held) until no other thread holds an open slot; False on timeout."""
        while self._open is not None:
            if self._open_thread == threading.get_ident():
                raise RuntimeError("this thread already holds an open TX slot; send or discard it first")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._cond.wait(left)
            self._check_open()
        return True

    def _take_slot(self) -> int | None:
        """Index of the free slot at the head, flushing once if the ring is
        full or the head slot is pinned by a view from an earlier frame."""
        if self._inuse >= self.frame_count:
            self._reap()
            if self._inuse >= self.frame_count:
                self._flush_locked()
                self._reap()
                if self._inuse >= self.frame_count:
                    return None
        if self._pinned[self._head % self.frame_count]:
            # We cannot go on past it (ring order), so at least let the
            # frames queued before it go out while we wait.
            if self._head > self._kpos:
                self._flush_locked()
            return None
        return self._head

    def _head_pinned(self) -> int | None:
        """Index of the head slot if a view retained from an earlier frame pins it."""
        i = self._head % self.frame_count
        return i if self._pinned[i] else None

    def try_send(self, data: Frame) -> bool:
        """Queue ``data`` if a slot is free now; False (``ring_full`` counted) if not."""
        return self.publish((data,)) == 1

    def send(self, data: Frame, *, timeout: float | None = None, flush: bool = False) -> None:
        """Queue one frame, waiting up to ``timeout`` (None: forever) for a slot.

        Raises ``ValueError`` for a frame the interface cannot carry (nothing
        is queued), ``RingFullError`` when no slot freed in time,
        ``ClosedError`` after ``close()``. ``flush=True`` kicks the kernel too.
        """
        publish_all(self, (data,), timeout)
        if flush:
            self.flush()

    def send_many(self, frames: Iterable[Frame], *, timeout: float | None = None) -> int:
        """Queue every frame (waiting for slots as needed), flush, return the count.

        ``timeout`` bounds each wait for a free slot. A bad frame raises
        ``ValueError`` after the frames before it were queued and flushed; it
        and those after it are not sent.
        """
        n = 0
        fc = self.frame_count
        seq = frames if isinstance(frames, (list, tuple)) else None
        it = iter(frames)
        try:
            while True:
                # A ring's worth at a time (a slice of a list is cheaper
                # than taking its frames one by one).
                chunk = seq[n:n + fc] if seq is not None else list(islice(it, fc))
                if not chunk:
                    break
                n += publish_all(self, chunk, timeout)
        finally:
            if not self._closed:
                self.flush()
        return n

    def publish(self, frames: Sequence[Frame]) -> int:
        """Queue, without waiting, as many of the leading ``frames`` as there
        are free slots now, with one C call; return how many (not flushed).

        0 means no room now (the ring is full, its head slot pinned, or
        another thread holds an open slot), counted in ``ring_full``. Every
        frame is checked as ``check_frame`` does: an invalid ``frames[0]``
        raises, a later invalid frame ends the run before it (the next call
        raises for it). When the ring is full it kicks the kernel once to
        make room.
        """
        if not frames:
            return 0
        with self._lock:
            self._check_open()
            m = self._free_run(len(frames)) if self._wait_slot_free(time.monotonic()) else 0
            if not m:  # room first: nothing is checked further when full
                self.check_frame(frames[0])
                self._counts[3] += 1
                return 0
            # The common case in one C call: a list or tuple of bytes that
            # plainly fit (no Python call per frame). It stops before the
            # first frame that needs a closer look.
            k = int(_tx_fill(self._ring_addr, self._head % self.frame_count, frames, 0, m,
                             ETH_HLEN, self._plain_max))
            if not k:
                k = self._publish_checked(frames[:m])
            self._head += k
            self._counts[0] += k
        return k

    def _publish_checked(self, run: Sequence[Frame]) -> int:
        """Publish the leading valid frames of ``run`` (lock held, as many
        slots free); raise if ``run[0]`` is invalid. Any bytes-like frame."""
        blob, lens = self._valid_run(run)
        k = len(lens)
        lib.nc_tx_publish_many(self._ring, self._head % self.frame_count,
                               ffi.from_buffer("uint8_t[]", blob),
                               ffi.from_buffer("uint32_t[]", lens), k)
        return k

    def _free_run(self, want: int) -> int:
        """How many slots from the head can take frames now (lock held):
        free and not pinned; like ``_take_slot`` for a run of slots."""
        fc = self.frame_count
        if self._inuse >= fc:
            self._reap()
            if self._inuse >= fc:
                self._flush_locked()
                self._reap()
        m = min(want, fc - self._inuse)
        if m <= 0:
            return 0
        h = self._head % fc
        p = self._pinned.find(1, h, min(h + m, fc))
        if p >= 0:
            m = p - h
        elif h + m > fc:
            p = self._pinned.find(1, 0, h + m - fc)
            if p >= 0:
                m = fc - h + p
        if m == 0 and self._head > self._kpos:
            self._flush_locked()  # let the frames before the pinned slot go out
        return m

    def allocate(self, length: int, *, timeout: float | None = None) -> TxSlot:
        """Lend the next slot for a frame of ``length`` bytes (zero copy).

        Waits up to ``timeout`` (None: forever) for a free slot, including
        for the next slot in ring order to be unpinned by the user (a slice
        of an earlier ``TxSlot.data`` still alive; see ``TxSlot``). Use as a
        context manager: ``with inj.allocate(60) as s: s.data[:] = ...;
        s.send()``.
        """
        if not isinstance(length, int) or isinstance(length, bool):
            raise ValueError(f"length must be an int, got {length!r}")
        # A tag is only known at send(); allow its 4 bytes here.
        self._check_len(length, b"\0" * 12 + TPID_8021Q)
        deadline = deadline_after(timeout)
        counted = False
        while True:
            with self._lock:
                self._check_open()
                if not self._wait_slot_free(deadline):
                    raise RingFullError(errno.EAGAIN, "another thread held the open TX slot until the timeout")
                i = self._take_slot()
                if i is not None:
                    idx = i % self.frame_count
                    frame = self._frames[idx]
                    assert self._mapping is not None
                    self._pinned[idx] = 1
                    try:
                        owner = self._mapping.lease(self._offsets[idx] + DATA_OFF,
                                                    functools.partial(self._pinned.__setitem__, idx, 0))
                    except BaseException:
                        self._pinned[idx] = 0
                        raise
                    slot = TxSlot(self, idx, frame, owner, length)
                    self._open = slot
                    self._open_thread = threading.get_ident()
                    return slot
                if not counted:
                    self._counts[3] += 1
                    counted = True
            self._wait_progress(deadline)

    def _commit(self, slot: TxSlot, n: int) -> None:
        with self._lock:
            if self._open is not slot:
                raise ClosedError("TX slot is no longer valid (injector closed?)")
            v = slot._view
            try:
                self._check_len(n, v[:14] if v is not None else None)
            except ValueError:
                self._release_slot(slot)
                raise
            lib.nc_tx_publish(slot._frame, ffi.NULL, n)
            self._head += 1
            self._counts[0] += 1
            self._release_slot(slot)

    def _abandon(self, slot: TxSlot) -> None:
        with self._lock:
            if self._open is slot:
                self._release_slot(slot)  # head does not move: the slot is reused
            else:
                slot._finish()

    def _release_slot(self, slot: TxSlot) -> None:
        slot._finish()
        self._open = None
        self._open_thread = 0
        self._cond.notify_all()

    # -- kicking and waiting -------------------------------------------------

    def flush(self) -> int:
        """Kick the kernel; return how many queued frames it took off the ring.

        Never blocks: if the socket's send buffer is full the rest stays
        queued for the next flush. A frame the kernel refuses is counted in
        ``rejected`` and its slot reused; the frames behind it still go.
        """
        with self._lock:
            self._check_open()
            return self._flush_locked()

    def _flush_locked(self) -> int:
        total = 0
        while self._head > self._kpos:
            err = self._kick()
            queued = self._head - self._kpos
            taken = int(lib.nc_tx_taken(self._ring, self._kpos % self.frame_count, queued))
            self._kpos += taken
            total += taken
            if not err:
                if taken == 0 or self._head == self._kpos:
                    break
                continue  # the kernel stopped early (e.g. its send buffer); try once more
            if err in _RETRY_LATER:
                break
            if err in (errno.EMSGSIZE, errno.EINVAL) and self._head > self._kpos:
                w = self._kpos % self.frame_count
                if lib.nc_tx_status(self._frames[w]) == _WRONG:
                    lib.nc_tx_remove(self._ring, w, self._head - self._kpos)
                    self._head -= 1
                    self._counts[2] += 1
                    try:
                        self._refresh_mtu(self._fd)
                    except OSError:
                        pass
                    continue
            if err in (errno.ENETDOWN, errno.ENXIO):  # ENXIO: the device was unregistered
                raise interface_gone(f"injector on {self.interface!r}")
            raise_errno(err, f"sendto (TX ring kick) on {self.interface!r}")
        self._reap()
        return total

    def _kick(self) -> int:
        """``sendto(fd, NULL, 0, MSG_DONTWAIT)``: 0, or the errno it failed with.

        EINTR is retried by the one retry helper; the errors the ring
        handles (full send buffer, refused frame, interface down) come back
        as numbers, anything else is raised.
        """
        fd = self._fd
        try:
            retry_eintr(lambda: int(lib.sendto(fd, ffi.NULL, 0, lib.MSG_DONTWAIT, ffi.NULL, 0)),
                        f"sendto (TX ring kick) on {self.interface!r}")
        except ConfigError:  # the one errno raise_errno turns into a ConfigError
            return errno.EINVAL
        except RingError as e:
            return e.errno or errno.EIO
        return 0

    def _wait_progress(self, deadline: float | None, *, wake: bool = True, slot: bool = True) -> None:
        """Wait a little for the kernel to free slots (lock not held).

        POLLOUT is only a hint (see the module notes), so a short poll is
        followed by a short backed-off sleep when it came back at once.
        ``slot``: the caller waits for the head slot, so a pin on it (which
        only the user can lift) is waited for instead of the kernel.
        """
        pinned = self._head_pinned() if slot else None
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            if pinned is not None:
                raise RingFullError(errno.EAGAIN, f"no free TX slot on {self.interface!r} in time: a view "
                                    f"retained from an earlier frame (a slice of TxSlot.data) pins slot "
                                    f"{pinned}, the next one in ring order; drop it to let the ring go on")
            raise RingFullError(errno.EAGAIN, f"no free TX slot on {self.interface!r} in time")
        step = 0.005 if left is None else min(0.005, left)
        if pinned is not None:
            now = time.monotonic()
            if now - self._gc_at >= 1.0:
                # The pinning view may only be waiting for the cycle collector.
                self._gc_at = now
                gc.collect()
                if not self._pinned[pinned]:
                    return
            # Kernel progress cannot help: just sleep, waking at close().
            poll_wait(-1, 0, self._wake if wake else -1, step)
            if wake and (self._closing or self._closed):
                raise ClosedError(f"injector on {self.interface!r} is closed")
            return
        t0 = time.monotonic()
        r = poll_wait(self._fd, lib.POLLOUT, self._wake if wake else -1, step)
        if wake and (self._closing or self._closed):
            raise ClosedError(f"injector on {self.interface!r} is closed")
        if r & 1 and time.monotonic() - t0 < 0.0005:
            with self._lock:
                freed = self._reap()
            if not freed:
                time.sleep(min(0.0005, step))

    def wait_drained(self, timeout: float | None = None) -> bool:
        """Flush, then wait until every queued frame is sent (or rejected).

        True when the ring is empty, False on timeout.
        """
        deadline = deadline_after(timeout)
        return self._drain(deadline, wake=True)

    def _drain(self, deadline: float | None, wake: bool) -> bool:
        while True:
            with self._lock:
                if wake:
                    self._check_open()
                if self._head > self._kpos:
                    self._flush_locked()
                self._reap()
                if self._inuse == 0:
                    return True
            try:
                self._wait_progress(deadline, wake=wake, slot=False)
            except RingFullError:
                return False

    # -- statistics and closing ----------------------------------------------

    def stats(self) -> InjectorStats:
        """Counters since the injector opened (see ``InjectorStats``)."""
        if self._forked:
            raise self._forked_error()
        with self._lock:
            if not self._closed:
                self._reap()
            q, s, r, f = self._counts
            return InjectorStats(queued=q, sent=s, rejected=r, ring_full=f)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (waiting at most ``timeout``, default the
        config's ``drain_timeout``), then release the ring. Idempotent.

        A thread blocked in ``send``/``allocate`` wakes with ``ClosedError``;
        a slot still open is discarded. Frames still queued after the
        timeout are not sent (``stats().pending`` tells how many).
        """
        check_timeout(timeout)
        if self._closed or self._closing or self._forked:
            return
        self._closing = True
        if self._wake >= 0:
            eventfd_signal(self._wake)  # wakes threads waiting for a slot: they raise ClosedError
        wait = self.config.drain_timeout if timeout is None else timeout
        with self._lock:
            if self._closed:
                return
            if self._open is not None:
                self._release_slot(self._open)
            try:
                self._drain(time.monotonic() + wait, wake=False)
            except OSError:
                pass
            self._reap()
            self._closed = True
            self._cond.notify_all()
            close_fd(self._wake)
            self._wake = -1
            mapping, self._mapping = self._mapping, None
            self._frames = []
        if mapping is not None:
            mapping.close()  # unmaps (then closes the fd) once no slot view is alive

    def _close_on_leak(self) -> None:
        self.close(timeout=0)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._fd} slots={self.frame_count}x{self.frame_size}"
        return f"<Injector {getattr(self, 'interface', '?')!r} {state}>"
