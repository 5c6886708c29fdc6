# Runs anywhere: a MemorySource lays frames out as kernel ring blocks and
# hands them out through the same zero-copy walk as a Capture.
import netring_chan as nc
from netring_chan.testing import MemorySource

src = MemorySource([bytes([i]) * 60 for i in range(4)])
batch = src.next_batch()                        # a zero-copy PacketBatch (None when idle)
with batch:                                     # the block goes back on exit
    first = batch[0]
    print(first.data[0], len(batch))            # a memoryview into the block
    kept = batch.to_owned()                     # copies that outlive it
    head = bytes(first.data[:14])               # bytes(...) copies: safe to keep
try:
    first.data                                  # the view died with the batch
except nc.ReleasedError as e:
    print("ReleasedError:", e)
print(kept[3].data[0], head == bytes(14))       # 3 True
src.close()
