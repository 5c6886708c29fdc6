"""Exceptions raised by netring_chan.

Each subclasses the stdlib exception users already catch: a missing
capability is a ``PermissionError``, an unknown interface an ``OSError`` with
``ENODEV``, a bad option a ``ValueError``.
"""

from __future__ import annotations

import errno as _errno

__all__ = [
    "NetringError",
    "ConfigError",
    "InterfaceNotFoundError",
    "CapabilityError",
    "RingError",
    "MalformedBlockError",
    "ReleasedError",
    "ClosedError",
    "FilterError",
    "LibpcapMissingError",
    "RingFullError",
    "FileFormatError",
    "ArrowMissingError",
    "VerifierError",
]


class NetringError(Exception):
    """Base class of every exception defined by netring_chan."""


class ConfigError(NetringError, ValueError):
    """An option, ring geometry or filter is invalid; the message names it."""


class InterfaceNotFoundError(NetringError, OSError):
    """The named network interface does not exist (in this namespace)."""

    def __init__(self, name: str) -> None:
        super().__init__(_errno.ENODEV, f"no such network interface: {name!r}")
        self.interface = name


class CapabilityError(NetringError, PermissionError):
    """The kernel refused an operation for lack of a capability."""

    def __init__(self, errno: int, what: str, capability: str) -> None:
        super().__init__(
            errno,
            f"{what}: {_errno_name(errno)}; it needs {capability} "
            f"(run as root or grant it, e.g. setcap {capability.lower()}+ep on the interpreter)",
        )
        self.capability = capability


class RingError(NetringError, OSError):
    """A system call on a ring failed; ``errno`` and the call are kept."""


class RingFullError(NetringError, BlockingIOError):
    """No TX slot became free before the timeout."""


class MalformedBlockError(NetringError, ValueError):
    """A ring block (or file record) failed bounds checking; nothing of it was trusted.

    ``packets``: how many packets the block claimed (they are lost).
    """

    packets = 0


class ReleasedError(NetringError, ValueError):
    """A zero-copy packet or batch was used after its memory was handed back."""


class ClosedError(NetringError, ValueError):
    """The ring, socket or service was used after ``close()``."""


class FileFormatError(NetringError, ValueError):
    """A capture file is not pcap/pcapng or is malformed; ``path`` and
    ``offset`` (of the bad record, in bytes) say where, the message what."""

    def __init__(self, path: str, offset: int, what: str) -> None:
        super().__init__(f"{path}: at offset {offset}: {what}")
        self.path = path
        self.offset = offset


class FilterError(ConfigError):
    """A BPF filter expression or program was rejected."""


class VerifierError(FilterError):
    """The kernel's eBPF verifier refused a program (``BPF_PROG_LOAD``);
    the message ends with the verifier's log, also kept in ``log``, and
    ``errno`` is the load's error (EACCES, or EINVAL)."""

    def __init__(self, errno: int, what: str, log: str) -> None:
        super().__init__(f"{what}: the verifier refused it ({_errno_name(errno)}); its log:\n{log}")
        self.errno = errno
        self.log = log


class LibpcapMissingError(FilterError, ImportError):
    """A tcpdump-style filter needs the system libpcap, which is not installed."""


class ArrowMissingError(NetringError, ImportError):
    """Arrow and Parquet need ``pyarrow``, which is not installed; the message
    names the extra that brings it (``pip install 'netring_chan[arrow]'``)."""


def _errno_name(e: int) -> str:
    return f"[{_errno.errorcode.get(e, 'E?')}] {__import__('os').strerror(e)}"
