"""netring_chan: Linux packet capture and injection for Python.

Layering (arrows point down only; this module only re-exports):

* services, one OS thread per source or injector over one bounded-queue
  policy (``_queue``), with sync, asyncio (janus) and trio faces:
  ``threads`` (``CaptureService``) and ``inject_service`` (``InjectService``);
* fd-driven async faces without threads: ``aio`` (``AsyncCapture``,
  ``TrioCapture``), ``aio_inject`` (``AsyncInjector``); ``bridge``;
* ``rings``: the kernel rings, ``Capture`` (TPACKET_V3 RX) and ``Injector``
  (TPACKET_V2 TX), and the lease-tracked mapping they share;
* ``packet``: zero-copy ``Packet``/``PacketBatch`` and owned copies;
* ``_sys`` (errno to exceptions, EINTR-safe waits) and ``_lowlevel``, the
  cffi extension built from the kernel headers (``_build``).
"""

from .aio import AsyncCapture, AsyncCaptureStatistics, PacketStream, TrioCapture
from .bpf import BpfProgram, compile_filter
from .errors import (
    CapabilityError, ClosedError, ConfigError, FilterError, InterfaceNotFoundError,
    LibpcapMissingError, MalformedBlockError, NetringError, ReleasedError, RingError,
)
from .packet import Direction, OwnedBatch, OwnedPacket, Packet, PacketBatch, Status
from .rings.afpacket import (
    Capture, CaptureConfig, CaptureStats, Fanout, FanoutFlag, FanoutMode, RingShrunkWarning,
    TimestampSource,
)
from .aio_inject import AsyncInjector
from .bridge import Bridge, BridgeDirection, BridgeStats, DirectionStats, Verdict
from .rings.inject import Injector, InjectorConfig, InjectorStats, RingFullError, TxSlot
from .inject_service import AsyncioSender, InjectService, InjectServiceStats, TrioSendChannel
from .threads import (
    AsyncioReceiver, CaptureService, CaptureSource, Overflow, ServiceError, ServiceStats, SourceStats,
    TrioReceiveChannel,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncCapture", "AsyncCaptureStatistics", "PacketStream", "TrioCapture",
    "BpfProgram", "compile_filter",
    "CapabilityError", "ClosedError", "ConfigError", "FilterError", "InterfaceNotFoundError",
    "LibpcapMissingError", "MalformedBlockError", "NetringError", "ReleasedError", "RingError",
    "Direction", "OwnedBatch", "OwnedPacket", "Packet", "PacketBatch", "Status",
    "Capture", "CaptureConfig", "CaptureStats", "Fanout", "FanoutFlag", "FanoutMode",
    "RingShrunkWarning", "TimestampSource",
    "Injector", "InjectorConfig", "InjectorStats", "RingFullError", "TxSlot",
    "AsyncioSender", "InjectService", "InjectServiceStats", "TrioSendChannel",
    "AsyncInjector", "Bridge", "BridgeDirection", "BridgeStats", "DirectionStats", "Verdict",
    "AsyncioReceiver", "CaptureService", "CaptureSource", "Overflow", "ServiceError", "ServiceStats",
    "SourceStats", "TrioReceiveChannel",
]
