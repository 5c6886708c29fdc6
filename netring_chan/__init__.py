"""netring_chan: Linux packet capture and injection for Python.

Layering (arrows point down only; this module only re-exports):

* the OS-thread services, ``threads`` (``CaptureService``,
  ``InjectService``: one lifecycle, the source loop and the sender loop),
  over one bounded-queue policy (``_queue``) whose asyncio and trio faces
  are written once (``_faces``);
* fd-driven async faces without threads: ``aio`` (``AsyncCapture``,
  ``AsyncInjector``) and ``bridge`` (``Bridge.arun``); every async wait
  goes through ``_loops``, where one rule (sniffio) picks the running loop;
* ``contract``: the ``Source``, ``Sink`` and ``Batch`` protocols and the
  stats records — all the layers above know of a backend;
* ``rings``: the kernel backends, one package each (``rings.afpacket``:
  ``Capture``, ``Injector``, classic BPF, fanout; ``rings.xdp``: ``XdpSocket``,
  ``XdpProgram``); ``testing``:
  ``MemorySource``/``MemorySink`` for tests without root; ``rings.files``
  (also ``netring_chan.files``): pcap/pcapng readers (sources) and writers (sinks);
* ``workers``: fanout worker processes (``WorkerPool``), built on the
  services and the public API;
* ``packet``: zero-copy ``Packet``/``PacketBatch`` and owned copies;
* ``_sys`` (errno to exceptions, EINTR-safe waits) and ``_lowlevel``, the
  cffi extension built from the kernel headers (``_build``).

The trio faces (``TrioReceiveChannel``, ``TrioSendChannel``) subclass
``trio.abc`` classes, so they are made when first asked for: importing
netring_chan does not import trio.
"""

from typing import Any

from ._faces import AsyncioReceiver, AsyncioSender, Receiver, Sender
from ._queue import Overflow, ServiceError
from .aio import AsyncCapture, AsyncCaptureStatistics, AsyncInjector, PacketStream, TrioCapture
from .bridge import Bridge, BridgeDirection, BridgeStats, DirectionStats, Verdict
from .contract import Batch, RxStats, Sink, Source, TxStats
from .errors import (
    CapabilityError, ClosedError, ConfigError, FileFormatError, FilterError, InterfaceNotFoundError,
    LibpcapMissingError, MalformedBlockError, NetringError, ReleasedError, RingError, RingFullError,
)
from .errors import ArrowMissingError
from .packet import Direction, OwnedBatch, OwnedPacket, Packet, PacketBatch, Status
from .rings.afpacket import (
    BpfProgram, Capture, CaptureConfig, CaptureStats, Fanout, FanoutFlag, FanoutMode, Injector,
    InjectorConfig, InjectorStats, RingShrunkWarning, TimestampSource, TxSlot, compile_filter,
)
from .rings.files import FileInterface, Reader, Rotate, Writer, open_reader, open_writer
from .rings.files import ParquetWriter, open_parquet
from .rings.xdp import XdpAttach, XdpConfig, XdpMode, XdpProgram, XdpSocket, XdpStats
from .errors import VerifierError
from .threads import CaptureService, InjectService, InjectServiceStats, ServiceStats, SourceStats
from .workers import WorkerContext, WorkerError, WorkerPool, WorkerPoolStats, WorkerStats

__version__ = "0.1.0"

__all__ = [
    "Batch", "Source", "Sink", "RxStats", "TxStats",
    "AsyncCapture", "AsyncCaptureStatistics", "PacketStream", "TrioCapture", "AsyncInjector",
    "BpfProgram", "compile_filter",
    "CapabilityError", "ClosedError", "ConfigError", "FileFormatError", "FilterError", "InterfaceNotFoundError",
    "LibpcapMissingError", "MalformedBlockError", "NetringError", "ReleasedError", "RingError",
    "RingFullError",
    "Direction", "OwnedBatch", "OwnedPacket", "Packet", "PacketBatch", "Status",
    "Capture", "CaptureConfig", "CaptureStats", "Fanout", "FanoutFlag", "FanoutMode",
    "RingShrunkWarning", "TimestampSource",
    "Injector", "InjectorConfig", "InjectorStats", "TxSlot",
    "open_reader", "open_writer", "Reader", "Writer", "Rotate", "FileInterface",
    "open_parquet", "ParquetWriter", "ArrowMissingError",
    "XdpSocket", "XdpConfig", "XdpMode", "XdpStats", "XdpAttach", "XdpProgram", "VerifierError",
    "Bridge", "BridgeDirection", "BridgeStats", "DirectionStats", "Verdict",
    "CaptureService", "InjectService", "InjectServiceStats", "Overflow", "ServiceError",
    "ServiceStats", "SourceStats",
    "Receiver", "Sender", "AsyncioReceiver", "AsyncioSender", "TrioReceiveChannel", "TrioSendChannel",
    "WorkerPool", "WorkerContext", "WorkerError", "WorkerPoolStats", "WorkerStats",
]


def __getattr__(name: str) -> Any:
    # The trio faces are made on first use (they subclass trio.abc classes).
    if name in ("TrioReceiveChannel", "TrioSendChannel"):
        from ._faces import _trio_classes

        rx, tx = _trio_classes()
        return rx if name == "TrioReceiveChannel" else tx
    raise AttributeError(f"module 'netring_chan' has no attribute {name!r}")
