"""The AF_PACKET backend: TPACKET_V3 receive rings, TPACKET_V2 transmit rings.

* ``rx`` — ``Capture``, a receive ring (a ``Source``);
* ``tx`` — ``Injector``, a transmit ring (a ``Sink``);
* ``blocks`` — the validating walk of a V3 block and the memory a ring reuses;
* ``bpf`` — classic BPF filters (tcpdump expressions through libpcap);
* ``fanout`` — fanout groups;
* ``frames`` — the one check of a frame before it is queued.
"""

from .bpf import BpfProgram, compile_filter
from .fanout import Fanout, FanoutFlag, FanoutMode
from .rx import Capture, CaptureConfig, CaptureStats, RingShrunkWarning, TimestampSource
from .tx import Injector, InjectorConfig, InjectorStats, TxSlot

__all__ = [
    "BpfProgram", "compile_filter",
    "Fanout", "FanoutFlag", "FanoutMode",
    "Capture", "CaptureConfig", "CaptureStats", "RingShrunkWarning", "TimestampSource",
    "Injector", "InjectorConfig", "InjectorStats", "TxSlot",
]
