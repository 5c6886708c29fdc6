"""fd-driven async faces without a thread: asyncio and trio.

``AsyncCapture`` (asyncio) and ``TrioCapture`` (trio) wait on the capture
socket's readiness in the event loop itself; ``PacketStream`` is their async
iterator of owned packets. Both are thin faces over one implementation in
``_core`` (the waits are the only part that differs). Neither asyncio nor
trio is imported until a face is created.
"""

from ._asyncio import AsyncCapture
from ._core import AsyncCaptureStatistics, BatchSource, PacketStream
from ._trio import TrioCapture

__all__ = ["AsyncCapture", "TrioCapture", "PacketStream", "AsyncCaptureStatistics", "BatchSource"]
