# Runs anywhere: no root, no network (a MemorySource stands in for a Capture).
import netring_chan as nc
from netring_chan.testing import MemorySource

frames = [bytes(60) for _ in range(10)]
with nc.CaptureService(MemorySource(frames)) as svc:
    pkt = svc.get(timeout=1.0)                  # one OwnedPacket (queue.Empty on timeout)
    batch = svc.get_batch(timeout=1.0)          # the rest of its batch, an OwnedBatch
    print(len(pkt.data), len(batch), batch.timestamps_ns[0])
    ok = svc.stop(drain=True, timeout=1.0)      # True: consumers took everything queued
st = svc.stats()
print(ok, st.delivered, st.kernel_packets, st.balanced)   # True 10 10 True
