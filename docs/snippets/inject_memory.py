# Runs anywhere: no root, no network (a MemorySink stands in for an Injector).
import asyncio

import netring_chan as nc
from netring_chan.testing import MemorySink

frame = bytes.fromhex("ffffffffffff020000000001" "88b5") + bytes(46)   # 60 bytes

sink = MemorySink(capacity=64)
with nc.InjectService(sink) as tx:              # leaving the block normally drains
    tx.send(frame)
    tx.send_many([frame] * 99)
    tx.wait_drained(timeout=2.0)
st = tx.stats()
print(st.submitted, st.sent, st.balanced, len(sink.sent))     # 100 100 True 100


async def main() -> None:
    sink = MemorySink()
    async with nc.AsyncInjector(sink) as inj:   # owns the sink (owns=False to keep it)
        await inj.send(frame)
        await inj.send_many([frame] * 9)        # queued, then flushed
        await inj.flush()
    print(sink.closed, sink.stats().sent)       # True 10


asyncio.run(main())
