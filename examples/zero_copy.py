"""Read an interface by zero-copy batches: ring blocks lent by the kernel.

    sudo python3 examples/zero_copy.py eth0 --duration 10 [--count 100] [--filter "udp"]

Each batch is one ring block; its packets are views into the ring (no copy).
Leaving ``with batch:`` hands the block back to the kernel at once, and any
view used after that raises ``ReleasedError``. Copy out what must outlive
the block with ``to_owned()``.
"""

from __future__ import annotations

import argparse
import time

import netring_chan as nc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("interface")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--filter", default=None)
    args = p.parse_args(argv)

    n = blocks = 0
    kept: list[nc.OwnedPacket] = []
    end = time.monotonic() + args.duration
    with nc.Capture(args.interface, filter=args.filter, block_timeout_ms=10) as cap:
        print(f"listening on {args.interface}", flush=True)
        while (args.count is None or n < args.count) and time.monotonic() < end:
            batch = cap.next_batch_blocking(timeout=max(0.0, end - time.monotonic()))
            if batch is None:
                continue
            blocks += 1
            with batch:  # the block goes back to the kernel when this ends
                for pkt in batch:
                    if args.count is not None and n >= args.count:
                        break
                    n += 1
                    # pkt.data is a memoryview into the ring: read it here...
                    print(f"{pkt.timestamp_ns / 1e9:.6f} {pkt.wire_len} {bytes(pkt.data[:14]).hex()}", flush=True)
                    kept.append(pkt.to_owned())  # ...and copy what must outlive the block
        st = cap.stats()
    print(f"read {n} packets in {blocks} blocks, kept {len(kept)} copies; "
          f"kernel packets {st.packets}, kernel drops {st.drops}", flush=True)


if __name__ == "__main__":
    main()
