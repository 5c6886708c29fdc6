"""Ring backends. Each offers the source protocol of ../DESIGN.md:
``next_batch()``, ``next_batch_blocking(timeout)``, ``fileno()``, ``stats()``,
``close()`` and the context manager. Nothing here imports the thread layer."""

from .afpacket import (
    Capture, CaptureConfig, CaptureStats, Fanout, FanoutFlag, FanoutMode, RingShrunkWarning,
    TimestampSource,
)
from .inject import Injector, InjectorConfig, InjectorStats, RingFullError, TxSlot

__all__ = [
    "Capture", "CaptureConfig", "CaptureStats", "Fanout", "FanoutFlag", "FanoutMode",
    "RingShrunkWarning", "TimestampSource",
    "Injector", "InjectorConfig", "InjectorStats", "RingFullError", "TxSlot",
]
