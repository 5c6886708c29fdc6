#!/usr/bin/env python3
"""netring_chan benchmark: capture faces vs libpcap (pypcap), senders vs trafgen, Bridge.

    python3 bench/run.py [--mode live|drain|tx|bridge|all] [--duration S] [--frames N]

Builds its own veth pair in a private network namespace (three namespaces for
the bridge mode; deleted on exit), drives it with trafgen (64-byte frames) and
prints, per mode, one table with every consumer or sender and its ratio to
the peer (pypcap, trafgen) measured in the same run; the bridge mode searches
for the highest rate a Bridge forwards without loss. See bench/README.md for
what each figure means. Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import ctypes
import ctypes.util
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from _lab import FRAME_LEN, BenchError, BenchLab, FillError, Generator, pinned, privilege_problem, trafgen_problem
import consumers
from consumers import CONSUMERS, Consumer, Result
import tx

# Keep glibc from serving each block's copy-out buffers with fresh mmap()ed
# (page-faulting) memory and from trimming the heap after each free.
GLIBC_TUNING = (("MALLOC_MMAP_THRESHOLD_", str(64 << 20)), ("MALLOC_TRIM_THRESHOLD_", str(256 << 20)))
SETTLE_S = 0.3  # after the load stops: > the block retire timeout, so every frame is in a handed-over block


# --- contexts handed to the consumers ------------------------------------------------


class _Ctx:
    def __init__(self, lab: BenchLab, ring_bytes: int, block_size: int, block_timeout_ms: int) -> None:
        self.lab = lab
        self.ifname = lab.rx
        self.ring_bytes = ring_bytes
        self.block_size = block_size
        self.block_timeout_ms = block_timeout_ms


class LiveRun(_Ctx):
    """Starts trafgen for ``seconds`` when the consumer is ready."""

    def __init__(self, lab: BenchLab, ring_bytes: int, block_size: int, block_timeout_ms: int,
                 *, seconds: float, gen_cpus: int) -> None:
        super().__init__(lab, ring_bytes, block_size, block_timeout_ms)
        self.seconds = seconds
        self.gen_cpus = gen_cpus
        self.gen: Generator | None = None
        self.rx0 = 0

    def ready(self) -> None:
        if self.gen is not None:
            raise BenchError("ready() called twice")
        self.rx0 = self.lab.rx_packets()
        self.gen = self.lab.generator(cpus=self.gen_cpus, seconds=self.seconds)

    def finished(self) -> bool:
        if self.gen is None:
            raise BenchError("consumer waited for the load before calling ready()")
        if time.monotonic() - self.gen.started > self.seconds + 30:
            raise BenchError("trafgen did not stop")
        if not self.gen.poll() or self.gen.ended is None:
            return False
        return time.monotonic() - self.gen.ended >= SETTLE_S

    def close(self) -> None:
        if self.gen is not None:
            self.gen.kill()


class DrainRun(_Ctx):
    """Fills the ring with ``frames`` frames while the consumer waits."""

    def __init__(self, lab: BenchLab, ring_bytes: int, block_size: int, block_timeout_ms: int,
                 *, frames: int, gen_cpus: int) -> None:
        super().__init__(lab, ring_bytes, block_size, block_timeout_ms)
        self.frames = frames
        self.gen_cpus = gen_cpus
        self.sent = 0
        self.received = 0
        self.fill_seconds = 0.0

    def fill(self, stats: Callable[[], tuple[int, int]]) -> int:
        rx0 = self.lab.rx_packets()
        gen = self.lab.generator(cpus=self.gen_cpus, count=self.frames)
        try:
            gen.wait(timeout=60 + self.frames / 50_000)
        finally:
            gen.kill()
        self.fill_seconds = gen.seconds
        # Let the kernel retire the last, partly filled block on its timer.
        time.sleep(max(SETTLE_S, 3 * self.block_timeout_ms / 1000))
        self.sent = gen.sent or 0
        self.received = self.lab.rx_packets() - rx0
        packets, drops = stats()
        if drops:
            raise FillError(f"the ring dropped {drops} of {packets} frames while filling")
        if packets != self.received:
            raise FillError(f"socket counted {packets} frames, interface received {self.received}")
        if self.received < 0.9 * self.frames:
            raise BenchError(f"only {self.received} of {self.frames} frames reached the interface")
        return packets

    def deadline(self) -> float:
        return time.monotonic() + 60 + self.received / 20_000


# --- measuring ----------------------------------------------------------------------


def _check(r: Result, expect_kernel: int | None) -> str:
    """Accounting problems of one run, or ''."""
    bad = []
    if r.nbytes != FRAME_LEN * r.delivered:
        bad.append(f"bytes {r.nbytes} != {FRAME_LEN} x {r.delivered}")
    if r.delivered + r.kernel_drops + r.queue_drops != r.kernel_packets:
        bad.append(f"delivered+drops {r.delivered + r.kernel_drops + r.queue_drops} != kernel {r.kernel_packets}")
    if expect_kernel is not None and r.kernel_packets != expect_kernel:
        bad.append(f"kernel {r.kernel_packets} != interface {expect_kernel}")
    return "; ".join(bad)


def run_live(lab: BenchLab, c: Consumer, a: argparse.Namespace, pin: set[int] | None) -> dict[str, Any]:
    ctx = LiveRun(lab, a.ring_mib << 20, a.block_kib << 10, a.block_timeout_ms,
                  seconds=a.duration, gen_cpus=a.gen_cpus)
    try:
        with pinned(pin):
            r = c.live(ctx)
    finally:
        ctx.close()
    if ctx.gen is None:
        raise BenchError(f"{c.name} returned without calling ready()")
    received = lab.rx_packets() - ctx.rx0
    return dict(result=r, sent=ctx.gen.sent, received=received, seconds=ctx.gen.seconds,
                problem=_check(r, received))


def drain_ring(a: argparse.Namespace) -> int:
    """Ring bytes for the drain mode: room for every frame, never a drop."""
    block = a.drain_block_kib << 10
    tov = a.drain_block_timeout_ms
    if a.drain_ring_mib:
        ring = a.drain_ring_mib << 20
    else:
        # A 64-byte frame takes 152 bytes of a V3 block (header, sockaddr_ll,
        # alignment: 88 + the frame, rounded up to 16). On top of the full blocks, the kernel's retire timer
        # hands over a partly filled block every ``tov`` ms even under load,
        # each wasting the rest of its block: budget one per timer tick of a
        # fill at a pessimistic 300 kframes/s.
        ticks = -(-a.frames * 1000 // (300_000 * tov))
        per_frame = (FRAME_LEN + 88 + 15) // 16 * 16 + 8
        ring = (-(-a.frames * per_frame // block) + ticks + 4) * block
    return int(ring)


def run_drain(lab: BenchLab, c: Consumer, a: argparse.Namespace) -> dict[str, Any]:
    ring = drain_ring(a)
    fills: list[str] = []
    while True:
        ctx = DrainRun(lab, ring, a.drain_block_kib << 10, a.drain_block_timeout_ms,
                       frames=a.frames, gen_cpus=a.gen_cpus)
        try:
            r = c.drain(ctx)
            break
        except FillError as e:
            # Seen here (kernel 6.18) as exactly one frame in a million,
            # with free blocks left and no freeze, mostly while the machine
            # is busy: the measurement needs a complete ring, so refill with
            # a fresh socket and say so.
            fills.append(str(e))
            if len(fills) == 5:
                raise BenchError(f"5 fills failed: {'; '.join(fills)}") from None
    prob = _check(r, ctx.received)
    if r.delivered != ctx.received:
        prob = "; ".join(filter(None, [prob, f"delivered {r.delivered} of {ctx.received}"]))
    note = f"ok after refill ({fills[0]})" if fills and not prob else ""
    return dict(result=r, sent=ctx.sent, received=ctx.received, seconds=r.seconds,
                cpu_seconds=consumers.CPU_SECONDS, faults=consumers.FAULTS, ring=ring, problem=prob, note=note)


# --- output -------------------------------------------------------------------------


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells))

    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


def _span(xs: list[float], fmt: Callable[[float], str]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}..{fmt(max(xs))}]"


def machine_info(glibc_tuned: bool) -> str:
    model = "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
    pcapv = "?"
    name = ctypes.util.find_library("pcap")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            fn = ctypes.CDLL(name).pcap_lib_version
            fn.restype = ctypes.c_char_p
            pcapv = fn().decode()
    tg = subprocess.run(["trafgen", "-v"], capture_output=True, text=True).stdout.split("\n")[0] or "?"
    try:
        import netring_chan as nc
        ncv = nc.__version__
    except ImportError as e:
        ncv = f"not importable ({e})"
    tuned = " ".join(f"{k}={v}" for k, v in GLIBC_TUNING) if glibc_tuned else ""
    rev = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip() or "?"
    return (f"machine: nproc={os.cpu_count()} (usable {len(os.sched_getaffinity(0))}), {model}; "
            f"kernel {platform.release()}; Python {platform.python_version()}\n"
            f"netring_chan {ncv} (git {rev}); {pcapv}; {tg}\n"
            f"glibc malloc: {tuned or 'defaults'}; each measurement in a fresh process")


# --- one measurement per process ----------------------------------------------------
#
# Each measurement runs in a fresh interpreter: the C heap, the GC and the
# imported modules start the same for every consumer. (In one long process
# the order mattered: glibc's heap state left by earlier consumers changed a
# later consumer's page-fault count, and with it its rate, by 2x.)

_PASS = ("duration", "frames", "gen_cpus", "ring_mib", "block_kib", "drain_ring_mib", "drain_block_kib",
         "block_timeout_ms", "drain_block_timeout_ms")


def spawn(mode: str, c: Consumer, lab: BenchLab, a: argparse.Namespace, pin: set[int] | None) -> dict[str, Any]:
    """Run one measurement in a worker process; its result as a dict."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", f"{mode}:{c.name}:{lab.spec}"]
    for k in _PASS:
        cmd += [f"--{k.replace('_', '-')}", str(getattr(a, k))]
    if mode == "live" and pin:
        cmd += ["--pin", ",".join(map(str, sorted(pin)))]
    env = dict(os.environ, **dict(GLIBC_TUNING)) if a.glibc_tuned else None
    limit = 120 + (a.duration if mode == "live" else a.frames / 10_000)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, env=env)
    except subprocess.TimeoutExpired:
        return dict(error=f"worker timed out after {limit:.0f} s")
    line = out.stdout.strip().splitlines()[-1:]
    try:
        d: dict[str, Any] = json.loads(line[0])
    except (IndexError, ValueError):
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return dict(error=f"worker failed (exit {out.returncode}): {' | '.join(tail)}")
    if "result" in d:
        d["result"] = Result(**d["result"])
    return d


