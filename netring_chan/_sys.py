"""The one place where system-call results become exceptions.

``check(rc, what)`` turns a failed call into the right exception class, and
``retry_eintr`` / ``poll_wait`` are the only ways the library blocks, so a
signal landing during a wait never surfaces as an error (PEP 475 semantics:
the handler runs, the call resumes with the remaining time).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from typing import Callable, TypeVar

from ._lowlevel import ffi, lib
from .errors import CapabilityError, ConfigError, InterfaceNotFoundError, RingError

T = TypeVar("T")

# Which capability a refused operation needs, by what was being done.
_CAPS = {
    "socket": "CAP_NET_RAW",
    "promiscuous": "CAP_NET_RAW",  # PACKET_MR_PROMISC: no check beyond the socket's
    "busy_poll": "CAP_NET_ADMIN",
    "bpf": "CAP_BPF",
    "xdp": "CAP_NET_ADMIN",
    "netns": "CAP_SYS_ADMIN",
    "xdp_program": "CAP_BPF,CAP_NET_ADMIN",  # an XSKMAP or XDP program needs both (or CAP_SYS_ADMIN)
}


def raise_errno(err: int, what: str, *, interface: str | None = None, cap: str | None = None) -> None:
    """Raise the exception for ``err`` (an errno value) while doing ``what``."""
    if err in (errno.EPERM, errno.EACCES):
        raise CapabilityError(err, what, _CAPS.get(cap or "socket", "CAP_NET_RAW"))
    if err == errno.ENODEV and interface is not None:
        raise InterfaceNotFoundError(interface)
    if err == errno.EINVAL:
        raise ConfigError(f"{what}: the kernel rejected the value (EINVAL)")
    raise RingError(err, f"{what}: {os.strerror(err)}")


def check(rc: int, what: str, **kw: str) -> int:
    """Return ``rc`` if it is not negative, else raise for the current errno."""
    if rc < 0:
        raise_errno(ffi.errno, what, **kw)
    return rc


def check_timeout(timeout: object, what: str = "timeout") -> None:
    """``ConfigError`` unless ``timeout`` is ``None`` or a number of seconds >= 0
    (a bool, a string or NaN is refused, not coerced)."""
    if timeout is None:
        return
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout >= 0:
        raise ConfigError(f"{what} must be a number >= 0 (seconds) or None, got {timeout!r}")


def deadline_after(timeout: float | None, what: str = "timeout") -> float | None:
    """The ``time.monotonic()`` value ``timeout`` seconds from now (``None``:
    never), after checking ``timeout`` (``check_timeout``)."""
    if timeout is None:
        return None
    check_timeout(timeout, what)
    return time.monotonic() + timeout


def retry_eintr(call: Callable[[], int], what: str) -> int:
    """Run a C call that returns -1/errno, retrying on EINTR."""
    while True:
        rc = call()
        if rc >= 0:
            return rc
        err = ffi.errno
        if err != errno.EINTR:
            raise_errno(err, what)


_POLL_MAX_S = 2_000_000.0


def poll_wait(fd: int, events: int, wake_fd: int, timeout: float | None) -> int:
    """Wait until ``fd`` is ready for ``events`` or ``wake_fd`` is readable.

    Returns the bit set of ``nc_poll2`` (1 ready, 2 woken, 4 error), 0 on
    timeout. ``timeout=None`` waits forever. EINTR re-waits for what is left.
    """
    deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
    while True:
        if deadline is None:
            ms = -1
        else:
            # poll() takes an int of ms: wait at most ~23 days per call (the
            # loop waits again for the rest), so a long or infinite timeout
            # is not an OverflowError.
            left = min(deadline - time.monotonic(), _POLL_MAX_S)
            ms = 0 if left <= 0 else max(1, int(left * 1000 + 0.999))
        r = lib.nc_poll2(fd, events, wake_fd, ms)
        if r >= 0:
            return int(r)
        if r != -errno.EINTR:
            raise_errno(-r, "poll")


def socket_error(fd: int) -> int:
    """Read and clear the pending error of socket ``fd`` (SO_ERROR)."""
    val = ffi.new("int *")
    ln = ffi.new("socklen_t *", ffi.sizeof("int"))
    check(lib.getsockopt(fd, lib.SOL_SOCKET, lib.SO_ERROR, val, ln), "getsockopt(SO_ERROR)")
    return int(val[0])


def interface_gone(who: str) -> RingError:
    """The one error for "the interface went down or was removed", whoever
    met it (capture, injection, the bridge): ``RingError`` with ENETDOWN."""
    return RingError(errno.ENETDOWN, f"{who}: interface went down or was removed")


def pending_error(fd: int, who: str) -> RingError | None:
    """The socket's pending error (SO_ERROR, read and cleared) as a ``RingError``
    naming ``who``, or None. ENETDOWN is what a packet socket gets when its
    interface goes down or is unregistered."""
    err = socket_error(fd)
    if not err:
        return None
    if err == errno.ENETDOWN:
        return interface_gone(who)
    return RingError(err, f"{who}: {os.strerror(err)}")


def setsockopt_int(fd: int, level: int, opt: int, value: int, what: str, cap: str | None = None) -> None:
    v = ffi.new("int *", value)
    if lib.setsockopt(fd, level, opt, v, ffi.sizeof("int")) < 0:
        raise_errno(ffi.errno, what, cap=cap)


def setsockopt_struct(fd: int, level: int, opt: int, cdata: object, what: str, cap: str | None = None) -> None:
    """``setsockopt`` with a struct; ``cdata`` may be the struct or a pointer to it.

    optlen is the size of the struct itself: ``ffi.sizeof`` of a pointer
    (what ``ffi.new("struct x *")`` returns) is the pointer's 8 bytes, which
    the kernel rejects for e.g. ``SO_ATTACH_FILTER`` (16-byte ``sock_fprog``).
    """
    t = ffi.typeof(cdata)
    size = ffi.sizeof(t.item) if t.kind == "pointer" else ffi.sizeof(cdata)
    if lib.setsockopt(fd, level, opt, cdata, size) < 0:
        raise_errno(ffi.errno, what, cap=cap)


def ifindex(name: str) -> int:
    """Interface index of ``name`` in the calling thread's network namespace."""
    if not isinstance(name, str) or not name or len(name) > 15 or "/" in name or "\0" in name:
        raise ConfigError(f"interface must be a name (a str of 1 to 15 characters, no '/' or NUL), got {name!r}")
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise InterfaceNotFoundError(name) from None


