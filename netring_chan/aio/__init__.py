"""fd-driven async faces, without a thread: ``AsyncCapture`` and ``AsyncInjector``.

Each waits on its ring's fd in the event loop itself, through the one loop
backend of ``netring_chan._loops`` (asyncio, trio, or anyio on either, picked
by ``sniffio``). ``TrioCapture`` is ``AsyncCapture`` under its older name.
"""

from .capture import AsyncCapture, AsyncCaptureStatistics, PacketStream, TrioCapture
from .inject import AsyncInjector

__all__ = ["AsyncCapture", "TrioCapture", "PacketStream", "AsyncCaptureStatistics", "AsyncInjector"]
