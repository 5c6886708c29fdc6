"""Opening an AF_PACKET socket the one safe way.

The socket is created with protocol 0, so it receives nothing until it is
bound; the caller's ``setup`` sets the version, the ring, the filter and the
options and binds last (packet_mmap.rst: nothing from another interface, or
that the filter rejects, ever lands in the ring). If setup fails, what it
made is released in the right order: a ring that was mapped is unmapped
before its fd is closed (``Mapping.close`` closes the fd after the unmap).
"""

from __future__ import annotations

from typing import Callable

from ..._lowlevel import lib
from ..._sys import check, close_fd
from .._mapping import Mapping

__all__ = ["open_packet_socket"]


def open_packet_socket(setup: Callable[[int], None], mapping_of: Callable[[], Mapping | None]) -> int:
    """A new ``AF_PACKET`` raw socket, set up by ``setup(fd)``; released if setup raises."""
    fd = check(lib.socket(lib.AF_PACKET, lib.SOCK_RAW | lib.SOCK_CLOEXEC, 0), "socket(AF_PACKET)")
    try:
        setup(fd)
    except BaseException:
        mapping = mapping_of()
        if mapping is not None:
            mapping.close()
        else:
            close_fd(fd)
        raise
    return fd
