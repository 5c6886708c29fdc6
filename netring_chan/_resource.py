"""What every object that owns kernel resources shares: ``closed``, the
context manager, a ``ResourceWarning`` (then a close) when one is
garbage-collected open, and inertness in a child made by ``fork()``
(see ``_fork``)."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING

from . import _fork
from .errors import ClosedError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Resource"]


class Resource:
    """Mixin: ``close()`` is the subclass's; ``_closed`` is False while open."""

    _closed = True  # until the constructor finished: a half-made object is not "open"
    _forked = False  # True in a child made by fork(): unusable, never released there
    _pid = 0

    def _opened(self) -> None:
        """Called by the subclass when the object is open (end of its constructor)."""
        self._pid = os.getpid()
        _fork.track(self)
        self._closed = False

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._closed = True

    def _forked_error(self) -> Exception:
        return _fork.forked_error(repr(self), self._pid)

    def _check_usable(self, what: str) -> None:
        """``ClosedError`` if closed (saying so if this is a forked child)."""
        if self._forked:
            raise self._forked_error()
        if self._closed:
            raise ClosedError(f"{what} is closed")

    def close(self) -> None:
        raise NotImplementedError

    def _close_on_leak(self) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` ran (or the object was inherited across ``fork()``)."""
        return self._closed

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self)
            self._close_on_leak()