def eventfd() -> int:
    return check(lib.eventfd(0, lib.EFD_CLOEXEC | lib.EFD_NONBLOCK), "eventfd")


def eventfd_signal(fd: int) -> None:
    one = ffi.new("uint64_t *", 1)
    lib.write(fd, one, 8)  # EAGAIN only if already signalled 2**64-2 times


def close_fd(fd: int) -> None:
    """Close ``fd``; EINTR on close must not be retried on Linux (the fd is gone)."""
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def set_thread_name(name: str) -> None:
    """Name the calling OS thread for ps/top/gdb (the kernel keeps 15 bytes)."""
    buf = ffi.new("char[]", name.encode("utf-8", "replace")[:15])  # kept alive across the call
    lib.prctl(lib.PR_SET_NAME, ffi.cast("unsigned long", buf), 0, 0, 0)


def set_parent_death_signal(sig: int) -> None:
    """Have the kernel send ``sig`` to this process when the thread that made it exits."""
    check(lib.prctl(lib.PR_SET_PDEATHSIG, sig, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def enter_netns(path: str) -> None:
    """Move the calling thread into the network namespace at ``path`` (needs CAP_SYS_ADMIN)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        check(lib.setns(fd, lib.CLONE_NEWNET), f"setns({path})", cap="netns")
    finally:
        os.close(fd)
