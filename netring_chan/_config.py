"""Options given either as keyword arguments or as one config object."""

from __future__ import annotations

from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C")


def resolve(config_type: type[C], config: C | None, options: dict[str, Any], who: str) -> C:
    """``config`` if given (then no ``options``), else ``config_type(**options)``.

    An unknown option becomes a ``ConfigError`` naming it and ``who``.
    """
    if config is None:
        try:
            return config_type(**options)
        except TypeError as e:
            raise ConfigError(f"{who}: {e}") from None
    if options:
        raise ConfigError(f"pass either config= or options, not both: {sorted(options)}")
    if not isinstance(config, config_type):
        raise ConfigError(f"{who}: config must be a {config_type.__name__}, got {type(config).__name__}")
    return config
