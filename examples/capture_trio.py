"""Capture on one interface with the thread service, consumed by trio.

    sudo python3 examples/capture_trio.py eth0 --duration 10 [--count 100] [--filter "icmp"]

``svc.trio()`` gives a receive channel fed from the capture thread through
the trio token; leaving the block (or a cancel scope) stops the service.
"""

from __future__ import annotations

import trio

import netring_chan as nc
from capture_sync import describe, parse, summary


async def amain(argv: list[str] | None = None) -> None:
    args = parse(argv)
    svc = nc.CaptureService(nc.Capture(args.interface, filter=args.filter), capacity=100_000)
    n = 0
    async with svc.trio() as rx:
        print(f"listening on {args.interface}", flush=True)
        with trio.move_on_after(args.duration):
            async for pkt in rx:
                n += 1
                print(describe(pkt), flush=True)
                if args.count is not None and n >= args.count:
                    break
    print(summary(svc, n), flush=True)


def main(argv: list[str] | None = None) -> None:
    trio.run(amain, argv)


if __name__ == "__main__":
    main()
