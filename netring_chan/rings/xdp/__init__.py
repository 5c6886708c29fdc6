"""The AF_XDP backend: ``XdpSocket`` (a ``Source`` and a ``Sink`` over one
UMEM and its four rings) and ``XdpProgram`` (its XDP redirect program).

* ``socket`` — ``XdpSocket``, ``XdpConfig``, ``XdpMode``, ``XdpStats``;
* ``program`` — ``XdpProgram``, ``XdpAttach``: the eBPF redirect into an
  XSKMAP, loaded with bpf(2) and attached with a BPF link;
* ``_ebpf`` — the tiny eBPF assembler the program is written with.
"""

from .program import XdpAttach, XdpProgram
from .socket import XdpConfig, XdpMode, XdpSocket, XdpStats

__all__ = ["XdpSocket", "XdpConfig", "XdpMode", "XdpStats", "XdpAttach", "XdpProgram"]
