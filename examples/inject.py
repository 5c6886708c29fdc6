"""Send test frames through a TX ring: sync, asyncio or trio.

    python3 examples/inject.py IFACE [--count 100] [--size 60] [--face sync|asyncio|trio]

Frames carry EtherType 0x88b5 (IEEE local experimental), go to the broadcast
address unless --dst is given, and number themselves in their first payload
bytes. Only point this at an interface you own (a veth in a test namespace).
"""

from __future__ import annotations

import argparse
import struct

import netring_chan as nc


def make_frames(count: int, size: int, dst: bytes, src: bytes) -> list[bytes]:
    out = []
    for i in range(count):
        head = dst + src + b"\x88\xb5" + struct.pack("!I", i)
        out.append(head + bytes(max(0, size - len(head))))
    return out


def run_sync(iface: str, frames: list[bytes]) -> nc.InjectorStats:
    with nc.Injector(iface, frame_count=256) as inj:
        # Zero copy for the first frame, the convenience path for the rest.
        with inj.allocate(len(frames[0])) as slot:
            slot.data[:] = frames[0]
            slot.send()
        inj.send_many(frames[1:])
        inj.wait_drained(timeout=5.0)
        return inj.stats()


async def run_async(iface: str, frames: list[bytes]) -> nc.InjectorStats:
    async with nc.AsyncInjector(iface, frame_count=256) as inj:
        for f in frames:
            await inj.send(f)  # waits for a free slot when the ring is full
        await inj.wait_drained(timeout=5.0)
        return inj.stats()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("interface")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--size", type=int, default=60)
    ap.add_argument("--dst", default="ff:ff:ff:ff:ff:ff")
    ap.add_argument("--face", choices=["sync", "asyncio", "trio"], default="sync")
    a = ap.parse_args()
    dst = bytes.fromhex(a.dst.replace(":", ""))
    frames = make_frames(a.count, a.size, dst, bytes.fromhex("020000000001"))
    if a.face == "sync":
        st = run_sync(a.interface, frames)
    elif a.face == "asyncio":
        import asyncio

        st = asyncio.run(run_async(a.interface, frames))
    else:
        import trio

        st = trio.run(run_async, a.interface, frames)
    print(f"queued {st.queued}, sent {st.sent}, rejected {st.rejected}, ring full {st.ring_full}")


if __name__ == "__main__":
    main()
