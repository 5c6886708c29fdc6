"""What every object that owns kernel resources shares: ``closed``, the
context manager, a ``ResourceWarning`` (then a close) when one is
garbage-collected open, and inertness in a child made by ``fork()``
(see ``_fork``)."""

from __future__ import annotations

import os
import threading
import warnings
from typing import TYPE_CHECKING

from . import _fork
from .errors import ClosedError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["Resource", "Guarded"]


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


class Guarded(Resource):
    """A resource whose calls may run in several threads while ``close()``
    comes from another (or from a signal handler in one of them): each call
    runs inside ``_use()``, and the teardown waits until the last call has
    left. The subclass says when calls are refused (``_refuses_calls``), how
    (``_raise_closed``), when a leaving call must tear down
    (``_teardown_due``, lock held) and what the teardown is."""

    _lock: threading.RLock
    _idle: threading.Condition
    _active: dict[int, int]  # thread id -> calls of that thread in progress

    def _guard_reset(self) -> None:
        """New bookkeeping (in the constructor, and in a child after fork:
        a lock a parent thread held at the fork stays held there)."""
        # Re-entrant: close() may run in a signal handler while this thread
        # is inside _use()'s bookkeeping with the lock held.
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._active = {}

    def _after_fork_in_child(self) -> None:
        super()._after_fork_in_child()
        self._guard_reset()

    def _use(self) -> _Active:
        return _Active(self)

    def _refuses_calls(self) -> bool:
        return self._closed

    def _raise_closed(self) -> None:
        raise NotImplementedError

    def _teardown_due(self) -> bool:
        raise NotImplementedError

    def _teardown(self) -> None:
        raise NotImplementedError

    def _wait_idle(self) -> bool:
        """With the lock held, after the close was flagged (calls woken): wait
        for the calls of other threads to leave (they wake at once). False if
        a call is still in progress, e.g. further up this thread's stack
        (close() from a signal handler): that call tears down when it leaves."""
        me = threading.get_ident()
        self._idle.wait_for(lambda: not (set(self._active) - {me}), timeout=5.0)
        return not self._active


class _Active:
    """Marks a call in progress so ``close()`` never tears down under it."""

    __slots__ = ("g",)

    def __init__(self, g: Guarded) -> None:
        self.g = g

    def __enter__(self) -> None:
        g = self.g
        me = threading.get_ident()
        # Register first, then look at the state: a close() that runs in
        # between (a signal handler in this very thread, the lock being
        # re-entrant) either tore down before we registered, and we see it,
        # or saw us registered and left the teardown to __exit__.
        with g._lock:
            g._active[me] = g._active.get(me, 0) + 1
            refused = g._refuses_calls()
        if refused:
            self.__exit__()
            g._raise_closed()

    def __exit__(self, *exc: object) -> None:
        g = self.g
        with g._lock:
            me = threading.get_ident()
            k = g._active[me] - 1
            if k:
                g._active[me] = k
            else:
                del g._active[me]
            last = g._teardown_due()
            g._idle.notify_all()
        if last:
            g._teardown()
