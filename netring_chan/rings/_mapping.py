"""A shared ring mapping whose lifetime follows the views into it.

Every region lent out of the mapping (a ring block, a TX slot, a UMEM frame)
is a cdata *lease* made with ``ffi.gc``: its destructor runs when the last
Python object that can address the region dies (the batch, a memoryview of it,
or a slice of that memoryview). The mapping is unmapped only after ``close()``
*and* the last lease, and the socket fd is closed only after the unmap, as
packet_mmap.rst asks. Reading through a live view is therefore always reading
mapped memory; the owners of views decide when that memory goes back to the
kernel (see ``PacketBatch.release``).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from .._lowlevel import ffi, lib
from .. import _fork
from .._sys import check
from ..errors import ConfigError

__all__ = ["Mapping", "check_ring_size", "RING_SHARE"]

#: The largest share of the machine's memory one ring may lock by default.
RING_SHARE = 4  # a quarter


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_ring_size(total: int, what: str, max_ring_bytes: int | None) -> None:
    """Refuse a ring of ``total`` bytes beyond its limit (``ConfigError`` saying how to ask for more).

    Ring memory is locked kernel memory: nothing swaps it out, and a second
    oversized ring takes the host down. The default limit is a quarter of the
    machine's memory; ``max_ring_bytes`` sets another on purpose. Either way
    the ring must fit in the memory available now.
    """
    if max_ring_bytes is not None and (not isinstance(max_ring_bytes, int) or isinstance(max_ring_bytes, bool)
                                       or max_ring_bytes <= 0):
        raise ConfigError(f"max_ring_bytes must be a positive int, got {max_ring_bytes!r}")
    if max_ring_bytes is None:
        phys = _meminfo("MemTotal")
        limit = None if phys is None else phys // RING_SHARE
        if limit is not None and total > limit:
            raise ConfigError(
                f"ring too large: {what} = {total} bytes of locked kernel memory exceeds the "
                f"default limit of a quarter of this machine's memory ({limit} bytes); pass "
                f"max_ring_bytes={total} (or more) to allow it on purpose")
    elif total > max_ring_bytes:
        raise ConfigError(f"ring too large: {what} = {total} bytes exceeds max_ring_bytes={max_ring_bytes}")
    avail = _meminfo("MemAvailable")
    if avail is not None and total > avail:
        raise ConfigError(f"ring too large: {what} = {total} bytes does not fit in available memory "
                          f"({avail} bytes)")


class Mapping:
    """``mmap`` of a ring on ``fd``; owns the fd from construction on.

    ``fd=-1``: anonymous private memory instead (an AF_XDP UMEM, which the
    socket registers rather than maps); ``on_unmapped`` still runs after
    the unmap, to release what must outlive the memory.
    """

    def __init__(self, fd: int, size: int, *, on_unmapped: Callable[[], None], populate: bool = False) -> None:
        self.size = size
        self._on_unmapped = on_unmapped
        self._lock = threading.RLock()
        self._leases = 0
        self._closing = False
        # In a child made by fork() the mapping is shared with the parent:
        # the child never hands a region back or unmaps (see _fork).
        self._forked = False
        _fork.track(self)
        flags = (lib.MAP_SHARED if fd >= 0 else lib.MAP_PRIVATE | lib.MAP_ANONYMOUS) \
            | (lib.MAP_POPULATE if populate else 0)
        addr = lib.mmap(ffi.NULL, size, lib.PROT_READ | lib.PROT_WRITE, flags, fd, 0)
        if addr == ffi.cast("void *", -1):
            check(-1, f"mmap of a {size}-byte {'ring' if fd >= 0 else 'UMEM'}")
        self.addr: Any = ffi.cast("uint8_t *", addr)

    def _after_fork_in_child(self) -> None:
        self._forked = True
        self._lock = threading.RLock()

    @property
    def unmapped(self) -> bool:
        return self.addr is None

    def lease(self, offset: int, on_free: Callable[[], None]) -> Any:
        """A ``uint8_t *`` at ``offset``; ``on_free`` runs when it dies."""
        with self._lock:
            if self.addr is None:
                raise RuntimeError("lease on an unmapped ring")
            self._leases += 1
            ptr = self.addr + offset

        def _free(_p: Any, self: Mapping = self) -> None:
            if self._forked:
                return
            try:
                on_free()
            finally:
                with self._lock:
                    self._leases -= 1
                    last = self._closing and self._leases == 0
                if last:
                    self._unmap()

        return ffi.gc(ptr, _free)

    def close(self) -> bool:
        """Unmap now if nothing is lent, else when the last lease dies.

        Returns True if the mapping is gone on return.
        """
        if self._forked:
            return False
        with self._lock:
            self._closing = True
            now = self._leases == 0
        if now:
            self._unmap()
        return now

    def _unmap(self) -> None:
        with self._lock:
            addr, self.addr = self.addr, None
        if addr is not None:
            lib.munmap(addr, self.size)
            self._on_unmapped()
