# Runs anywhere: no root, no network.
import asyncio

import netring_chan as nc
from netring_chan.testing import MemorySource


async def main() -> None:
    src = MemorySource([bytes(60)] * 5)
    svc = nc.CaptureService(src)
    async with svc.asyncio() as rx:             # starts the service; leaving stops it
        pkt = await rx.get()                    # = await rx.receive()
        batch = await rx.get_batch()            # the rest of the current batch
        print(len(pkt.data), len(batch))
        src.push([bytes(64)] * 3)
        async for pkt in rx:                    # ends when the service stops
            print(pkt.caplen)
            break
    print(svc.stats().delivered)


asyncio.run(main())
