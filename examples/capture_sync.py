"""Capture on one interface with the thread service, consumed by plain code.

    sudo python3 examples/capture_sync.py eth0 --duration 10 [--count 100] [--filter "udp port 53"]

A named OS thread reads the kernel ring and copies each block out; this
(main) thread takes the packets one by one. Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import queue
import time

import netring_chan as nc


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("interface")
    p.add_argument("--duration", type=float, default=10.0, help="seconds to capture (default 10)")
    p.add_argument("--count", type=int, default=None, help="stop after this many packets")
    p.add_argument("--filter", default=None, help="tcpdump filter expression (needs libpcap)")
    return p.parse_args(argv)


def describe(pkt: nc.OwnedPacket) -> str:
    direction = getattr(pkt.direction, "name", pkt.direction)
    return f"{pkt.timestamp:.6f} {direction:<10} {pkt.wire_len:5} {pkt.data[:14].hex()}"


def summary(svc: nc.CaptureService, n: int) -> str:
    st = svc.stats()
    return (f"captured {n} packets; kernel packets {st.kernel_packets}, kernel drops {st.kernel_drops}, "
            f"queue drops {st.queue_drops}, left queued {st.queued}")


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    cap = nc.Capture(args.interface, filter=args.filter)
    n = 0
    end = time.monotonic() + args.duration
    with nc.CaptureService(cap, capacity=100_000) as svc:
        print(f"listening on {args.interface}", flush=True)
        try:
            while args.count is None or n < args.count:
                left = end - time.monotonic()
                if left <= 0:
                    break
                try:
                    pkt = svc.get(timeout=left)
                except queue.Empty:
                    break
                n += 1
                print(describe(pkt), flush=True)
        except KeyboardInterrupt:
            print("interrupted")
    print(summary(svc, n), flush=True)


if __name__ == "__main__":
    main()
