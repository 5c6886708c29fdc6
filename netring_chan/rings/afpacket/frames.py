"""The one check of a frame to be sent on an AF_PACKET socket.

What ``tpacket_snd`` (net/packet/af_packet.c) refuses, refused here first so
nothing is queued that the kernel would mark ``TP_STATUS_WRONG_FORMAT``: a
frame shorter than the Ethernet header, or longer than MTU + 14 — plus 4
only when the frame carries an 802.1Q tag (``packet_extra_vlan_len_allowed``)
— and, for a TX ring, longer than the slot's data area.
"""

from __future__ import annotations

from typing import Any

from ..._lowlevel import ffi, lib

__all__ = ["ETH_HLEN", "VLAN_HLEN", "TPID_8021Q", "check_frame_len", "frame_buffer"]

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
