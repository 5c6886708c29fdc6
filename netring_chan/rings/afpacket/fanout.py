"""AF_PACKET fanout: several sockets on one interface share its packets.

A socket joins a group with ``PACKET_FANOUT`` after it is bound; the kernel
then gives each packet to exactly one member, chosen by the group's mode.
With ``UNIQUEID`` the kernel picks a free group id (read back with
``getsockopt``).
"""

from __future__ import annotations

import dataclasses
import enum

from ..._lowlevel import lib
from ...errors import ConfigError

__all__ = ["Fanout", "FanoutMode", "FanoutFlag"]


class FanoutMode(enum.IntEnum):
    """How a fanout group spreads packets among its sockets."""

    HASH = lib.PACKET_FANOUT_HASH  # by flow hash: a flow stays on one socket
    LB = lib.PACKET_FANOUT_LB  # round robin
    CPU = lib.PACKET_FANOUT_CPU  # by the CPU the packet arrived on
    ROLLOVER = lib.PACKET_FANOUT_ROLLOVER  # fill one socket, then the next
    RANDOM = lib.PACKET_FANOUT_RND
    QM = lib.PACKET_FANOUT_QM  # by the recorded RX queue


class FanoutFlag(enum.IntFlag):
    """Flags of a fanout group (``PACKET_FANOUT_FLAG_*``), combined with ``|``."""
    NONE = 0
    ROLLOVER = lib.PACKET_FANOUT_FLAG_ROLLOVER  # spill to another socket when full
    UNIQUEID = lib.PACKET_FANOUT_FLAG_UNIQUEID  # let the kernel pick a free group id
    IGNORE_OUTGOING = lib.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
    DEFRAG = lib.PACKET_FANOUT_FLAG_DEFRAG  # reassemble IP fragments before hashing


@dataclasses.dataclass(frozen=True)
class Fanout:
    """Join a fanout group: captures with the same ``group_id`` share the load."""

    mode: FanoutMode = FanoutMode.HASH
    group_id: int | None = None
    flags: FanoutFlag = FanoutFlag.NONE

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", FanoutMode(self.mode))
        except ValueError:
            raise ConfigError(f"fanout mode: unknown mode {self.mode!r}") from None
        if not isinstance(self.flags, int) or self.flags & ~sum(FanoutFlag):
            raise ConfigError(f"fanout flags: unknown bits in {self.flags!r}")
        object.__setattr__(self, "flags", FanoutFlag(self.flags))
        if self.group_id is None:
            object.__setattr__(self, "flags", self.flags | FanoutFlag.UNIQUEID)
        elif not isinstance(self.group_id, int) or not 0 <= self.group_id <= 0xFFFF:
            raise ConfigError(f"fanout group_id must be an int in 0..65535, got {self.group_id!r}")
        elif self.flags & FanoutFlag.UNIQUEID:
            raise ConfigError("fanout: UNIQUEID lets the kernel pick the id; leave group_id=None")

    def sockopt(self) -> int:
        """The ``PACKET_FANOUT`` argument, as the signed C int the kernel reads."""
        arg = (self.group_id or 0) | ((int(self.mode) | int(self.flags)) << 16)
        # DEFRAG is the top bit: pass the same 32 bits as a C int.
        return arg - (1 << 32) if arg >= 1 << 31 else arg
