"""The kernel backends, one package each; every one is a ``Source`` and/or a
``Sink`` of ``netring_chan.contract``. Nothing here imports the services or
the async faces.

* ``afpacket`` — AF_PACKET: ``Capture`` (TPACKET_V3 RX ring), ``Injector``
  (TPACKET_V2 TX ring), classic BPF, fanout;
* ``_mapping`` — the lease-tracked ring mapping every backend shares.
"""

from .afpacket import (
    BpfProgram, Capture, CaptureConfig, CaptureStats, Fanout, FanoutFlag, FanoutMode, Injector,
    InjectorConfig, InjectorStats, RingShrunkWarning, TimestampSource, TxSlot, compile_filter,
)

__all__ = [
    "BpfProgram", "compile_filter",
    "Capture", "CaptureConfig", "CaptureStats", "Fanout", "FanoutFlag", "FanoutMode",
    "RingShrunkWarning", "TimestampSource",
    "Injector", "InjectorConfig", "InjectorStats", "TxSlot",
]
