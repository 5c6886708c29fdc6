"""A source and a sink in memory, for tests that need no root and no network.

``MemorySource`` is a ``Source`` whose packets are frames you ``push``: they
are laid out as TPACKET_V3 blocks, byte for byte as the kernel writes them,
and handed out through the same validating walk and the same copy-out as a
``Capture``, so everything above the ring — the capture service and its
faces, ``AsyncCapture`` — runs exactly as it does on a live interface.
Failures can be injected: raise on the Nth batch (``fail_at``), vanish like a
deleted interface (``vanish_at``: what was already queued is still handed out,
then the error), or stall (``stall()``/``resume()``).

``MemorySink`` is a ``Sink`` that records what is sent: ``publish`` fills
``capacity`` slots, ``flush`` "transmits" them into ``sent`` (unless stalled),
with the same failure switches.

Both keep the contract's accounting: a ``MemorySource`` with no room left
(``max_blocks`` blocks waiting) counts the frames of a push as ``drops``, as
a full ring does, and after ``quiesce()`` admits and counts nothing.
"""

from __future__ import annotations

import collections
import errno
import os
import socket
import threading
import time
from typing import Callable, Iterable, Sequence

from ._lowlevel import ffi, lib
from ._resource import Resource
from ._sys import close_fd, eventfd, eventfd_signal, interface_gone, deadline_after
from .contract import Frame, RxStats, TxStats, check_each, frame_length
from .errors import ClosedError, ConfigError, RingError, RingFullError
from .packet import OwnedBatch, PacketBatch
from .rings.afpacket.blocks import Lease, Scratch, Walked as _B, own_block, walk_block

__all__ = ["MemorySource", "MemorySink", "tpacket_v3_block"]

_BLK_HDR = ffi.sizeof("struct tpacket_block_desc")
_HDRLEN = (ffi.sizeof("struct tpacket3_hdr") + lib.TPACKET_ALIGNMENT - 1) & ~(lib.TPACKET_ALIGNMENT - 1)
# Where the kernel puts the frame: netoff = TPACKET_ALIGN(TPACKET3_HDRLEN + 16), macoff = netoff - 14.
_MACOFF = ((lib.NC_MIN_RECORD + 16 + 15) & ~15) - 14
_SRC_MAC = b"\x02\x00\x00\x00\x00\x02\x00\x00"


def _record_size(n: int) -> int:
    return (int(_MACOFF) + n + 7) & ~7


def tpacket_v3_block(frames: Sequence[bytes], timestamps_ns: Sequence[int], *, size: int, seq: int = 1,
                     ifindex: int = 1, protocol: int = 0x88B5) -> bytearray:
    """One block laid out as the kernel writes it (``prb_fill_curr_block``)."""
    buf = bytearray(size)
    base = ffi.from_buffer(buf)
    bh = ffi.cast("struct tpacket_block_desc *", base).hdr.bh1
    off = _BLK_HDR
    bh.offset_to_first_pkt = off
    for k, (data, ts) in enumerate(zip(frames, timestamps_ns)):
        h = ffi.cast("struct tpacket3_hdr *", base + off)
        h.tp_sec, h.tp_nsec = divmod(ts, 1_000_000_000)
        h.tp_snaplen = h.tp_len = len(data)
        h.tp_status = lib.TP_STATUS_USER
        h.tp_mac, h.tp_net = _MACOFF, _MACOFF + 14
        sll = ffi.cast("struct sockaddr_ll *", base + off + _HDRLEN)
        sll.sll_family = socket.AF_PACKET
        sll.sll_protocol = socket.htons(protocol)
        sll.sll_ifindex = ifindex
        sll.sll_hatype = 1
        sll.sll_pkttype = lib.PACKET_HOST
        sll.sll_halen = 6
        for i in range(8):
            sll.sll_addr[i] = _SRC_MAC[i]
        buf[off + _MACOFF:off + _MACOFF + len(data)] = data
        rec = _record_size(len(data))
        h.tp_next_offset = rec if k + 1 < len(frames) else 0
        off += rec
    bh.num_pkts = len(frames)
    bh.blk_len = off
    bh.seq_num = seq
    bh.block_status = lib.TP_STATUS_USER
    if frames:
        bh.ts_first_pkt.ts_sec, bh.ts_first_pkt.ts_nsec = divmod(timestamps_ns[0], 1_000_000_000)
        bh.ts_last_pkt.ts_sec, bh.ts_last_pkt.ts_nsec = divmod(timestamps_ns[-1], 1_000_000_000)
    return buf


def _positive(name: str, v: object, *, none_ok: bool = False) -> None:
    if none_ok and v is None:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"{name} must be a positive int{' or None' if none_ok else ''}, got {v!r}")


