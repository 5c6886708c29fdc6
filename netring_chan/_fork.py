"""What a child made by ``fork()`` may do with what its parent opened: nothing.

A forked child shares its parent's sockets (one open file description) and
ring mappings (``MAP_SHARED``), but none of its threads, and any lock a
parent thread held at the fork stays held for ever in the child. Using such
an object in the child would disturb the parent — a block released by the
child goes back to the kernel under the parent's reader, a filter set or
statistics read by the child change or reset the parent's socket — or
deadlock. So, in the child, every tracked object becomes inert: every use
raises ``ClosedError`` saying why, ``close()`` does nothing, and nothing is
released (the child's copies of the fds are close-on-exec; its copies of the
mappings go when it exits). The parent is undisturbed.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

__all__ = ["track", "forked_error"]

_registry: weakref.WeakSet[Any] = weakref.WeakSet()


def track(obj: Any) -> None:
    """Make ``obj._after_fork_in_child()`` run in every child forked from now on."""
    _registry.add(obj)


def forked_error(what: str, pid: int) -> Exception:
    from .errors import ClosedError

    return ClosedError(f"{what} was opened in process {pid}; this is a child made by fork(), "
                       "where it cannot be used (it shares the parent's socket and ring): "
                       "open a new one in the child")


def _in_child() -> None:
    for obj in list(_registry):
        obj._after_fork_in_child()


os.register_at_fork(after_in_child=_in_child)
