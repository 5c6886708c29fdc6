"""What every object that owns kernel resources shares: ``closed``, the
context manager, and a ``ResourceWarning`` (then a close) when one is
garbage-collected open."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Resource"]


class Resource:
    """Mixin: ``close()`` is the subclass's; ``_closed`` is False while open."""

    _closed = True  # until the constructor finished: a half-made object is not "open"

    def close(self) -> None:
        raise NotImplementedError

    def _close_on_leak(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self._close_on_leak()
