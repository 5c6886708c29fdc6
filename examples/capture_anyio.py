"""Capture with the thread service, consumed by code written only against anyio.

    sudo python3 examples/capture_anyio.py eth0 --duration 10 [--count 100] [--filter "icmp"] [--backend trio]

``svc.channel()`` gives the face of whichever event loop is running (asyncio
or trio: the library asks sniffio), so this same code runs on both of
anyio's backends.
"""

from __future__ import annotations

import sys

import anyio

import netring_chan as nc
from capture_sync import describe, parse, summary


async def amain(argv: list[str]) -> None:
    args = parse(argv)
    svc = nc.CaptureService(nc.Capture(args.interface, filter=args.filter), capacity=100_000)
    n = 0
    async with svc.channel() as rx:
        print(f"listening on {args.interface}", flush=True)
        with anyio.move_on_after(args.duration):
            async for pkt in rx:
                n += 1
                print(describe(pkt), flush=True)
                if args.count is not None and n >= args.count:
                    break
    print(summary(svc, n), flush=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    backend = "asyncio"
    if "--backend" in argv:
        i = argv.index("--backend")
        backend = argv[i + 1]
        del argv[i:i + 2]
    anyio.run(amain, argv, backend=backend)


if __name__ == "__main__":
    main()
