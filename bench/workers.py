"""Fanout worker processes (issue 11): drain rate with 1 and with 2 workers.

    sudo python3 bench/workers.py [--frames N] [--flows F] [--repeat K] [--method forkserver|spawn] [--pin]

One veth pair in a private namespace (``BenchLab``). A ``WorkerPool`` of N
workers (N = 1, then 2, in the same round) opens its captures in one hash
fanout group, and the workers wait. trafgen then puts ``--frames`` 64-byte
IPv4/UDP frames into the rings: ``--flows`` flows that differ in their
source address (trafgen's ``dinc``), so the kernel's flow hash spreads them
over the workers. After the fill, the harness checks the workers' kernel
counters against the interface's ``rx_packets`` (no drop, nothing missing),
then writes the *go* time (``CLOCK_MONOTONIC``, one clock for every process)
to a file the workers poll. Each worker drains its ring with ``for pkt in
ctx`` (``--touch packet``, ``run.py``'s ``svc-sync``: an ``OwnedPacket`` per
frame) or ``ctx.batches()`` (``--touch bulk``, ``svc-sync-bulk``: every
packet's data and timestamp reach Python code), which read the ring in the
target's own thread (no copy-out thread), and records the moment it
delivered its last frame. The rate is all frames over the time
from *go* to the last worker's last frame: process start-up, ring set-up
and the fill are outside it; the workers' reaction to *go* (a 0.5 ms poll)
and the slower worker's share are inside it. ``cores``: the workers' CPU
time (every thread) over that time; a worker reads, copies out and hands on
in one thread, so one worker uses about one core (its control thread
wakes every 50 ms).

The ratio is the 2-worker rate over the 1-worker rate of the same round;
the summary is the median of the rounds. On a 2-core machine the ceiling is
2x, less what the imbalance of the hash costs (``share``: the largest
worker's part of the frames; with 2 workers 50% is even).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import netring_chan as nc
from _lab import FRAME_LEN, BenchError, BenchLab, FillError, privilege_problem, trafgen_problem

SETTLE_S = 0.5  # after the fill: the retire timer hands over the last blocks; a stats report arrives


def flow_body(flows: int) -> str:
    """trafgen's description of a 64-byte IPv4/UDP frame after the MACs;
    the source address's last byte counts 1..``flows``, one flow each."""
    ip_len, udp_len = FRAME_LEN - 14, FRAME_LEN - 14 - 20
    return (f"c16(0x0800), 0x45, 0x00, c16({ip_len}), c16(0), c16(0x4000), 0x40, 0x11, csumip(14, 33), "
            f"10, 7, 0, dinc(1, {flows}, 1), 10, 8, 0, 1, c16(1000), c16(2000), c16({udp_len}), c16(0), "
            f"fill(0xab, {udp_len - 8})")


def drain_target(ctx: nc.WorkerContext, gofile: str, touch: str) -> dict[str, Any]:
    """In each worker: wait for *go*, drain this worker's ring, time the last frame."""
    while not os.path.exists(gofile):
        time.sleep(0.0005)
    cpu0 = time.process_time()  # every thread of this worker
    st = ctx.service.sources[0].stats()  # the fill is over: what the ring holds is final
    want = st.packets - st.drops
    n = nbytes = 0
    if want and touch == "bulk":  # run.py's svc-sync-bulk
        for ob in ctx.batches():
            for data, ts in zip(ob.datas(), ob.timestamps_ns):
                nbytes += len(data)
            n += len(ob)
            if n >= want:
                break
    elif want:  # run.py's svc-sync: an OwnedPacket per packet
        for pkt in ctx:
            nbytes += len(pkt.data)
            ts = pkt.timestamp_ns  # noqa: F841
            n += 1
            if n >= want:
                break
    return dict(n=n, nbytes=nbytes, want=want, t_end=time.monotonic(), cpu=time.process_time() - cpu0)


