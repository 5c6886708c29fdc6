"""Capture on one interface with the thread service, consumed by asyncio.

    sudo python3 examples/capture_asyncio.py eth0 --duration 10 [--count 100] [--filter "arp"]

The capture thread feeds a janus queue; the coroutine below awaits packets
without ever blocking the event loop (a ticker task keeps running beside it).
"""

from __future__ import annotations

import asyncio
import time

import netring_chan as nc
from capture_sync import describe, parse, summary


async def consume(rx: nc.AsyncioReceiver, count: int | None, seen: list[int]) -> None:
    async for pkt in rx:
        seen[0] += 1
        print(describe(pkt), flush=True)
        if count is not None and seen[0] >= count:
            break


async def amain(argv: list[str] | None = None) -> None:
    args = parse(argv)
    svc = nc.CaptureService(nc.Capture(args.interface, filter=args.filter), capacity=100_000)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.1)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    seen = [0]
    async with svc.asyncio() as rx:
        print(f"listening on {args.interface}", flush=True)
        task = asyncio.create_task(consume(rx, args.count, seen))
        done, _ = await asyncio.wait({task}, timeout=args.duration)
        if task in done:
            task.result()
        else:
            task.cancel()  # cancellation is clean: nothing is lost or leaked
            try:
                await task
            except asyncio.CancelledError:
                pass
    tick_task.cancel()
    print(summary(svc, seen[0]), flush=True)
    print(f"event loop ticks meanwhile: {ticks}")


def main(argv: list[str] | None = None) -> None:
    t0 = time.monotonic()
    asyncio.run(amain(argv))
    print(f"ran {time.monotonic() - t0:.2f} s")


if __name__ == "__main__":
    main()
