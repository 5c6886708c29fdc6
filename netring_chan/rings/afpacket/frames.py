"""The one check of a frame to be sent on an AF_PACKET socket.

What ``tpacket_snd`` (net/packet/af_packet.c) refuses, refused here first so
nothing is queued that the kernel would mark ``TP_STATUS_WRONG_FORMAT``: a
frame shorter than the Ethernet header, or longer than MTU + 14 — plus 4
only when the frame carries an 802.1Q tag (``packet_extra_vlan_len_allowed``)
— and, for a TX ring, longer than the slot's data area.
"""

from __future__ import annotations

from array import array
from typing import Any, Sequence, cast

from ..._fastpath import plain_run as _plain_run
from ..._lowlevel import ffi, lib
from ...contract import Frame, Sink, check_each

__all__ = ["ETH_HLEN", "VLAN_HLEN", "TPID_8021Q", "check_frame_len", "frame_buffer", "LinkFrames"]

ETH_HLEN = int(lib.ETH_HLEN)
VLAN_HLEN = 4
TPID_8021Q = b"\x81\x00"


def frame_buffer(frame: object, what: str = "frame") -> Any:
    """A ``uint8_t[]`` cdata over a bytes-like ``frame`` (no copy), or ``TypeError``."""
    if isinstance(frame, str):
        raise TypeError(f"{what} must be a bytes-like object, got str {frame[:20]!r}")
    try:
        return ffi.from_buffer("uint8_t[]", frame)
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, got {type(frame).__name__}") from None


def check_frame_len(n: int, head: Any, *, mtu: int, slot_size: int, slot_cap: int, interface: str) -> None:
    """``ValueError`` naming the limit if a frame of ``n`` bytes cannot be sent.

    ``head`` is the frame's start (bytes-like or a cdata array), read only to
    see an 802.1Q tag when the frame is over MTU + 14; ``None`` if unknown.
    ``slot_cap`` is the most a TX slot of ``slot_size`` bytes can carry.
    """
    if n == 0:
        raise ValueError("empty frame")
    if n < ETH_HLEN:
        raise ValueError(f"frame of {n} bytes is shorter than the {ETH_HLEN}-byte Ethernet header")
    if n > slot_cap:
        raise ValueError(f"frame of {n} bytes does not fit a {slot_size}-byte slot "
                         f"(at most {slot_cap}; raise frame_size)")
    limit = mtu + ETH_HLEN
    if n > limit:
        if isinstance(head, ffi.CData):
            head = ffi.buffer(head, ETH_HLEN)
        tagged = head is not None and bytes(head[12:14]) == TPID_8021Q
        if not tagged or n > limit + VLAN_HLEN:
            raise ValueError(f"frame of {n} bytes exceeds {interface!r} MTU {mtu} + "
                             f"{ETH_HLEN}{' + 4 (802.1Q)' if tagged else ''} = "
                             f"{limit + (VLAN_HLEN if tagged else 0)}")


class LinkFrames:
    """The frame checks of a sink that sends on a link (``Injector``,
    ``XdpSocket``), written once: ``max_frame``, ``check_frame``,
    ``check_frames`` and the leading valid run a ``publish`` takes.

    The sink sets ``_plain_max`` (the longest frame that needs no closer
    look: MTU + 14, capped by its slot) and ``_check_len(n, head)``
    (``check_frame_len`` with its own MTU and slot).
    """

    _plain_max: int

    def _check_len(self, n: int, head: Any = None) -> None:
        raise NotImplementedError

    @property
    def max_frame(self) -> int:
        """Longest untagged frame accepted now: MTU + 14, capped by the slot."""
        return self._plain_max

    def check_frame(self, frame: Frame) -> int:
        """Validate ``frame`` without queueing it; return its length.

        ``TypeError`` if it is not bytes-like, ``ValueError`` naming the
        limit if the interface could not carry it.
        """
        if type(frame) is bytes:  # the common case: no buffer export needed
            n = len(frame)
            if ETH_HLEN <= n <= self._plain_max:
                return n
            self._check_len(n, frame)
            return n
        buf = frame_buffer(frame)
        n = len(buf)
        self._check_len(n, buf)
        return n

    def check_frames(self, frames: Sequence[Frame]) -> None:
        """Validate a run of frames (the first bad one named by its index).

        A list or tuple of ``bytes`` that plainly fit is checked in one C
        call, without a Python call per frame.
        """
        if _plain_run(frames, ETH_HLEN, self._plain_max) == len(frames):
            return
        check_each(cast(Sink, self), frames)

    def _valid_run(self, run: Sequence[Frame]) -> tuple[bytes, array[int]]:
        """The leading valid frames of ``run`` as one blob and their lengths;
        raises if ``run[0]`` is invalid. Any bytes-like frames."""
        try:
            blob = b"".join(run)
            lens = array("I", map(len, run))
            if sum(lens) == len(blob) and min(lens) >= ETH_HLEN and max(lens) <= self._plain_max:
                return blob, lens
        except (TypeError, ValueError, OverflowError):
            pass
        # Some frame needs the full checks (not bytes, a format other than
        # bytes, too short or long, an 802.1Q tag over the MTU).
        ok = array("I")
        for f in run:
            try:
                ok.append(self.check_frame(f))
            except (TypeError, ValueError):
                if not ok:
                    raise
                break
        return b"".join(run[:len(ok)]), ok