def one_run(lab: BenchLab, workers: int, a: argparse.Namespace) -> dict[str, Any]:
    ring_blocks = -(-a.frames * 160 // (1 << 20)) + 8  # room for every frame in one ring (see run.py)
    with tempfile.TemporaryDirectory(prefix="ncbench-go-") as tmp:
        gofile = os.path.join(tmp, "go")
        pool = nc.WorkerPool(drain_target, lab.rx, workers, args=(gofile, a.touch), start_method=a.method,
                             capture=dict(block_size=1 << 20, block_count=ring_blocks, block_timeout_ms=200),
                             cpus=list(range(workers)) if a.pin else None, name=f"bench-w{workers}")
        with pool:
            rx0 = lab.rx_packets()
            gen = lab.generator(cpus=1, count=a.frames, body=flow_body(a.flows))
            try:
                gen.wait(timeout=60 + a.frames / 50_000)
            finally:
                gen.kill()
            time.sleep(SETTLE_S)
            received = lab.rx_packets() - rx0
            st = pool.stats().capture
            if st.kernel_drops or st.kernel_packets != received:
                raise FillError(f"fill: workers counted {st.kernel_packets} frames ({st.kernel_drops} drops), "
                                 f"the interface received {received}")
            t_go = time.monotonic()
            with open(gofile, "w") as f:
                f.write(str(t_go))
            deadline = time.monotonic() + 60 + received / 20_000
            while any(r is None for r in pool.results()):
                if time.monotonic() > deadline:
                    raise BenchError("the workers did not finish draining in time")
                if pool.error is not None:
                    raise BenchError(f"a worker failed: {pool.error}")
                time.sleep(0.005)
        res = pool.results()
    if pool.error is not None:
        raise BenchError(f"a worker failed: {pool.error}")
    total = sum(r["n"] for r in res)
    seconds = max(r["t_end"] for r in res) - t_go
    problem = []
    if total != received:
        problem.append(f"delivered {total} of {received}")
    if sum(r["nbytes"] for r in res) != FRAME_LEN * total:
        problem.append("byte total")
    final = pool.stats()
    if not final.capture.balanced or final.capture.delivered != total:
        problem.append("accounting")
    return dict(workers=workers, frames=total, seconds=seconds, pps=total / seconds,
                share=max(r["n"] for r in res) / max(total, 1), cores=sum(r["cpu"] for r in res) / seconds,
                problem="; ".join(problem))


def measured(lab: BenchLab, workers: int, a: argparse.Namespace) -> dict[str, Any]:
    """``one_run``, refilled with fresh workers when a fill was not complete
    (run.py's drain mode does the same: on this kernel a fill sometimes
    drops one frame in a million with room left); the row says so."""
    fills: list[str] = []
    while True:
        try:
            r = one_run(lab, workers, a)
        except FillError as e:
            fills.append(str(e))
            if len(fills) == 5:
                raise BenchError(f"5 fills failed: {'; '.join(fills)}") from None
            continue
        if fills:
            r["problem"] = "; ".join(filter(None, [r["problem"], f"refilled {len(fills)}x ({fills[0]})"]))
        return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=1_000_000, help="frames per fill (default 1M)")
    p.add_argument("--flows", type=int, default=200, help="distinct flows, 1..255 (default 200)")
    p.add_argument("--repeat", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--method", choices=["forkserver", "spawn"], default="forkserver")
    p.add_argument("--touch", choices=["packet", "bulk"], default="packet",
                   help="packet: an OwnedPacket per frame (svc-sync); bulk: datas() per batch (svc-sync-bulk)")
    p.add_argument("--pin", action="store_true",
                   help="pin worker i to CPU i (WorkerPool cpus=): one core per worker, threads included")
    a = p.parse_args(argv)
    if not 1 <= a.flows <= 255:
        p.error("--flows must be in 1..255")
    why = privilege_problem() or trafgen_problem(False)
    if why:
        print(f"workers bench: {why}", file=sys.stderr)
        return 2
    print(f"== workers drain: {a.frames:,} {FRAME_LEN}-byte frames, {a.flows} flows, hash fanout, "
          f"{a.method}, touch {a.touch}{', pinned' if a.pin else ''}; {os.cpu_count()} CPUs")
    ratios: list[float] = []
    rows: dict[int, list[float]] = {1: [], 2: []}
    per_core: dict[int, list[float]] = {1: [], 2: []}
    with BenchLab() as lab, lab.inside():
        for rnd in range(a.repeat):
            got = {}
            for n in (1, 2):
                r = measured(lab, n, a)
                got[n] = r
                rows[n].append(r["pps"])
                per_core[n].append(r["pps"] / r["cores"])
                print(f"round {rnd + 1} workers {n}: {r['frames']:>9,} frames in {r['seconds']:.3f} s = "
                      f"{r['pps'] / 1e6:.3f} Mpps, largest share {r['share']:.0%}, CPU {r['cores']:.2f} cores"
                      + (f"  CHECK: {r['problem']}" if r["problem"] else ""), flush=True)
            ratios.append(got[2]["pps"] / got[1]["pps"])
            print(f"round {rnd + 1} ratio 2/1: {ratios[-1]:.2f}x", flush=True)
    med = statistics.median
    print(f"\nmedian of {a.repeat}: 1 worker {med(rows[1]) / 1e6:.3f} Mpps, 2 workers {med(rows[2]) / 1e6:.3f} Mpps, "
          f"ratio {med(ratios):.2f}x [{min(ratios):.2f}..{max(ratios):.2f}]")
    # On a shared machine the ratio follows the CPU the workers got; per CPU
    # second the two are comparable whatever the neighbours did.
    print(f"per core the workers got: 1 worker {med(per_core[1]) / 1e6:.3f} Mpps, "
          f"2 workers {med(per_core[2]) / 1e6:.3f} Mpps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