class _InMemory(Resource):
    """What both in-memory ends share: a lock and a condition, a label, an
    eventfd for readiness, ``stall()``/``resume()``, bounded waits, close."""

    _kind = "memory end"

    def __init__(self, label: str) -> None:
        if not isinstance(label, str) or not label:
            raise ConfigError(f"label must be a non-empty str, got {label!r}")
        self._label = label
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stalled = False
        self._wake = eventfd()

    @property
    def label(self) -> str:
        """The name given as ``label=``, used in thread names and messages."""
        return self._label

    def _closed_error(self) -> ClosedError:
        return ClosedError(f"{self._kind} {self._label!r} is closed")

    def fileno(self) -> int:
        """An eventfd: readiness is a hint, as the contract allows."""
        if self._closed:
            raise self._closed_error()
        return self._wake

    def stall(self) -> None:
        """Make no progress until ``resume()`` (waits time out)."""
        with self._lock:
            self._stalled = True

    def resume(self) -> None:
        """Make progress again after ``stall()``, waking any waiter."""
        with self._lock:
            self._stalled = False
            self._cond.notify_all()
        eventfd_signal(self._wake)

    def _wait(self, ready: Callable[[], bool], timeout: float | None) -> bool:
        """Wait (lock held) until ``ready()`` (True) or ``timeout`` s passed (False)."""
        deadline = deadline_after(timeout)
        while not ready():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            self._cond.wait(left)
        return True

    def _close_end(self) -> bool:
        """Mark closed and wake every waiter; False if it already was."""
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._cond.notify_all()
        wake, self._wake = self._wake, -1
        close_fd(wake)
        return True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label!r}{' closed' if self._closed else ''}>"


