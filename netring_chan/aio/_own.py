"""The one ownership rule of the fd-driven faces.

A face opened by interface name opens its own ring and owns it; a face given
an open source or sink owns it too unless ``owns=False``. What a face owns it
closes on ``close()``/``aclose()``, and a face dropped open warns
(``ResourceWarning``) and closes what it owns.
"""

from __future__ import annotations

from typing import Any, Callable

from .._loops import loop_for
from ..errors import ConfigError

__all__ = ["adopt"]


def adopt(thing: object, kind: type, open_by_name: Callable[..., Any], *, owns: bool,
          backend: str | None, options: dict[str, Any]) -> Any:
    """``thing`` itself, or the ring opened on the interface it names."""
    if not isinstance(owns, bool):
        raise ConfigError(f"owns must be a bool, got {owns!r}")
    if backend is not None:
        loop_for(backend)  # validates the name (ConfigError)
    if isinstance(thing, str):
        if not owns:
            raise ConfigError("owns=False: a ring opened here by interface name is always owned")
        return open_by_name(thing, **options)
    if options:
        raise ConfigError(f"options {sorted(options)} apply only when opening by interface name")
    if not isinstance(thing, kind):
        raise ConfigError(f"not a {kind.__name__.lower()} (see netring_chan.contract.{kind.__name__}): {thing!r}")
    return thing
