"""``Bridge``: forward frames between two interfaces through user code.

An RX ring (``Capture``) and a TX ring (``Injector``) on each interface; each
received frame is shown to a callback that forwards it, drops it, or returns
new bytes to forward instead.

Kernel facts this depends on:

* A frame the bridge sends out of B would be handed straight back to the
  capture on B (every AF_PACKET socket bound with ETH_P_ALL sees outgoing
  frames as PACKET_OUTGOING) and forwarded back to A: a loop. Two kernel
  switches stop it before any copy is made: PACKET_IGNORE_OUTGOING on the
  captures, and PACKET_QDISC_BYPASS on the injectors (the direct-xmit path
  does not run the taps at all). Both are on by default; the loop also skips
  any PACKET_OUTGOING frame that still arrives, and counts it
  (``own_frames``), so with both switches off it is visible but harmless.
* The kernel strips an 802.1Q tag on receive into the packet's metadata
  (``vlan_tci``/``vlan_tpid``); it is put back into the frame before
  forwarding, or the VLAN would be lost crossing the bridge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import select
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Union

from ._loops import loop_for
from ._resource import Resource
from ._sys import close_fd, eventfd, eventfd_signal, pending_error, deadline_after
from .contract import error_poll_interval
from .errors import ClosedError, ConfigError
from .packet import Direction, Packet
from .rings.afpacket import Capture, Injector

if TYPE_CHECKING:
    from .rings.xdp import XdpSocket

__all__ = ["Bridge", "BridgeDirection", "BridgeStats", "DirectionStats", "Verdict"]


class BridgeDirection(enum.Enum):
    """Which way a frame crosses the bridge."""

    A_TO_B = "a->b"
    B_TO_A = "b->a"


class Verdict(enum.Enum):
    """What the callback decides for a frame (or return bytes to forward instead)."""

    FORWARD = "forward"
    DROP = "drop"


VerdictLike = Union[Verdict, bool, None, bytes, bytearray, memoryview]
Callback = Callable[[Packet, BridgeDirection], VerdictLike]


@dataclasses.dataclass(frozen=True)
class DirectionStats:
    """Counters of one direction.

    ``received``: frames captured on the ingress side (not counting the
    bridge's own, ``own_frames``). ``forwarded``: queued on the egress TX
    ring. ``dropped``: dropped by the callback. ``too_large``: did not fit the
    egress interface (MTU) or a TX slot. ``ring_full``: the egress TX ring had
    no free slot even after a flush (dropped). ``kernel_drops``: frames the
    ingress RX ring had no room for. ``sent``: frames the egress ring has
    finished sending (shared by nothing else: one injector per direction).
    ``lost``: frames not forwarded because the callback raised: the one it
    raised for and the rest of that ring block (the frames it had already
    passed are still forwarded). ``balanced``: every received frame is
    accounted for.
    """

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    too_large: int = 0
    ring_full: int = 0
    own_frames: int = 0
    kernel_drops: int = 0
    sent: int = 0
    lost: int = 0

    @property
    def balanced(self) -> bool:
        """Whether every received frame is accounted for (see the class notes)."""
        return self.received == self.forwarded + self.dropped + self.too_large + self.ring_full + self.lost


@dataclasses.dataclass(frozen=True)
class BridgeStats:
    """The counters of both directions (``DirectionStats`` each)."""
    a_to_b: DirectionStats
    b_to_a: DirectionStats


class _Leg:
    """One direction: capture on the ingress, injector on the egress."""

    def __init__(self, direction: BridgeDirection, rx: Capture | XdpSocket, tx: Injector | XdpSocket) -> None:
        self.direction = direction
        self.rx = rx
        self.tx = tx
        self.c = {f.name: 0 for f in dataclasses.fields(DirectionStats)}

    def stats(self) -> DirectionStats:
        c = dict(self.c)
        if not self.rx.closed:
            c["kernel_drops"] = self.rx.stats().drops
        else:
            c["kernel_drops"] = self.c["kernel_drops"]
        c["sent"] = self.tx.stats().sent
        return DirectionStats(**c)


def _with_tag(data: memoryview, tci: int, tpid: int | None) -> bytes:
    return bytes(data[:12]) + struct.pack("!HH", tpid or 0x8100, tci) + bytes(data[12:])


def _options(name: str, value: object) -> dict[str, Any]:
    """``value``, keyword arguments for a ring (``None``: none), as a dict;
    ``ConfigError`` naming ``name`` for anything else (a falsy non-dict is
    not taken for none)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ConfigError(f"{name} must be a dict of keyword arguments or None, got {value!r}")
    return dict(value)


class Bridge(Resource):
    """Forward frames between interfaces ``a`` and ``b`` through ``callback``.

    ``callback(packet, direction)`` returns ``Verdict.FORWARD`` (or ``None``
    / ``True``) to forward the frame as is, ``Verdict.DROP`` (or ``False``)
    to drop it, or bytes to forward in its place. ``packet`` is a zero-copy
    view valid only during the call. With no callback every frame is
    forwarded.

    ``run()`` forwards until ``stop()`` (from another thread or a signal
    handler); ``run_for(seconds)``. An exception raised by the callback stops
    the bridge and is re-raised by ``run``; the frame it was called for is
    not forwarded. ``close()`` releases the rings (idempotent).
    ``capture_options`` / ``injector_options`` go to each ``Capture`` /
    ``Injector``. With ``xdp_options`` (a dict, ``{}`` for the defaults)
    each interface gets one ``XdpSocket`` instead, for both directions,
    made with those options (queue 0); the three AF_PACKET switches then do
    not apply: an XDP program sees only what arrives, never the bridge's
    own frames.
    """

    def __init__(self, a: str, b: str, callback: Callback | None = None, *,
                 promiscuous: bool = True, ignore_outgoing: bool = True, qdisc_bypass: bool = True,
                 capture_options: dict[str, Any] | None = None,
                 injector_options: dict[str, Any] | None = None,
                 xdp_options: dict[str, Any] | None = None) -> None:
        self._closed = True
        self._legs: list[_Leg] = []
        self._wake = -1
        if not isinstance(a, str) or not isinstance(b, str):
            raise ConfigError(f"interfaces must be names, got {a!r} and {b!r}")
        if a == b:
            raise ConfigError(f"a bridge needs two different interfaces, got {a!r} twice")
        if callback is not None and not callable(callback):
            raise ConfigError(f"callback must be callable, got {callback!r}")
        copts = {"block_size": 1 << 18, "block_count": 16, "block_timeout_ms": 1,
                 "promiscuous": promiscuous, "ignore_outgoing": ignore_outgoing,
                 **_options("capture_options", capture_options)}
        iopts = {"frame_count": 512, "qdisc_bypass": qdisc_bypass, **_options("injector_options", injector_options)}
        xopts = None if xdp_options is None else _options("xdp_options", xdp_options)
        self.a, self.b = a, b
        self.callback = callback
        opened: list[Capture | Injector | XdpSocket] = []
        try:
            if xopts is not None:
                from .rings.xdp import XdpSocket  # lazy: the AF_PACKET bridge needs none of it

                xa = XdpSocket(a, **xopts)
                opened.append(xa)
                if not (xa.mode.rx and xa.mode.tx):
                    raise ConfigError(f"xdp_options mode must be 'both' (a bridge receives and sends on each "
                                      f"interface), got mode {xa.mode.value!r}")
                xb = XdpSocket(b, **xopts)
                opened.append(xb)
                legs = [_Leg(BridgeDirection.A_TO_B, xa, xb), _Leg(BridgeDirection.B_TO_A, xb, xa)]
            else:
                rx_a = Capture(a, **copts)
                opened.append(rx_a)
                rx_b = Capture(b, **copts)
                opened.append(rx_b)
                tx_a = Injector(a, **iopts)
                opened.append(tx_a)
                tx_b = Injector(b, **iopts)
                opened.append(tx_b)
                legs = [_Leg(BridgeDirection.A_TO_B, rx_a, tx_b), _Leg(BridgeDirection.B_TO_A, rx_b, tx_a)]
            self._wake = eventfd()
        except BaseException:
            for r in opened:
                r.close()
            raise
        self._legs = legs
        self._stop = False
        self._running = threading.Lock()
        self._runner = 0  # thread id of the run()/arun() in progress
        self._close_after_run = False
        self._opened()

    # -- forwarding ----------------------------------------------------------

    def _forward_batch(self, leg: _Leg) -> bool:
        batch = leg.rx.next_batch()
        if batch is None:
            return False
        c = leg.c
        cb = self.callback
        tx = leg.tx
        out: list[Any] = []
        failure: BaseException | None = None
        with batch:
            pkts = iter(batch)
            for pkt in pkts:
                if pkt.direction == Direction.OUTGOING:
                    c["own_frames"] += 1
                    continue
                c["received"] += 1
                try:
                    verdict: VerdictLike = Verdict.FORWARD if cb is None else cb(pkt, leg.direction)
                    if not (verdict is None or isinstance(verdict, (bool, Verdict, bytes, bytearray, memoryview))):
                        raise TypeError(f"bridge callback returned {verdict!r}; "
                                        "expected a Verdict, bool, None or bytes")
                except BaseException as e:  # noqa: BLE001 - re-raised below, after the accounting
                    failure = e
                    break
                if verdict is None or verdict is True or verdict is Verdict.FORWARD:
                    data: Any = pkt.data
                    tci = pkt.vlan_tci
                    if tci is not None:
                        data = _with_tag(data, tci, pkt.vlan_tpid)
                elif verdict is False or verdict is Verdict.DROP:
                    c["dropped"] += 1
                    continue
                else:
                    data = verdict
                out.append(data)
            if failure is not None:
                # The frame the callback raised for, and the rest of the
                # block it never saw, are lost to the error: counted.
                rest = sum(1 for p in pkts if p.direction != Direction.OUTGOING)
                c["received"] += rest
                c["lost"] += 1 + rest
            # Views into the block stay valid until the batch is released:
            # send them first, runs of free slots one call each. A frame
            # that finds the ring full (even after the kick publish makes)
            # is dropped and counted; the next one tries again.
            i = 0
            while i < len(out):
                try:
                    k = tx.publish(out[i:])
                except ValueError:
                    c["too_large"] += 1
                    i += 1
                    continue
                if k:
                    c["forwarded"] += k
                    i += k
                else:
                    c["ring_full"] += 1
                    i += 1
        tx.flush()
        if failure is not None:
            raise failure
        return True

    @contextlib.contextmanager
    def _run_here(self) -> Iterator[None]:
        """One ``run``/``arun`` at a time; on the way out, a ``close()`` the
        callback asked for is carried out."""
        if self._forked:
            raise self._forked_error()
        if self._closed:
            raise ClosedError("bridge is closed")
        if not self._running.acquire(blocking=False):
            raise RuntimeError("bridge is already running")
        self._runner = threading.get_ident()
        try:
            self._stop = False
            yield
        finally:
            self._drain_wake()
            self._runner = 0
            self._running.release()
            if self._close_after_run:
                self.close()

    def _raise_pending(self) -> None:
        """An interface that went down or vanished sets the capture socket's
        error (and POLLERR): raise it, as a capture would."""
        for leg in self._legs:
            e = pending_error(leg.rx.fileno(), f"bridge capture on {leg.rx.interface!r}")
            if e is not None:
                raise e

    def _recheck(self) -> float | None:
        """Seconds between looks at the pending errors while waiting, when a
        leg's socket shows no event as its interface goes (AF_XDP), else None."""
        found = [t for leg in self._legs if (t := error_poll_interval(leg.rx)) is not None]
        return min(found) if found else None

    def _forward_all(self) -> bool:
        busy = False
        for leg in self._legs:
            busy |= self._forward_batch(leg)
        return busy

    def run(self, timeout: float | None = None) -> None:
        """Forward until ``stop()`` is called (or ``timeout`` seconds pass).

        Re-raises an exception from the callback (the bridge is then stopped
        but open). Only one ``run`` at a time.
        """
        with self._run_here():
            deadline = deadline_after(timeout)
            poller = select.poll()
            for leg in self._legs:
                poller.register(leg.rx.fileno(), select.POLLIN)
            poller.register(self._wake, select.POLLIN)
            recheck = self._recheck()
            while not self._stop:
                if self._forward_all():
                    continue
                if deadline is None:
                    ms = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    ms = max(1, int(left * 1000))
                if recheck is not None:
                    ms = max(1, int(recheck * 1000)) if ms is None else min(ms, max(1, int(recheck * 1000)))
                # select.poll retries EINTR itself (PEP 475) after running the
                # signal handler, which may have called stop().
                events = poller.poll(ms)
                for fd, ev in events:
                    if fd == self._wake:
                        self._drain_wake()
                    elif ev & (select.POLLERR | select.POLLHUP):
                        self._raise_pending()
                if not events and recheck is not None:
                    self._raise_pending()

    async def arun(self, timeout: float | None = None) -> None:
        """``run()`` inside asyncio or trio (anyio on either), driven by
        readiness of both capture fds and the stop eventfd: no thread, no
        busy polling.

        The callback runs in the event loop. ``stop()`` works from any task,
        thread or signal handler.
        """
        loop = loop_for()
        with self._run_here():
            deadline = deadline_after(timeout)
            fds = [leg.rx.fileno() for leg in self._legs] + [self._wake]
            recheck = self._recheck()
            while not self._stop:
                busy = self._forward_all()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if busy:
                    left = 0  # a checkpoint: let other tasks run between blocks
                elif recheck is not None:
                    left = recheck if left is None else min(left, recheck)
                await loop.wait_any_readable(fds, left)
                self._drain_wake()
                if not busy:
                    self._raise_pending()

    def run_for(self, seconds: float) -> None:
        """``run()`` for ``seconds`` (or until ``stop()``)."""
        self.run(timeout=seconds)

    def stop(self) -> None:
        """Make ``run()`` return promptly; safe from another thread or a signal handler."""
        self._stop = True
        if self._wake >= 0:
            eventfd_signal(self._wake)

    def _drain_wake(self) -> None:
        import os

        try:
            os.read(self._wake, 8)
        except OSError:
            pass

    # -- stats and closing ---------------------------------------------------

    def stats(self) -> BridgeStats:
        """Per-direction counters (see ``DirectionStats``); final ones after ``close()``."""
        return BridgeStats(a_to_b=self._legs[0].stats(), b_to_a=self._legs[1].stats())

    def close(self) -> None:
        """Stop and release both interfaces' rings. Idempotent.

        Called from the callback, the bridge finishes the current block,
        and ``run()`` closes it on its way out.
        """
        if self._closed or self._forked:
            return
        self.stop()
        if self._runner == threading.get_ident():
            self._close_after_run = True  # close() from the callback: run() closes on its way out
            return
        with self._running:  # wait for a run() in another thread to return
            self._closed = True
            for leg in self._legs:
                try:
                    leg.c["kernel_drops"] = leg.rx.stats().drops
                except (OSError, ValueError):
                    pass
            for leg in self._legs:
                leg.rx.close()
                leg.tx.close()
            close_fd(self._wake)
            self._wake = -1

    def __repr__(self) -> str:
        return f"<Bridge {getattr(self, 'a', '?')!r} <-> {getattr(self, 'b', '?')!r}{' closed' if self._closed else ''}>"
