"""The command's file options: ``--rotate`` read into ``nc.Rotate`` arguments."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["parse_rotate"]


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
