# Runs anywhere: capture (from memory) into a pcapng, then replay it.
import os
import tempfile

import netring_chan as nc
from netring_chan.testing import MemorySource

path = os.path.join(tempfile.mkdtemp(), "out.pcapng")
with nc.open_writer(path, interface="mem0") as w:          # format from the extension
    with nc.CaptureService(MemorySource([bytes(60)] * 50)) as svc:
        while svc.stats().delivered < 50:
            w.write(svc.get_batch(timeout=1.0))            # one C call per batch
        st = svc.stats()
    w.write_stats(ifrecv=st.kernel_packets, ifdrop=st.kernel_drops,
                  osdrop=st.queue_drops, usrdeliv=st.delivered)

with nc.CaptureService(nc.open_reader(path)) as svc:       # ends by itself at the end of the file
    n = sum(1 for _ in svc)
print(n)                                                   # 50