def worker(a: argparse.Namespace) -> int:
    """``--worker MODE:CONSUMER:LAB``: one measurement, printed as one JSON line."""
    mode, name, spec = a.worker.split(":", 2)
    if mode in ("tx", "bridge"):
        return tx.worker(mode, name, spec, a)
    c = next(c for c in CONSUMERS if c.name == name)
    lab = BenchLab(existing=spec)
    pin = {int(x) for x in a.pin.split(",") if x} or None
    try:
        with lab.inside():
            d = run_live(lab, c, a, pin) if mode == "live" else run_drain(lab, c, a)
        d["result"] = dataclasses.asdict(d["result"])
    except BenchError as e:
        d = dict(error=str(e))
    print(json.dumps(d), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["live", "drain", "tx", "bridge", "all"], default="all",
                   help="all: live, drain, tx and bridge in turn")
    p.add_argument("--duration", type=float, default=3.0,
                   help="live: seconds of load per consumer; bridge: seconds per search step (default 3)")
    p.add_argument("--frames", type=int, default=1_000_000,
                   help="drain: frames put in the ring; tx: frames per sender (default 1M)")
    p.add_argument("--repeat", type=int, default=1, help="rounds; the summary gives median [min..max]")
    p.add_argument("--consumers", default="", help="comma-separated names (default: all available); see --list")
    p.add_argument("--list", action="store_true", help="list the consumers and whether they can run")
    p.add_argument("--gen-cpus", type=int, default=1, help="trafgen forks, pinned to CPUs 0..n-1 (default 1)")
    p.add_argument("--no-pin", action="store_true", help="live: do not keep the consumer off trafgen's CPUs")
    p.add_argument("--ring-mib", type=int, default=32, help="live: ring size for every consumer (default 32)")
    p.add_argument("--block-kib", type=int, default=1024, help="live: netring_chan block size (default 1024)")
    p.add_argument("--drain-ring-mib", type=int, default=0,
                   help="drain: ring size (default: 256 bytes per frame, rounded up to blocks)")
    p.add_argument("--drain-block-kib", type=int, default=1024, help="drain: netring_chan block size (default 1024)")
    p.add_argument("--block-timeout-ms", type=int, default=50,
                   help="live: block retire timeout, every consumer (default 50)")
    p.add_argument("--drain-block-timeout-ms", type=int, default=200,
                   help="drain: block retire timeout, every consumer (default 200)")
    p.add_argument("--senders", default="", help=f"tx: comma-separated (default all: "
                   f"{','.join(s.name for s in tx.SENDERS)})")
    p.add_argument("--tx-before", default="", metavar="DIR",
                   help="tx: also run every netring_chan sender with DIR (another tree, built in place) "
                   "first on PYTHONPATH, in the same rounds: before/after in one run")
    p.add_argument("--bridges", default="pass,none", help="bridge: callbacks to search, pass and/or none "
                   "(default both)")
    p.add_argument("--bridge-start", type=int, default=50_000, help="bridge: first offered rate, pps (default 50k)")
    p.add_argument("--bridge-max", type=int, default=1_600_000, help="bridge: highest rate tried, pps (default 1.6M)")
    p.add_argument("--bridge-steps", type=int, default=5,
                   help="bridge: bisection steps after the first loss (default 5)")
    p.add_argument("--bridge-blocks", type=int, default=0,
                   help="bridge: blocks in each capture ring (default 0: the Bridge's own, 16 x 256 KiB)")
    p.add_argument("--bridge-block-timeout-ms", type=int, default=0,
                   help="bridge: capture block retire timeout (default 0: the Bridge's own, 1 ms)")
    p.add_argument("--bridge-overload", type=int, default=1, choices=[0, 1],
                   help="bridge: after the search, one step at --bridge-max (default 1)")
    p.add_argument("--install", action="store_true", help="apt-get install netsniff-ng if trafgen is missing")
    p.add_argument("--glibc-tuned", action="store_true",
                   help="run the workers with MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set high (see README)")
    p.add_argument("--frame-len", type=int, default=0,
                   help="bytes per frame, 60..1514 (default 64; sets NCBENCH_FRAME_LEN for the workers)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: MODE:CONSUMER:LAB-SPEC
    p.add_argument("--pin", default="", help=argparse.SUPPRESS)  # internal: CPUs for a live worker
    a = p.parse_args(argv)
    if a.frame_len and a.frame_len != FRAME_LEN:
        # FRAME_LEN is read once, when _lab is imported: start again with it set.
        os.environ["NCBENCH_FRAME_LEN"] = str(a.frame_len)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    if a.worker:
        return worker(a)

    wanted = [n for n in a.consumers.split(",") if n]
    unknown = set(wanted) - {c.name for c in CONSUMERS}
    if unknown:
        p.error(f"unknown consumer(s) {sorted(unknown)}; known: {[c.name for c in CONSUMERS]}")
    chosen: list[Consumer] = []
    for c in CONSUMERS:
        why = c.missing()
        if a.list:
            print(f"{c.name:17} {c.label:45} {'ok' if why is None else 'unavailable: ' + why}")
            continue
        if wanted and c.name not in wanted:
            continue
        if why is not None:
            print(f"skipping {c.name}: {why}")
            continue
        chosen.append(c)
    if a.list:
        return 0
    modes = ["live", "drain", "tx", "bridge"] if a.mode == "all" else [a.mode]
    if "bridge" in modes and not shutil.which("tc"):
        print("cannot run: the bridge mode needs tc (iproute2) to pace trafgen", file=sys.stderr)
        return 2
    for why in (privilege_problem(), trafgen_problem(a.install)):
        if why:
            print(f"cannot run: {why}", file=sys.stderr)
            return 2
    peer = next((c for c in chosen if c.peer), None)
    if peer is None and {"live", "drain"} & set(modes):
        print("note: no peer (pypcap) in this run, so no ratios")

    print(machine_info(a.glibc_tuned))
    n = os.cpu_count() or 1
    pin = None if a.no_pin else (set(range(a.gen_cpus, n)) & os.sched_getaffinity(0)) or None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the lab is deleted

    failed = False
    for mode in modes:
        if mode in ("tx", "bridge"):
            try:
                failed |= not (tx.run_tx(a) if mode == "tx" else tx.run_bridge(a))
            except BenchError as e:
                print(f"{mode}: {e}", file=sys.stderr)
                failed = True
            continue
        runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in chosen}
        with BenchLab() as lab:
            print()
            if mode == "live":
                print(f"== live: trafgen on {a.gen_cpus} CPU(s), {FRAME_LEN}-byte frames, {a.duration:g} s per "
                      f"consumer; consumer on CPUs {sorted(pin) if pin else 'any'}; ring {a.ring_mib} MiB each")
            else:
                print(f"== drain: {a.frames:,} {FRAME_LEN}-byte frames queued in the ring while the consumer "
                      f"waits, then timed until all are delivered (touching data + timestamp); "
                      f"ring {drain_ring(a) >> 20} MiB each, netring_chan blocks {a.drain_block_kib} KiB")
            for rnd in range(a.repeat):
                for c in chosen:
                    runs[c.name].append(spawn(mode, c, lab, a, pin))
                _print_round(mode, chosen, runs, rnd, peer, a.repeat)
            if a.repeat > 1:
                _print_summary(mode, chosen, runs, peer)
        failed |= any("error" in d or d.get("problem") for rs in runs.values() for d in rs)
    return 1 if failed else 0


