"""pcap/pcapng files for the command, in one place.

The files API (``nc.open_writer``, ``nc.open_reader``, ``nc.Rotate``) is a
separate part of the library; a version without it makes ``-w`` / ``-r``
fail here, with one clear message, before any capture is opened.
"""

from __future__ import annotations

import re
from typing import Any

import netring_chan as nc

__all__ = ["FilesUnavailable", "available", "open_writer", "open_reader", "parse_rotate"]


class FilesUnavailable(RuntimeError):
    """This version of netring_chan has no pcap/pcapng file support yet."""


def available() -> bool:
    return all(hasattr(nc, n) for n in ("open_writer", "open_reader", "Rotate"))


def _need(what: str) -> None:
    if not available():
        raise FilesUnavailable(f"{what}: pcap/pcapng files are not available yet in this version of "
                               f"netring_chan ({nc.__version__})")


def open_writer(path: str, *, snaplen: int, interface: str, rotate: dict[str, Any] | None = None) -> Any:
    """A Writer for ``path`` (.pcap or .pcapng by its extension), Ethernet link type."""
    _need(f"-w {path}")
    rot = nc.Rotate(**rotate) if rotate else None
    return nc.open_writer(path, snaplen=snaplen, linktype=1, interface=interface, rotate=rot)


def open_reader(path: str, *, pace: str, loop: int) -> Any:
    """A Source of OwnedBatches read from ``path`` (``pace``: "fast" or "recorded")."""
    _need(f"-r {path}")
    return nc.open_reader(path, pace=pace, loop=loop)


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_TIME = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_rotate(spec: str) -> dict[str, Any]:
    """``size=100M,seconds=60,files=5`` (any of them) -> keyword arguments of ``Rotate``.

    ``size``: bytes per file (suffixes k, M, G, Ki, Mi, Gi); ``seconds``:
    per file (suffixes s, m, h); ``files``: keep only the newest N files.
    """
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", val)
        if not sep or m is None:
            raise ValueError(f"--rotate {spec!r}: expected size=N[k|M|G], seconds=N[s|m|h] or files=N, got {part!r}")
        num, unit = float(m.group(1)), m.group(2).lower()
        if key == "size" and unit.rstrip("b") in _UNITS:
            out["size"] = int(num * _UNITS[unit.rstrip("b")])
        elif key == "seconds" and unit in _TIME:
            out["seconds"] = num * _TIME[unit]
        elif key == "files" and not unit and num == int(num):
            out["files"] = int(num)
        else:
            raise ValueError(f"--rotate {spec!r}: cannot read {part!r}")
        if out[key] <= 0:
            raise ValueError(f"--rotate {spec!r}: {key} must be positive")
    if not out:
        raise ValueError(f"--rotate {spec!r}: give size=, seconds= and/or files=")
    return out