class MemorySource(_InMemory):
    """A ``Source`` of frames pushed from Python, as TPACKET_V3 blocks.

    ``push(frames)`` packs the frames into blocks of ``block_size`` bytes (at
    most ``packets_per_block`` each); up to ``max_blocks`` blocks wait to be
    taken, and a push that finds no room counts its frames as ``drops``.
    ``fail_at=N``: the Nth batch raises ``RingError`` (EIO) instead; every
    later call too. ``vanish_at=N``: once N batches were taken the source
    behaves like an interface that was deleted: a later ``push`` reaches
    nothing (and is not counted), the blocks already waiting are still handed
    out (a ring keeps them, and a ``Capture`` reads them before it reports
    the error), then ``RingError`` (ENETDOWN), and every later call too. So
    the accounting stays exact across a vanish, as on a live interface. ``stall()``
    makes the source hand out nothing until ``resume()`` (waits time out).
    ``snaplen`` truncates as a capture's does. ``label`` names it.
    """

    _kind = "memory source"

    def __init__(self, frames: Iterable[Frame] = (), *, block_size: int = 1 << 16,
                 packets_per_block: int | None = None, max_blocks: int = 64, snaplen: int | None = None,
                 fail_at: int | None = None, vanish_at: int | None = None, label: str = "memory") -> None:
        _positive("block_size", block_size)
        if block_size < _BLK_HDR + _record_size(1):
            raise ConfigError(f"block_size must be at least {_BLK_HDR + _record_size(1)}, got {block_size}")
        _positive("packets_per_block", packets_per_block, none_ok=True)
        _positive("max_blocks", max_blocks)
        _positive("snaplen", snaplen, none_ok=True)
        _positive("fail_at", fail_at, none_ok=True)
        _positive("vanish_at", vanish_at, none_ok=True)
        super().__init__(label)
        self.block_size = block_size
        self.packets_per_block = packets_per_block
        self.max_blocks = max_blocks
        self._snaplen = snaplen or 0xFFFFFFFF
        self._fail_at = fail_at
        self._vanish_at = vanish_at
        self._blocks: collections.deque[tuple[int, bytearray]] = collections.deque()  # (packets, block)
        self._seq = 0
        self._lost = 0
        self._taken = 0
        self._packets = 0
        self._drops = 0
        self._quiet = False
        self._gone = False  # vanished (vanish_at): admits nothing, fails once empty
        self._error: RingError | None = None
        self._scratch = Scratch()
        self._closed = False
        try:
            self.push(frames)
        except BaseException:
            self.close()  # a frame that does not fit: no half-made source left open
            raise

    # -- feeding -------------------------------------------------------------

    def push(self, frames: Iterable[Frame], *, timestamp_ns: int | None = None) -> int:
        """Queue ``frames`` as blocks; returns how many were admitted (the rest
        counted as drops; none counted after ``quiesce()``, ``close()`` or a vanish)."""
        datas = [bytes(f) for f in frames]
        for i, d in enumerate(datas):
            if not d or _BLK_HDR + _record_size(len(d)) > self.block_size:
                raise ConfigError(f"frame {i} of {len(d)} bytes does not fit a {self.block_size}-byte block")
        ts = time.time_ns() if timestamp_ns is None else timestamp_ns
        blocks = self._pack(datas, ts)
        admitted = 0
        with self._lock:
            if self._quiet or self._closed or self._gone:
                return 0
            for frames_in, blk in blocks:
                self._packets += frames_in
                if len(self._blocks) >= self.max_blocks:
                    self._drops += frames_in
                    continue
                # Numbered as admitted, so a gap in seq_num means what it does
                # on a ring (a block never seen), never a push that was dropped.
                self._seq += 1
                ffi.cast("struct tpacket_block_desc *", ffi.from_buffer(blk)).hdr.bh1.seq_num = self._seq
                self._blocks.append((frames_in, blk))
                admitted += frames_in
            self._cond.notify_all()
        if admitted:
            eventfd_signal(self._wake)
        return admitted

    def _pack(self, datas: list[bytes], ts: int) -> list[tuple[int, bytearray]]:
        out: list[tuple[int, bytearray]] = []
        i = 0
        while i < len(datas):
            used, j = _BLK_HDR, i
            while j < len(datas) and used + _record_size(len(datas[j])) <= self.block_size \
                    and (self.packets_per_block is None or j - i < self.packets_per_block):
                used += _record_size(len(datas[j]))
                j += 1
            run = datas[i:j]
            out.append((len(run), tpacket_v3_block(run, [ts + k for k in range(i, j)],
                                                   size=self.block_size, seq=0)))
            i = j
        return out

    @property
    def pending(self) -> int:
        """Blocks waiting to be taken."""
        with self._lock:
            return len(self._blocks)

    # -- the Source contract -------------------------------------------------

    def next_batch(self) -> PacketBatch | None:
        with self._lock:
            return self._take(walk_block)

    def _take(self, walk: Callable[[Lease, int, Scratch], _B]) -> _B | None:
        # _lock held.
        if self._closed:
            raise self._closed_error()
        if self._error is not None:
            raise self._error
        if self._gone and not self._blocks:
            self._fail(interface_gone(f"memory source {self._label!r}"))
        if self._stalled or not self._blocks:
            if not self._blocks:
                self._clear_wake()
            return None
        n = self._taken + 1
        if self._fail_at is not None and n >= self._fail_at:
            # The failing batch, and every one behind it, is never handed out: lost.
            self._lost += sum(k for k, _ in self._blocks)
            self._blocks.clear()
            self._fail(RingError(errno.EIO, f"memory source {self._label!r}: injected failure at batch {n}"))
        _, blk = self._blocks.popleft()
        self._taken = n
        if self._vanish_at is not None and n >= self._vanish_at and not self._gone:
            # The interface is gone now: nothing more arrives; what waits is
            # still handed out, then the error (readable at once if nothing waits).
            self._gone = True
            eventfd_signal(self._wake)
        return walk(Lease(ffi.from_buffer("uint8_t[]", blk), len(blk)), self._snaplen, self._scratch)

    def _fail(self, err: RingError) -> None:
        self._error = err
        eventfd_signal(self._wake)
        raise err

    def _clear_wake(self) -> None:
        try:
            os.read(self._wake, 8)  # an eventfd read resets it: not readable until the next push
        except BlockingIOError:
            pass

    def next_batch_blocking(self, timeout: float | None = None) -> PacketBatch | None:
        return self._blocking(walk_block, timeout)

    def next_owned_blocking(self, timeout: float | None = None) -> OwnedBatch | None:
        """``next_batch_blocking``, copied out in one step (the ``Source``
        contract's optional member, as an AF_PACKET capture has it)."""
        return self._blocking(own_block, timeout)

    def _blocking(self, walk: Callable[[Lease, int, Scratch], _B], timeout: float | None) -> _B | None:
        got: list[_B] = []

        def ready() -> bool:
            if self._closed:
                return True
            b = self._take(walk)
            if b is not None:
                got.append(b)
            return bool(got)

        with self._lock:
            self._wait(ready, timeout)
        return got[0] if got else None

    @property
    def at_end(self) -> bool:
        """Never: more can always be pushed (the ``Source`` contract)."""
        return False

    def quiesce(self) -> float:
        """Admit nothing more (a later ``push`` counts nothing); nothing is in flight."""
        with self._lock:
            self._quiet = True
        return 0.0

    def stats(self) -> RxStats:
        with self._lock:
            return RxStats(self._packets, self._drops, 0, self._lost)

    def close(self) -> None:
        self._close_end()


