"""Per-packet cost breakdown of every consumer face (issue 12). No root.

    python3 bench/breakdown.py [--packets N] [--runs K] [--json FILE]

Everything runs in memory: TPACKET_V3 blocks laid out byte for byte as the
kernel writes them (``netring_chan.testing.tpacket_v3_block``), 64-byte
frames, 1 MiB blocks, walked by the real walker (``walk_block``) and copied
out by the real copy-out (``PacketBatch.to_owned``). The services read the
same blocks through a ``MemorySource`` (the same walk and copy-out, in the
service's own thread). The peer is pypcap reading the same frames from a
pcap file on tmpfs with ``dispatch(-1, cb)``.

Each figure is ns per packet (``time.perf_counter_ns`` over all packets
divided by their count), the median of ``--runs`` runs. See bench/README.md,
"Per-packet breakdown (issue 12)", for what each row includes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import threading
import time
from collections import deque, namedtuple
from itertools import islice, repeat, starmap
from operator import itemgetter
from typing import Any, Callable

import netring_chan as nc
from netring_chan._lowlevel import ffi
from netring_chan._fastpath import PacketAiter, Packets
from netring_chan.packet import OwnedPacket, PacketCursor
from netring_chan.rings.afpacket.blocks import Lease, Scratch, walk_block
from netring_chan.testing import MemorySource, _record_size, tpacket_v3_block

BLOCK = 1 << 20
FRAME = bytes(i & 0xFF for i in range(int(os.environ.get("NCBENCH_FRAME_LEN", "64"))))
SNAP = 0xFFFFFFFF
TS0 = 1_700_000_000_000_000_000
_BLK_HDR = ffi.sizeof("struct tpacket_block_desc")


# -- the blocks -------------------------------------------------------------------------

def make_blocks(packets: int) -> tuple[list[bytearray], int, int]:
    """Distinct copies of one full 1 MiB block: (blocks, packets per block, total packets)."""
    k = (BLOCK - _BLK_HDR) // _record_size(len(FRAME))
    nblocks = -(-packets // k)
    tmpl = tpacket_v3_block([FRAME] * k, [TS0 + i for i in range(k)], size=BLOCK)
    return [bytearray(tmpl) for _ in range(nblocks)], k, nblocks * k


def fill(src: MemorySource, blocks: list[bytearray], k: int) -> None:
    """What ``src.push`` does, with the blocks already laid out (push lays
    them out in Python at ~11 us per frame, too slow to repeat per run)."""
    with src._lock:
        for blk in blocks:
            src._packets += k
            src._seq += 1
            b = bytearray(blk)
            ffi.cast("struct tpacket_block_desc *", ffi.from_buffer(b)).hdr.bh1.seq_num = src._seq
            src._blocks.append((k, b))
        src._cond.notify_all()


# -- helpers ---------------------------------------------------------------------------

def median_of(runs: int, fn: Callable[[], dict[str, float]]) -> dict[str, float]:
    got: dict[str, list[float]] = {}
    for _ in range(runs):
        for key, v in fn().items():
            got.setdefault(key, []).append(v)
    return {key: statistics.median(v) for key, v in got.items()}


def ctxsw(tid: int) -> int:
    """Voluntary + involuntary context switches of one thread so far."""
    n = 0
    with open(f"/proc/self/task/{tid}/status") as f:
        for line in f:
            if "ctxt_switches" in line:
                n += int(line.split()[-1])
    return n


# -- stages 1-4: walk, copy-out, OwnedPacket creation, attribute reads ------------------

def stages(blocks: list[bytearray], total: int) -> dict[str, float]:
    scratch = Scratch()
    walk = copy = rel = 0
    obs = []
    pc = time.perf_counter_ns
    for blk in blocks:
        t0 = pc()
        b = walk_block(Lease(ffi.from_buffer("uint8_t[]", blk), len(blk)), SNAP, scratch)
        t1 = pc()
        ob = b.to_owned()
        t2 = pc()
        b.release()
        t3 = pc()
        walk += t1 - t0
        copy += t2 - t1
        rel += t3 - t2
        obs.append(ob)
    r = {"walk": walk, "copy-out": copy, "release": rel}

    t0 = pc()
    its = [iter(ob) for ob in obs]  # builds each batch's column views (once per batch)
    r["iter() + columns"] = pc() - t0
    t0 = pc()
    for it in its:
        deque(it, 0)  # C-driven: build each OwnedPacket and drop it
    r["create+drop (C loop)"] = pc() - t0

    def py_floor() -> None:
        for ob in obs:
            for d in ob.datas():
                pass

    def py_create() -> None:
        for ob in obs:
            for p in ob:
                pass

    def owned_touch() -> int:
        nbytes = 0
        for ob in obs:
            for p in ob:
                nbytes += len(p.data)
                ts = p.timestamp_ns  # noqa: F841
        return nbytes

    def bulk_touch() -> int:
        nbytes = 0
        for ob in obs:
            for d, ts in zip(ob.datas(), ob.timestamps_ns):
                nbytes += len(d)
        return nbytes

    for name, fn in (("for loop floor", py_floor), ("for p in ob: pass", py_create),
                     ("owned per packet + touch", owned_touch), ("bulk datas()+ts + touch", bulk_touch)):
        t0 = pc()
        fn()
        r[name] = pc() - t0

    # Attribute reads on packets that already exist (a list per batch, made untimed).
    reads = {"p.data": 0, "len(p.data)": 0, "p.timestamp_ns": 0, "touch": 0, "floor": 0}
    for ob in obs:
        pk = list(ob)
        t0 = pc()
        for p in pk:
            pass
        t1 = pc()
        for p in pk:
            p.data
        t2 = pc()
        for p in pk:
            len(p.data)
        t3 = pc()
        for p in pk:
            p.timestamp_ns
        t4 = pc()
        nbytes = 0
        for p in pk:
            nbytes += len(p.data)
            ts = p.timestamp_ns  # noqa: F841
        t5 = pc()
        reads["floor"] += t1 - t0
        reads["p.data"] += t2 - t1 - (t1 - t0)
        reads["len(p.data)"] += t3 - t2 - (t1 - t0)
        reads["p.timestamp_ns"] += t4 - t3 - (t1 - t0)
        reads["touch"] += t5 - t4 - (t1 - t0)
        del pk
    for key, v in reads.items():
        r["read " + key] = v
    obs.clear()
    its.clear()
    return {key: v / total for key, v in r.items()}


# -- stage 5/6: the service faces --------------------------------------------------------
#
# Each consumer returns (nbytes, wall ns, consumer CPU ns, consumer context switches),
# measured around its own loop only (face set-up and the stop are outside).

_PRODUCER: list[Any] = []  # (CPU clock id, native thread id) of the service's thread


def _clock() -> tuple[int, int, int]:
    return time.perf_counter_ns(), time.thread_time_ns(), ctxsw(threading.get_native_id())


def _done(t: tuple[int, int, int], nbytes: int) -> tuple[int, ...]:
    """Read every clock at the consumer's last packet (before a face's close stops the service)."""
    w, c, s = _clock()
    clk, tid = _PRODUCER[0]
    return nbytes, w - t[0], c - t[1], s - t[2], time.clock_gettime_ns(clk), ctxsw(tid)


def sync_packets(svc: Any, total: int) -> tuple[int, ...]:
    stop_at = len(FRAME) * total
    nbytes = 0
    t = _clock()
    for pkt in svc.packets(timeout=5):
        nbytes += len(pkt.data)
        ts = pkt.timestamp_ns  # noqa: F841
        if nbytes >= stop_at:
            break
    return _done(t, nbytes)


def sync_packets_bare(svc: Any, total: int) -> tuple[int, ...]:
    t = _clock()
    deque(islice(svc.packets(timeout=5), total), 0)
    return _done(t, len(FRAME) * total)


def sync_get(svc: Any, total: int) -> tuple[int, ...]:
    nbytes = 0
    get = svc.get
    t = _clock()
    for _ in range(total):
        pkt = get()
        nbytes += len(pkt.data)
        ts = pkt.timestamp_ns  # noqa: F841
    return _done(t, nbytes)


def sync_batches_each(svc: Any, total: int) -> tuple[int, ...]:
    n = nbytes = 0
    t = _clock()
    for ob in svc.batches(timeout=5):
        for pkt in ob:
            nbytes += len(pkt.data)
            ts = pkt.timestamp_ns  # noqa: F841
        n += len(ob)
        if n >= total:
            break
    return _done(t, nbytes)


def sync_batches_bulk(svc: Any, total: int) -> tuple[int, ...]:
    n = nbytes = 0
    t = _clock()
    for ob in svc.batches(timeout=5):
        for d, ts in zip(ob.datas(), ob.timestamps_ns):
            nbytes += len(d)
        n += len(ob)
        if n >= total:
            break
    return _done(t, nbytes)


def sync_batches_bare(svc: Any, total: int) -> tuple[int, ...]:
    n = 0
    t = _clock()
    for ob in svc.batches(timeout=5):
        n += len(ob)
        if n >= total:
            break
    return _done(t, len(FRAME) * n)


def _async(flavour: str, kind: str) -> Callable[[Any, int], tuple[int, ...]]:
    async def body(rx: Any, total: int) -> tuple[int, ...]:
        stop_at = len(FRAME) * total
        n = nbytes = 0
        t = _clock()
        if kind == "packets":
            async for pkt in rx:
                nbytes += len(pkt.data)
                ts = pkt.timestamp_ns  # noqa: F841
                if nbytes >= stop_at:
                    break
        elif kind == "batches-each":
            async for ob in rx.batches():
                for pkt in ob:
                    nbytes += len(pkt.data)
                    ts = pkt.timestamp_ns  # noqa: F841
                n += len(ob)
                if n >= total:
                    break
        elif kind == "batches-bulk":
            async for ob in rx.batches():
                for d, ts in zip(ob.datas(), ob.timestamps_ns):
                    nbytes += len(d)
                n += len(ob)
                if n >= total:
                    break
        else:  # receive_batch round trips alone
            while n < total:
                ob = await rx.receive_batch()
                n += len(ob)
            nbytes = len(FRAME) * n
        return _done(t, nbytes)

    def run(svc: Any, total: int) -> tuple[int, ...]:
        out: list[Any] = []
        if flavour == "asyncio":
            async def main() -> None:
                async with svc.asyncio() as rx:
                    out.append(await body(rx, total))
            asyncio.run(main())
        else:
            import trio

            async def tmain() -> None:
                async with svc.trio() as rx:
                    out.append(await body(rx, total))
            trio.run(tmain)
        return out[0]  # type: ignore[no-any-return]
    return run


FACES: list[tuple[str, Callable[[Any, int], tuple[int, ...]]]] = [
    ("sync `for p in svc.packets()` + touch", sync_packets),
    ("sync `packets()`, C-driven drain, no touch", sync_packets_bare),
    ("sync `svc.get()` + touch", sync_get),
    ("sync `batches()`, `for p in ob` + touch", sync_batches_each),
    ("sync `batches()`, bulk touch", sync_batches_bulk),
    ("sync `batches()`, no touch", sync_batches_bare),
]
for _fl in ("asyncio", "trio"):
    FACES += [
        (f"{_fl} `async for p in rx` + touch", _async(_fl, "packets")),
        (f"{_fl} `rx.batches()`, `for p in ob` + touch", _async(_fl, "batches-each")),
        (f"{_fl} `rx.batches()`, bulk touch", _async(_fl, "batches-bulk")),
        (f"{_fl} `await rx.receive_batch()`, no touch", _async(_fl, "receive_batch")),
    ]


def face_run(consume: Callable[[Any, int], tuple[int, ...]], blocks: list[bytearray], k: int,
             total: int, prequeued: bool) -> dict[str, float]:
    src = MemorySource(block_size=BLOCK, max_blocks=len(blocks) + 1)
    fill(src, blocks, k)
    svc = nc.CaptureService(src, capacity=total + k)
    t0 = time.perf_counter_ns()
    svc.start()
    try:
        prod = svc._threads[0]
        _PRODUCER[:] = [(time.pthread_getcpuclockid(prod.ident), prod.native_id)]  # type: ignore[arg-type]
        if prequeued:
            while svc.stats().queued < total:
                time.sleep(0.005)
        nbytes, wall, cpu, sw, pcpu, psw = consume(svc, total)
        end = time.perf_counter_ns()
    finally:
        svc.stop()
    if nbytes != len(FRAME) * total:
        raise SystemExit(f"byte total {nbytes} != {len(FRAME) * total}")
    r = {"consumer wall": wall / total, "consumer cpu": cpu / total, "producer cpu": pcpu / total,
         "consumer ctxsw": sw, "producer ctxsw": psw}
    if not prequeued:
        r["start->last wall"] = (end - t0) / total
    return r


# -- stage 7: pypcap on a pcap file ------------------------------------------------------

def write_pcap(path: str, total: int) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))  # ns-resolution pcap
        rec = bytearray()
        for i in range(total):
            s, ns = divmod(TS0 + i, 1_000_000_000)
            rec += struct.pack("<IIII", s, ns, len(FRAME), len(FRAME)) + FRAME
            if len(rec) > 1 << 22:
                f.write(rec)
                rec.clear()
        f.write(rec)


def pypcap_run(path: str, total: int) -> dict[str, float]:
    import pcap

    nbytes = 0

    def touch(ts: int, data: bytes) -> None:
        nonlocal nbytes
        nbytes += len(data)

    def noop(ts: int, data: bytes) -> None:
        pass

    r = {}
    for name, cb in (("pypcap dispatch, no-op callback", noop), ("pypcap dispatch, touch callback", touch)):
        p = pcap.pcap(path, timestamp_in_ns=True)
        t0 = time.perf_counter_ns()
        n = p.dispatch(-1, cb)
        r[name] = (time.perf_counter_ns() - t0) / total
        p.close()
        if n != total:
            raise SystemExit(f"pypcap read {n} of {total}")
    p = pcap.pcap(path, timestamp_in_ns=True)
    t0 = time.perf_counter_ns()
    for ts, data in p:
        nbytes += len(data)
    r["pypcap `for ts, data in p` + touch"] = (time.perf_counter_ns() - t0) / total
    p.close()
    return r


# -- the C-object experiment -------------------------------------------------------------

NT = namedtuple("NT", "data timestamp_ns columns index")


class Slots:
    __slots__ = ("data", "timestamp_ns", "columns", "index")

    def __init__(self, data: bytes, timestamp_ns: int, columns: Any, index: int) -> None:
        self.data = data
        self.timestamp_ns = timestamp_ns
        self.columns = columns
        self.index = index


class _AIt:
    """An async iterator whose ``async def __anext__`` always has the item in hand."""

    def __init__(self, it: Any) -> None:
        self.it = it

    def __aiter__(self) -> _AIt:
        return self

    async def __anext__(self) -> Any:
        p = next(self.it, None)
        if p is None:
            raise StopAsyncIteration
        return p


class _TupleOwned(tuple):  # type: ignore[type-arg]
    """OwnedPacket as it was before issue 12: a 4-tuple subclass."""

    __slots__ = ()


def objects(total: int) -> dict[str, float]:
    datas = [bytes(FRAME) for _ in range(total)]
    tss = list(range(TS0, TS0 + total))
    cols = object()
    pc = time.perf_counter_ns
    r = {}

    def args() -> Any:
        return zip(datas, tss, repeat(cols, total), range(total))

    cases = [
        ("plain tuple from zip (zip reuses one tuple: no allocation)", lambda: args()),
        ("new plain tuple per packet (C: itemgetter(0,1,2,3))", lambda: map(itemgetter(0, 1, 2, 3), args())),
        ("OwnedPacket before: 4-tuple subclass, map(T, zip(...))", lambda: map(_TupleOwned, args())),
        ("OwnedPacket now: Packets(OwnedPacket, ...) (C iterator)", lambda: Packets(OwnedPacket, datas, tss, cols)),
        ("namedtuple via NT._make (tuple.__new__)", lambda: map(NT._make, args())),
        ("namedtuple via NT(*args) (Python __new__)", lambda: starmap(NT, args())),
        ("__slots__ class, Python __init__", lambda: starmap(Slots, args())),
    ]
    for name, make in cases:
        t0 = pc()
        deque(make(), 0)
        r["drop: " + name] = pc() - t0
    for name, make in cases[1:]:
        t0 = pc()
        keep = list(make())
        t1 = pc()
        del keep
        r["keep: " + name] = t1 - t0
        r["free: " + name] = pc() - t1

    def sync_loop() -> None:
        for p in Packets(OwnedPacket, datas, tss, cols):
            pass

    async def async_loop() -> None:
        async for p in _AIt(Packets(OwnedPacket, datas, tss, cols)):
            pass

    async def c_loop() -> None:
        cur = PacketCursor()
        cur.it = Packets(OwnedPacket, datas, tss, cols)

        async def end() -> None:
            raise StopAsyncIteration

        async for p in PacketAiter(cur, end):
            pass

    t0 = pc()
    sync_loop()
    r["for p in (OwnedPackets): pass"] = pc() - t0
    t0 = pc()
    asyncio.run(async_loop())
    r["async for p in (async def __anext__ over OwnedPackets): pass"] = pc() - t0
    t0 = pc()
    asyncio.run(c_loop())
    r["async for p in (PacketAiter over OwnedPackets, now): pass"] = pc() - t0
    return {key: v / total for key, v in r.items()}


# -- output ------------------------------------------------------------------------------

def table(title: str, rows: dict[str, dict[str, float]] | dict[str, float]) -> None:
    print(f"\n{title}")
    for key, v in rows.items():
        if isinstance(v, dict):
            print(f"  {key:60s} " + "  ".join(f"{c} {x:8.1f}" for c, x in v.items()))
        else:
            print(f"  {key:60s} {v:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="write every median here too")
    ap.add_argument("--only", default="", help="faces whose name contains this text (default: all)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: stages,faces,pypcap,objects")
    a = ap.parse_args()
    skip = set(a.skip.split(","))
    blocks, k, total = make_blocks(a.packets)
    print(f"Python {sys.version.split()[0]}, netring_chan {getattr(nc, '__version__', '?')}, "
          f"{total} packets of {len(FRAME)} bytes, {len(blocks)} blocks of {BLOCK >> 10} KiB "
          f"({k} packets each), median of {a.runs} runs; ns per packet")
    out: dict[str, Any] = {"python": sys.version.split()[0], "packets": total, "runs": a.runs}
    if "stages" not in skip:
        out["stages"] = median_of(a.runs, lambda: stages(blocks, total))
        table("stages (1-4)", out["stages"])
    if "faces" not in skip:
        for mode, pre in (("prequeued", True), ("concurrent", False)):
            res = {}
            for name, fn in FACES:
                if a.only not in name:
                    continue
                res[name] = median_of(a.runs, lambda: face_run(fn, blocks, k, total, pre))
                table(f"{mode}: {name}", {"": res[name]})
            out["faces " + mode] = res
    if "pypcap" not in skip:
        try:
            import pcap  # noqa: F401
        except ImportError:
            print("\npypcap not installed: no reference row")
        else:
            path = f"/dev/shm/ncbreak-{os.getpid()}.pcap"
            try:
                write_pcap(path, total)
                out["pypcap"] = median_of(a.runs, lambda: pypcap_run(path, total))
            finally:
                os.unlink(path)
            table("pypcap (pcap file on tmpfs)", out["pypcap"])
    if "objects" not in skip:
        del blocks
        out["objects"] = median_of(a.runs, lambda: objects(total))
        table("per-packet objects (1M, C-driven)", out["objects"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