def _ratio(mode: str, d: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    if ref is None or "error" in d or "error" in ref:
        return None
    if mode == "live":
        mine = d["result"].delivered / max(1, d["received"])
        theirs = ref["result"].delivered / max(1, ref["received"])
    else:
        mine = d["result"].delivered / d["seconds"]
        theirs = ref["result"].delivered / ref["seconds"]
    return mine / theirs if theirs else None


def _cpu_ratio(d: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """Drain: packets per CPU second (the whole process) over the peer's."""
    if ref is None or "error" in d or "error" in ref or not d.get("cpu_seconds") or not ref.get("cpu_seconds"):
        return None
    return (d["result"].delivered / d["cpu_seconds"]) / (ref["result"].delivered / ref["cpu_seconds"])


def _print_round(mode: str, chosen: list[Consumer], runs: dict[str, list[dict[str, Any]]], rnd: int,
                 peer: Consumer | None, repeat: int) -> None:
    ref = runs[peer.name][rnd] if peer else None
    rows = []
    for c in chosen:
        d = runs[c.name][rnd]
        label = c.label + (" [no-op cb]" if c.peer and mode == "live" else "")
        if "error" in d:
            rows.append([label, f"ERROR: {d['error']}"] + [""] * (6 if mode == "live" else 6))
            continue
        r: Result = d["result"]
        ratio = _ratio(mode, d, ref)
        rs = "-" if ratio is None else f"{ratio:.2f}x"
        if mode == "live":
            rows.append([label, _fmt_int(d["received"] / d["seconds"]), _fmt_int(d["received"]),
                         _fmt_int(r.delivered), f"{100 * r.delivered / max(1, d['received']):.1f}%",
                         _fmt_int(r.kernel_drops + r.queue_drops), rs, d["problem"] or "ok"])
        else:
            cr = _cpu_ratio(d, ref)
            rows.append([label, _fmt_int(r.delivered), f"{d['seconds']:.3f}",
                         _fmt_int(r.delivered / d["seconds"]), rs, f"{d.get('cpu_seconds', 0):.3f}",
                         "-" if cr is None else f"{cr:.2f}x", _fmt_int(d.get("faults", 0)),
                         d["problem"] or d.get("note") or "ok"])
    if mode == "live":
        hdr = ["consumer", "recv pps", "received", "captured", "capt/recv", "drops", "vs pypcap", "check"]
    else:
        hdr = ["consumer", "frames", "seconds", "packets/s", "vs pypcap", "CPU s", "vs pypcap CPU", "faults", "check"]
    print(f"-- round {rnd + 1}/{repeat}")
    print(_table(hdr, rows), flush=True)


def _print_summary(mode: str, chosen: list[Consumer], runs: dict[str, list[dict[str, Any]]],
                   peer: Consumer | None) -> None:
    rows = []
    for c in chosen:
        ok = [(i, d) for i, d in enumerate(runs[c.name]) if "error" not in d]
        ratios = [x for i, d in ok if (x := _ratio(mode, d, runs[peer.name][i] if peer else None)) is not None]
        errs = len(runs[c.name]) - len(ok)
        if mode == "live":
            frac = [100 * d["result"].delivered / max(1, d["received"]) for _, d in ok]
            drops = [float(d["result"].kernel_drops + d["result"].queue_drops) for _, d in ok]
            rows.append([c.label, _span(frac, lambda x: f"{x:.1f}%"), _span(drops, _fmt_int),
                         _span(ratios, lambda x: f"{x:.2f}x"), str(errs)])
        else:
            pps = [d["result"].delivered / d["seconds"] for _, d in ok]
            cpu = [x for i, d in ok if (x := _cpu_ratio(d, runs[peer.name][i] if peer else None)) is not None]
            rows.append([c.label, _span(pps, _fmt_int), _span(ratios, lambda x: f"{x:.2f}x"),
                         _span(cpu, lambda x: f"{x:.2f}x"), str(errs)])
    hdr = (["consumer", "capt/recv", "drops", "vs pypcap", "errors"] if mode == "live"
           else ["consumer", "packets/s", "vs pypcap", "vs pypcap CPU", "errors"])
    print(f"-- {mode} summary over {len(next(iter(runs.values()), []))} rounds: median [min..max]")
    print(_table(hdr, rows), flush=True)


if __name__ == "__main__":
    sys.exit(main())
