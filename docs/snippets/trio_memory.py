# Runs anywhere: no root, no network.
import trio

import netring_chan as nc
from netring_chan.testing import MemorySource


async def worker(name: str, rx, counts: dict) -> None:
    async with rx:                              # each clone closes itself
        async for pkt in rx:
            counts[name] = counts.get(name, 0) + 1


async def main() -> None:
    svc = nc.CaptureService(MemorySource([bytes(60)] * 100))
    counts: dict = {}
    async with svc.trio() as rx:                # a trio.abc.ReceiveChannel
        async with trio.open_nursery() as nursery:
            for name in ("a", "b"):             # each packet goes to exactly one clone
                nursery.start_soon(worker, name, rx.clone(), counts)
            await trio.sleep(0.5)
            svc.stop()                          # the clones see the end of the stream
    print(sum(counts.values()))                 # 100


trio.run(main)
