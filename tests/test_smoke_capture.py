import time
from lab import frame, mac
import netring_chan as nc

def test_smoke(lab):
    with nc.Capture(lab.a, block_size=1 << 16, block_count=4, block_timeout_ms=10) as cap:
        frames = [frame(mac(1), mac(2), bytes([i]) * (50 + i)) for i in range(20)]
        lab.send(frames)
        got = []
        deadline = time.monotonic() + 3
        while len(got) < 20 and time.monotonic() < deadline:
            b = cap.next_batch_blocking(0.5)
            if b is None:
                continue
            with b:
                got += [bytes(p.data) for p in b if p.protocol == 0x88B5]
        assert got == frames
        print(cap.stats())
