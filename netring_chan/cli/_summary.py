"""One line per packet: time, direction, addresses, protocol, length.

A minimal, defensive dissector: Ethernet (with any number of 802.1Q/802.1ad
tags), ARP, IPv4, IPv6 (skipping the common extension headers), TCP, UDP,
ICMP and ICMPv6. It never raises: a short or odd frame is described as far
as it could be read, with ``[truncated]`` where the bytes ran out.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any

__all__ = ["describe", "dissect"]

_ETHERTYPES = {0x0800: "IPv4", 0x0806: "ARP", 0x86DD: "IPv6", 0x8100: "802.1Q", 0x88A8: "802.1ad",
               0x88B5: "local-exp-1", 0x88B6: "local-exp-2", 0x88CC: "LLDP", 0x8035: "RARP",
               0x8847: "MPLS", 0x8863: "PPPoE-D", 0x8864: "PPPoE-S", 0x88E5: "MACsec"}
_VLAN = (0x8100, 0x88A8, 0x9100)
_IP_PROTOS = {1: "ICMP", 2: "IGMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH", 58: "ICMPv6",
              132: "SCTP"}
# IPv6 extension headers that carry (next header, length in 8-octet units - 1).
_V6_EXT = (0, 43, 60)
_V6_FRAG = 44
_TCP_FLAGS = "FSRPAUEC"
_DIRECTIONS = {"HOST": "in", "BROADCAST": "in-bc", "MULTICAST": "in-mc", "OTHER_HOST": "in-oh",
               "OUTGOING": "out"}


def _mac(b: bytes) -> str:
    return b.hex(":")


def _u16(b: bytes, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


def _ports(d: bytes, off: int) -> tuple[int, int] | None:
    if len(d) < off + 4:
        return None
    return _u16(d, off), _u16(d, off + 2)


def _l4(d: bytes, off: int, proto: int, src: str, dst: str, v6: bool) -> str:
    name = _IP_PROTOS.get(proto, f"proto {proto}")
    if proto in (6, 17, 132):
        p = _ports(d, off)
        if p is None:
            return f"{src} > {dst} {name} [truncated]"
        sep = "." if v6 else ":"
        s = f"{src}{sep}{p[0]} > {dst}{sep}{p[1]} {name}"
        if proto == 6 and len(d) >= off + 14:
            flags = d[off + 13]
            s += " [" + "".join(c for i, c in enumerate(_TCP_FLAGS) if flags >> i & 1) + "]"
        return s
    if proto in (1, 58):
        if len(d) >= off + 2:
            return f"{src} > {dst} {name} type {d[off]} code {d[off + 1]}"
        return f"{src} > {dst} {name} [truncated]"
    return f"{src} > {dst} {name}"


def _ipv4(d: bytes, off: int) -> str:
    if len(d) < off + 20:
        return "IPv4 [truncated]"
    ihl = (d[off] & 0x0F) * 4
    src = str(ipaddress.IPv4Address(d[off + 12:off + 16]))
    dst = str(ipaddress.IPv4Address(d[off + 16:off + 20]))
    proto = d[off + 9]
    frag = _u16(d, off + 6) & 0x1FFF
    if ihl < 20:
        return f"{src} > {dst} IPv4 [bad header length {ihl}]"
    if frag:
        return f"{src} > {dst} {_IP_PROTOS.get(proto, f'proto {proto}')} [fragment]"
    return _l4(d, off + ihl, proto, src, dst, False)


def _ipv6(d: bytes, off: int) -> str:
    if len(d) < off + 40:
        return "IPv6 [truncated]"
    src = str(ipaddress.IPv6Address(d[off + 8:off + 24]))
    dst = str(ipaddress.IPv6Address(d[off + 24:off + 40]))
    nxt = d[off + 6]
    off += 40
    for _ in range(8):  # a bounded walk over extension headers
        if nxt in _V6_EXT:
            if len(d) < off + 2:
                return f"{src} > {dst} IPv6 [truncated]"
            nxt, off = d[off], off + (d[off + 1] + 1) * 8
        elif nxt == _V6_FRAG:
            if len(d) < off + 8:
                return f"{src} > {dst} IPv6 [truncated]"
            if _u16(d, off + 2) & 0xFFF8:
                return f"{src} > {dst} {_IP_PROTOS.get(d[off], f'proto {d[off]}')} [fragment]"
            nxt, off = d[off], off + 8
        else:
            break
    return _l4(d, off, nxt, src, dst, True)


def _arp(d: bytes, off: int) -> str:
    if len(d) < off + 28 or d[off + 4] != 6 or d[off + 5] != 4:
        return "ARP [truncated]" if len(d) < off + 28 else "ARP"
    op = _u16(d, off + 6)
    spa = str(ipaddress.IPv4Address(d[off + 14:off + 18]))
    tpa = str(ipaddress.IPv4Address(d[off + 24:off + 28]))
    if op == 1:
        return f"ARP who-has {tpa} tell {spa}"
    if op == 2:
        return f"ARP {spa} is-at {_mac(d[off + 8:off + 14])}"
    return f"ARP op {op} {spa} > {tpa}"


def dissect(data: bytes, vlan_tci: int | None = None) -> str:
    """Addresses and protocol of an Ethernet frame, as far as it can be read.

    ``vlan_tci``: an 802.1Q tag the kernel took off the frame (shown first).
    """
    d = bytes(data)
    if len(d) < 14:
        return f"[runt frame of {len(d)} bytes]"
    head = f"{_mac(d[6:12])} > {_mac(d[0:6])}"
    etype = _u16(d, 12)
    off = 14
    vlans: list[str] = [] if vlan_tci is None else [str(vlan_tci & 0x0FFF)]
    while etype in _VLAN:
        if len(d) < off + 4:
            return f"{head} vlan [truncated]"
        vlans.append(str(_u16(d, off) & 0x0FFF))
        etype = _u16(d, off + 2)
        off += 4
    tag = f" vlan {'.'.join(vlans)}" if vlans else ""
    if etype < 0x0600:  # an 802.3 length field: LLC follows
        return f"{head}{tag} 802.3 LLC"
    if etype == 0x0800:
        return f"{_ipv4(d, off)}{tag}"
    if etype == 0x86DD:
        return f"{_ipv6(d, off)}{tag}"
    if etype == 0x0806:
        return f"{head}{tag} {_arp(d, off)}"
    name = _ETHERTYPES.get(etype)
    return f"{head}{tag} ethertype 0x{etype:04x}" + (f" ({name})" if name else "")


def _direction(pkt: Any) -> str:
    try:
        d = pkt.direction
    except Exception:  # noqa: BLE001 - a packet read from a file has none
        return "-"
    name = getattr(d, "name", None)
    return _DIRECTIONS.get(name, "?") if name else "-"


def describe(pkt: Any) -> str:
    """``HH:MM:SS.ffffff dir addresses protocol length N`` for one packet."""
    try:
        ns = int(pkt.timestamp_ns)
        sec, frac = divmod(ns, 1_000_000_000)
        stamp = time.strftime("%H:%M:%S", time.localtime(sec)) + f".{frac // 1000:06d}"
    except Exception:  # noqa: BLE001 - never fail on one packet's metadata
        stamp = "?"
    try:
        tci = getattr(pkt, "vlan_tci", None)
    except Exception:  # noqa: BLE001
        tci = None
    try:
        what = dissect(pkt.data, tci if isinstance(tci, int) else None)
    except Exception as e:  # noqa: BLE001 - a dissector bug must not end a capture
        what = f"[undecodable: {type(e).__name__}]"
    try:
        length = int(pkt.wire_len)
    except Exception:  # noqa: BLE001
        length = len(pkt.data)
    return f"{stamp} {_direction(pkt):<5} {what} length {length}"