class MemorySink(_InMemory):
    """A ``Sink`` that records what it sends.

    ``capacity`` slots; ``publish`` fills them, ``flush`` sends them (into
    ``sent``, which keeps the last ``keep`` frames; ``stats().sent`` counts
    all). ``stall()`` makes ``flush`` send nothing until ``resume()``, so
    the sink fills as a TX ring behind a stuck qdisc does. ``fail_at=N``:
    the flush that would send the Nth frame raises ``RingError`` (ENETDOWN,
    like a deleted interface), and so does every later call. Frames must be
    bytes-like and ``min_frame``..``max_frame`` bytes long.
    """

    _kind = "memory sink"

    def __init__(self, *, capacity: int = 256, max_frame: int = 1514, min_frame: int = 14,
                 fail_at: int | None = None, keep: int = 100_000, drain_timeout: float = 1.0,
                 label: str = "memory") -> None:
        _positive("capacity", capacity)
        _positive("max_frame", max_frame)
        _positive("min_frame", min_frame)
        _positive("keep", keep)
        _positive("fail_at", fail_at, none_ok=True)
        if min_frame > max_frame:
            raise ConfigError(f"min_frame ({min_frame}) must not exceed max_frame ({max_frame})")
        if not isinstance(drain_timeout, (int, float)) or isinstance(drain_timeout, bool) or drain_timeout < 0:
            raise ConfigError(f"drain_timeout must be a number >= 0, got {drain_timeout!r}")
        super().__init__(label)
        #: the Sink contract's capacity and drain_timeout
        self.capacity = capacity
        self.drain_timeout = float(drain_timeout)
        self.max_frame = max_frame
        self.min_frame = min_frame
        self._fail_at = fail_at
        self._queue: collections.deque[bytes] = collections.deque()
        self.sent: collections.deque[bytes] = collections.deque(maxlen=keep)
        self._counts = [0, 0, 0, 0]  # queued, sent, rejected, ring_full
        self._error: RingError | None = None
        eventfd_signal(self._wake)  # always "writable" and readable: readiness is only a hint
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()
        if self._error is not None:
            raise self._error

    def check_frame(self, frame: Frame) -> int:
        n = frame_length(frame)
        if not self.min_frame <= n <= self.max_frame:
            raise ValueError(f"frame of {n} bytes is outside {self.min_frame}..{self.max_frame} bytes")
        return n

    def check_frames(self, frames: Sequence[Frame]) -> None:
        check_each(self, frames)

    def _make_room(self) -> int:
        """Free slots now (lock held); when full, push out what is queued, as a TX ring's kick does."""
        self._check_open()
        if len(self._queue) >= self.capacity:
            self._flush_locked()
        return self.capacity - len(self._queue)

    def publish(self, frames: Sequence[Frame]) -> int:
        if not frames:
            return 0
        with self._lock:
            room = self._make_room()
            if room <= 0:
                self.check_frame(frames[0])
                self._counts[3] += 1
                return 0
            k = 0
            for f in frames[:room]:
                try:
                    self.check_frame(f)
                except (TypeError, ValueError):
                    if k == 0:
                        raise
                    break
                self._queue.append(bytes(f))
                k += 1
            self._counts[0] += k
            return k

    def room(self) -> int:
        with self._lock:
            return self._make_room()

    def wait_room(self, timeout: float | None = None) -> None:
        with self._lock:
            if not self._wait(lambda: self._make_room() > 0, timeout):
                raise RingFullError(errno.EAGAIN, f"no room in memory sink {self._label!r} in time"
                                    f"{' (stalled)' if self._stalled else ''}")

    def flush(self) -> int:
        with self._lock:
            self._check_open()
            return self._flush_locked()

    def _flush_locked(self) -> int:
        if self._stalled:
            return 0
        n = 0
        while self._queue:
            if self._fail_at is not None and self._counts[1] + 1 >= self._fail_at:
                self._error = interface_gone(f"memory sink {self._label!r}")
                self._cond.notify_all()
                raise self._error
            self.sent.append(self._queue.popleft())
            self._counts[1] += 1
            n += 1
        self._cond.notify_all()
        return n

    def wait_drained(self, timeout: float | None = None) -> bool:
        def drained() -> bool:
            self._check_open()
            self._flush_locked()
            return not self._queue

        with self._lock:
            return self._wait(drained, timeout)

    def stats(self) -> TxStats:
        with self._lock:
            q, s, r, f = self._counts
            return TxStats(q, s, r, f)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued (unless stalled or failed), then close.
        Idempotent. Frames still queued stay counted as pending."""
        with self._lock:
            if not self._closed and self._error is None:
                try:
                    self._flush_locked()
                except RingError:
                    pass
        self._close_end()
