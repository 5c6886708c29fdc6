# Runs anywhere: no root, no network. The same code on both anyio backends.
import anyio

import netring_chan as nc
from netring_chan.testing import MemorySource


async def main() -> None:
    svc = nc.CaptureService(MemorySource([bytes(60)] * 20))
    n = 0
    async with svc.channel() as rx:             # the face of the running loop
        with anyio.move_on_after(0.5):
            async for pkt in rx:
                n += 1
    print(n)                                    # 20


for backend in ("asyncio", "trio"):
    anyio.run(main, backend=backend)
