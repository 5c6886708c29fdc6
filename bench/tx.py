"""Sending benchmarks (issue 4): TX rate against trafgen, bridge zero-loss rate.

Run through ``run.py --mode tx`` / ``--mode bridge``; see bench/README.md.
Each measurement runs in a fresh worker process (``run.py --worker``), as
the capture modes do.

tx: one veth pair in one namespace (``BenchLab``). A sender puts ``--frames``
64-byte frames out of one end; what counts is what *arrived* on the other
end (its ``rx_packets``, read inside the namespace), over the sender's own
time from its first frame until its ring was empty. Every sender runs on
CPU 0 (trafgen ``-P 1`` pins itself there), so the receive side's softirq
work (veth hands the frame to the peer on the sending CPU) lands on the same
CPU for every row.

bridge: three namespaces A - X - B (``BridgeLab``). trafgen in A sends to
B through a tbf qdisc that paces it at a set rate; ``Bridge`` runs in X on
CPU 1 (trafgen keeps CPU 0) and forwards a1 -> b1; the frames arriving on
b0 are counted. A search finds the highest offered rate at which every frame
offered to the bridge (a1's ``rx_packets``) arrived on b0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Callable

from _lab import FRAME_LEN, BenchError, BenchLab, BridgeLab, link_stats, pinned

TX_CPU = 0  # trafgen -P 1 sends from CPU 0; every TX sender is kept there
SETTLE_S = 0.3  # after a sender is done: the peer's backlog has been processed


# --- TX rate -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sender:
    name: str
    label: str
    peer: str | None  # the trafgen row this one is compared with


SENDERS = [
    Sender("trafgen", "trafgen (qdisc bypass, its default)", None),
    Sender("injector", "Injector.send_many, qdisc_bypass=True", "trafgen"),
    Sender("service", "InjectService.send_many (bypass injector)", "trafgen"),
    Sender("async-injector", "AsyncInjector.send_many under asyncio (bypass)", "trafgen"),
    Sender("async-injector-trio", "AsyncInjector.send_many under trio (bypass)", "trafgen"),
    Sender("service-asyncio", "InjectService asyncio face send_many", "trafgen"),
    Sender("trafgen-qdisc", "trafgen -q (through the qdisc)", None),
    Sender("injector-qdisc", "Injector.send_many, qdisc_bypass=False", "trafgen-qdisc"),
    Sender("xdp", "XdpSocket.send_many (AF_XDP TX, copy mode)", "trafgen"),
]
SERVICE_CHUNK = 4096  # frames per InjectService.send_many call


class _Clock:
    """Wall time and this process's CPU (user, system) from construction to ``stop()``.

    ``RUSAGE_SELF`` covers every thread (a service's sender thread too) and
    the kernel's work done in their context: ``tpacket_snd``, veth's xmit and,
    as veth hands the frame over on the sending CPU, the peer's receive.
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.r0 = resource.getrusage(resource.RUSAGE_SELF)

    def stop(self) -> float:
        """Wall seconds; the CPU seconds go to ``LAST_CPU`` for ``tx_measure``."""
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        dt = time.perf_counter() - self.t0
        LAST_CPU.clear()
        LAST_CPU.update(user=r1.ru_utime - self.r0.ru_utime, sys=r1.ru_stime - self.r0.ru_stime)
        return dt


LAST_CPU: dict[str, float] = {}


def _wait_settled(lab: BenchLab, timeout: float = 5.0) -> int:
    """The peer's ``rx_packets`` once it stopped moving."""
    last = lab.rx_packets()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = lab.rx_packets()
        if now == last:
            return now
        last = now
    return last


def _send_injector(lab: BenchLab, frames: int, bypass: bool) -> tuple[float, dict[str, int]]:
    from netring_chan import Injector

    frame = lab.frame()
    with Injector(lab.tx, qdisc_bypass=bypass) as inj:
        clock = _Clock()
        inj.send_many(itertools.repeat(frame, frames))
        if not inj.wait_drained(60):
            raise BenchError(f"Injector did not drain within 60 s: {inj.stats()}")
        dt = clock.stop()
        st = inj.stats()
    return dt, dict(queued=st.queued, sent=st.sent, rejected=st.rejected, ring_full=st.ring_full)


def _send_xdp(lab: BenchLab, frames: int) -> tuple[float, dict[str, int]]:
    from netring_chan import XdpSocket

    frame = lab.frame()
    with XdpSocket(lab.tx, mode="tx") as xs:  # 2048 TX frames, no XDP program needed
        clock = _Clock()
        xs.send_many(itertools.repeat(frame, frames))
        if not xs.wait_drained(60):
            raise BenchError(f"XdpSocket did not drain within 60 s: {xs.stats()}")
        dt = clock.stop()
        st = xs.stats()
    return dt, dict(queued=st.queued, sent=st.sent, rejected=st.rejected, ring_full=st.ring_full)


def _send_service(lab: BenchLab, frames: int) -> tuple[float, dict[str, int]]:
    from netring_chan import InjectService
    from netring_chan import Injector

    frame = lab.frame()
    chunk = [frame] * SERVICE_CHUNK
    svc = InjectService(Injector(lab.tx, qdisc_bypass=True))
    try:
        svc.start()
        clock = _Clock()
        left = frames
        while left:
            n = min(left, SERVICE_CHUNK)
            svc.send_many(chunk if n == SERVICE_CHUNK else chunk[:n])
            left -= n
        if not svc.wait_drained(60):
            raise BenchError(f"InjectService did not drain within 60 s: {svc.stats()}")
        dt = clock.stop()
    finally:
        svc.stop(drain=True)
    st = svc.stats()
    if not st.balanced:
        raise BenchError(f"InjectService counters do not add up: {st}")
    return dt, dict(queued=st.submitted, sent=st.sent, rejected=st.rejected, ring_full=st.ring_full)


def _send_async_injector(lab: BenchLab, frames: int, loop: str) -> tuple[float, dict[str, int]]:
    from netring_chan import AsyncInjector, Injector

    frame = lab.frame()
    dt = 0.0

    async def main() -> None:
        nonlocal dt
        async with AsyncInjector(Injector(lab.tx, qdisc_bypass=True)) as inj:
            clock = _Clock()
            await inj.send_many([frame] * frames)
            if not await inj.wait_drained(60):
                raise BenchError(f"AsyncInjector did not drain within 60 s: {inj.stats()}")
            dt = clock.stop()
            nonlocal st
            st = inj.stats()

    st: Any = None
    if loop == "trio":
        import trio

        trio.run(main)
    else:
        asyncio.run(main())
    return dt, dict(queued=st.queued, sent=st.sent, rejected=st.rejected, ring_full=st.ring_full)


def _send_service_asyncio(lab: BenchLab, frames: int) -> tuple[float, dict[str, int]]:
    from netring_chan import InjectService
    from netring_chan import Injector

    frame = lab.frame()
    chunk = [frame] * SERVICE_CHUNK
    svc = InjectService(Injector(lab.tx, qdisc_bypass=True))
    dt = 0.0

    async def main() -> None:
        nonlocal dt
        async with svc.asyncio() as tx:
            clock = _Clock()
            left = frames
            while left:
                n = min(left, SERVICE_CHUNK)
                await tx.send_many(chunk if n == SERVICE_CHUNK else chunk[:n])
                left -= n
            if not await tx.wait_drained(60):
                raise BenchError(f"InjectService did not drain within 60 s: {svc.stats()}")
            dt = clock.stop()

    try:
        asyncio.run(main())
    finally:
        svc.stop(drain=True)
    st = svc.stats()
    if not st.balanced:
        raise BenchError(f"InjectService counters do not add up: {st}")
    return dt, dict(queued=st.submitted, sent=st.sent, rejected=st.rejected, ring_full=st.ring_full)


BEFORE = "+before"  # a sender name's suffix: the same sender, netring_chan from --tx-before


def tx_measure(lab: BenchLab, name: str, frames: int) -> dict[str, Any]:
    """One sender puts ``frames`` frames out of ``lab.tx``; count them on ``lab.rx``."""
    name = name.removesuffix(BEFORE)  # the worker imported the other tree already
    tx0, rx0 = link_stats(lab.ns, lab.tx), link_stats(lab.ns, lab.rx)
    counters: dict[str, int] = {}
    if name.startswith("trafgen"):
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        gen = lab.generator(cpus=1, count=frames, qdisc=name == "trafgen-qdisc")
        try:
            gen.wait(timeout=60 + frames / 50_000)
        finally:
            gen.kill()
        if gen.tx_seconds is None:
            raise BenchError("trafgen printed no send time")
        seconds = gen.tx_seconds
        counters = dict(queued=gen.sent or 0, sent=gen.sent or 0)
        # trafgen is this process's direct child (ip netns exec execs it):
        # its whole life, ring setup included (a few ms of its ~1 s).
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        LAST_CPU.clear()
        LAST_CPU.update(user=r1.ru_utime - r0.ru_utime, sys=r1.ru_stime - r0.ru_stime)
    else:
        with pinned({TX_CPU}), lab.inside():
            if name == "service":
                seconds, counters = _send_service(lab, frames)
            elif name == "service-asyncio":
                seconds, counters = _send_service_asyncio(lab, frames)
            elif name.startswith("async-injector"):
                seconds, counters = _send_async_injector(lab, frames, "trio" if name.endswith("trio") else "asyncio")
            elif name == "xdp":
                seconds, counters = _send_xdp(lab, frames)
            else:
                seconds, counters = _send_injector(lab, frames, bypass=name == "injector")
    rx1 = _wait_settled(lab)
    tx1 = link_stats(lab.ns, lab.tx)
    arrived = rx1 - rx0["rx_packets"]
    problem = []
    if counters.get("queued") != frames:
        problem.append(f"queued {counters.get('queued')} of {frames}")
    if arrived != frames:
        problem.append(f"{frames - arrived} of {frames} did not arrive")
    # veth counts a frame in the peer's rx_packets only once it was handed to
    # the peer's receive path; one it could not hand over (backlog full) is
    # the sender's tx_dropped. (The peer's rx_dropped counts every frame here:
    # nothing in the namespace takes this EtherType.)
    import netring_chan

    return dict(name=name, seconds=seconds, arrived=arrived, sender=counters, cpu=dict(LAST_CPU),
                tree=os.path.dirname(os.path.dirname(os.path.abspath(netring_chan.__file__))),
                if_tx=tx1["tx_packets"] - tx0["tx_packets"], if_tx_dropped=tx1["tx_dropped"] - tx0["tx_dropped"],
                problem="; ".join(problem))


def _tx_pps(d: dict[str, Any]) -> float:
    return float(d["arrived"]) / float(d["seconds"])


def _tx_ratio(d: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    if ref is None or "error" in d or "error" in ref:
        return None
    return _tx_pps(d) / _tx_pps(ref)


def _cpu_ns(d: dict[str, Any], part: str | None = None) -> float:
    """CPU ns per arrived frame: user, sys, or (None) both."""
    c = d.get("cpu") or {}
    v = c.get(part, 0.0) if part else c.get("user", 0.0) + c.get("sys", 0.0)
    return 1e9 * v / max(1, d["arrived"])


def _cpu_ratio(d: dict[str, Any], ref: dict[str, Any] | None) -> float | None:
    """Frames per CPU second over the peer's (the CPU-time ratio)."""
    if ref is None or "error" in d or "error" in ref or not _cpu_ns(d) or not _cpu_ns(ref):
        return None
    return _cpu_ns(ref) / _cpu_ns(d)


# --- bridge --------------------------------------------------------------------------


VARIANTS = {"pass": "Bridge, pass-through callback", "none": "Bridge, no callback"}
BRIDGE_CPUS = {1}  # trafgen keeps CPU 0


def _passthrough(pkt: Any, direction: Any) -> None:
    return None  # forward as is


def bridge_measure(bl: BridgeLab, variant: str, pps: int, seconds: float,
                   capture_options: dict[str, int] | None = None) -> dict[str, Any]:
    """Offer ``pps`` frames/s for ``seconds`` to a Bridge; count what reached B.

    ``capture_options`` go to the Bridge's two captures (default: the
    Bridge's own ring geometry).
    """
    from netring_chan.bridge import Bridge

    bl.pace(pps)
    err: list[BaseException] = []
    cpus = BRIDGE_CPUS & os.sched_getaffinity(0) or None
    with pinned(cpus), bl.inside_x():
        br = Bridge(bl.a1, bl.b1, _passthrough if variant == "pass" else None,
                    capture_options=capture_options or None)
        try:
            def run() -> None:
                try:
                    br.run()
                except BaseException as e:  # handed to the measuring thread
                    err.append(e)

            t = threading.Thread(target=run, name="bench-bridge")
            t.start()
            time.sleep(0.2)
            c0 = bl.counters()
            gen = bl.generator(seconds=seconds)
            try:
                gen.wait(timeout=seconds + 30)
            finally:
                gen.kill()
            time.sleep(SETTLE_S)
            br.stop()
            t.join(5)
            if t.is_alive():
                raise BenchError("Bridge.run() did not return within 5 s of stop()")
            c1 = bl.counters()
            st = br.stats().a_to_b
        finally:
            br.close()
    if err:
        raise BenchError(f"Bridge.run() raised {err[0]!r}")
    d = {k: c1[k] - c0[k] for k in c0}
    tx_s = gen.tx_seconds or gen.seconds
    return dict(requested=pps, seconds=tx_s, offered=d["a1_rx"], offered_pps=d["a1_rx"] / tx_s,
                arrived=d["b0_rx"], lost=d["a1_rx"] - d["b0_rx"], gen_lost=d["a0_tx"] - d["a1_rx"],
                counters=d, bridge=dataclasses.asdict(st))


def bridge_capture_options(a: argparse.Namespace) -> dict[str, int]:
    """``--bridge-blocks`` / ``--bridge-block-timeout-ms`` as Capture options (0: the Bridge's default)."""
    opts = {}
    if a.bridge_blocks:
        opts["block_count"] = a.bridge_blocks
    if a.bridge_block_timeout_ms:
        opts["block_timeout_ms"] = a.bridge_block_timeout_ms
    return opts


def _zero_loss(d: dict[str, Any]) -> bool:
    return "error" not in d and d["offered"] > 0 and d["lost"] == 0


# --- worker processes ----------------------------------------------------------------


def spawn(kind: str, what: str, spec: str, a: argparse.Namespace) -> dict[str, Any]:
    """One measurement in a fresh ``run.py --worker`` process; its result."""
    run_py = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run.py")
    cmd = [sys.executable, run_py, "--worker", f"{kind}:{what}:{spec}",
           "--frames", str(a.frames), "--duration", str(a.duration),
           "--bridge-blocks", str(a.bridge_blocks), "--bridge-block-timeout-ms", str(a.bridge_block_timeout_ms)]
    limit = 120 + (a.frames / 10_000 if kind == "tx" else a.duration)
    env = None
    if what.endswith(BEFORE):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(a.tx_before))
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = p.communicate(timeout=limit)
    except BaseException as e:
        # SIGINT, not SIGKILL: the worker's finally blocks stop its trafgen
        # and close its rings before the lab goes away.
        p.send_signal(signal.SIGINT)
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            return dict(error=f"worker timed out after {limit:.0f} s")
        raise
    line = stdout.strip().splitlines()[-1:]
    try:
        d: dict[str, Any] = json.loads(line[0])
    except (IndexError, ValueError):
        tail = (stderr or stdout).strip().splitlines()[-3:]
        return dict(error=f"worker failed (exit {p.returncode}): {' | '.join(tail)}")
    return d


def worker(kind: str, what: str, spec: str, a: argparse.Namespace) -> int:
    """``--worker tx:SENDER:LAB`` or ``--worker bridge:VARIANT@PPS:LAB``: one JSON line."""
    try:
        if kind == "tx":
            d = tx_measure(BenchLab(existing=spec), what, a.frames)
        else:
            variant, pps = what.split("@")
            d = bridge_measure(BridgeLab(existing=spec), variant, int(pps), a.duration, bridge_capture_options(a))
    except BenchError as e:
        d = dict(error=str(e))
    print(json.dumps(d), flush=True)
    return 0


# --- output --------------------------------------------------------------------------


def _fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def _span(xs: list[float], fmt: Callable[[float], str]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return fmt(xs[0])
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}..{fmt(max(xs))}]"


def _table(header: list[str], rows: list[list[str]]) -> str:
    w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells))

    return "\n".join([line(header), line(["-" * x for x in w])] + [line(r) for r in rows])


# --- the two modes -------------------------------------------------------------------


def run_tx(a: argparse.Namespace) -> bool:
    """``--mode tx``; True when every measurement added up."""
    senders = [s for s in SENDERS if not a.senders or s.name in a.senders.split(",")]
    if a.tx_before:
        # Each netring_chan sender twice: this tree, then the --tx-before one.
        senders = [x for s in senders for x in ([s] if s.peer is None else
                                               [s, Sender(s.name + BEFORE, s.label + " [before]", s.peer)])]
    runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in senders}
    print()
    print(f"== tx: {a.frames:,} {FRAME_LEN}-byte frames per sender out of one veth end, counted arriving on "
          f"the other (its rx_packets); every sender on CPU {TX_CPU}; a fresh process each")
    with BenchLab() as lab:
        for rnd in range(a.repeat):
            for s in senders:
                runs[s.name].append(spawn("tx", s.name, lab.spec, a))
            rows = []
            for s in senders:
                d = runs[s.name][rnd]
                if "error" in d:
                    rows.append([s.label, f"ERROR: {d['error']}"] + [""] * 10)
                    continue
                ref = runs[s.peer][rnd] if s.peer in runs else None
                r = _tx_ratio(d, ref)
                rc = _cpu_ratio(d, ref)
                lost = a.frames - d["arrived"]
                rows.append([s.label, _fmt_int(d["arrived"]), f"{d['seconds']:.3f}", _fmt_int(_tx_pps(d)),
                             _fmt_int(lost), _fmt_int(d["if_tx_dropped"]),
                             "-" if r is None else f"{r:.2f}x", f"{_cpu_ns(d, 'user'):.0f}",
                             f"{_cpu_ns(d, 'sys'):.0f}", "-" if rc is None else f"{rc:.2f}x", d["problem"] or "ok"])
            print(f"-- round {rnd + 1}/{a.repeat}")
            print(_table(["sender", "arrived", "seconds", "arrived/s", "lost", "tx_dropped", "vs trafgen",
                          "user ns/f", "sys ns/f", "vs trafgen CPU", "check"], rows), flush=True)
    if a.tx_before:
        trees = sorted({f"{s.name}: {d.get('tree')}" for s in senders for d in runs[s.name] if d.get("tree")})
        print("netring_chan imported from: " + "; ".join(trees))
    if a.repeat > 1:
        rows = []
        for s in senders:
            ok = [(i, d) for i, d in enumerate(runs[s.name]) if "error" not in d]
            ratios = [x for i, d in ok if s.peer in runs and (x := _tx_ratio(d, runs[s.peer][i])) is not None]
            cratios = [x for i, d in ok if s.peer in runs and (x := _cpu_ratio(d, runs[s.peer][i])) is not None]
            rows.append([s.label, _span([_tx_pps(d) for _, d in ok], _fmt_int),
                         _span(ratios, lambda x: f"{x:.2f}x"), _span([_cpu_ns(d) for _, d in ok], _fmt_int),
                         _span(cratios, lambda x: f"{x:.2f}x"), str(len(runs[s.name]) - len(ok))])
        print(f"-- tx summary over {a.repeat} rounds: median [min..max]")
        print(_table(["sender", "arrived/s", "vs trafgen", "CPU ns/frame", "vs trafgen CPU", "errors"], rows),
              flush=True)
    return not any("error" in d or d.get("problem") for rs in runs.values() for d in rs)


def _step_row(variant: str, d: dict[str, Any]) -> list[str]:
    if "error" in d:
        return [variant, _fmt_int(d.get("requested", 0)), f"ERROR: {d['error']}"] + [""] * 8
    b = d["bridge"]
    c = d["counters"]
    veth = c["b1_tx_dropped"]
    return [variant, _fmt_int(d["requested"]), _fmt_int(d["offered_pps"]), _fmt_int(d["offered"]),
            _fmt_int(d["arrived"]), _fmt_int(d["arrived"] / d["seconds"]), _fmt_int(d["lost"]), f"{100 * d['lost'] / max(1, d['offered']):.3f}%",
            _fmt_int(b["kernel_drops"]), _fmt_int(b["ring_full"]), _fmt_int(veth)]


_STEP_HDR = ["bridge", "asked pps", "offered pps", "offered", "arrived B", "arrived/s", "lost", "loss",
             "ring drops", "tx full", "b1 tx_dropped"]


def search(bl: BridgeLab, variant: str, a: argparse.Namespace) -> dict[str, Any]:
    """Double the rate until a loss, then bisect ``--bridge-steps`` times."""
    steps: list[dict[str, Any]] = []
    good: dict[str, Any] | None = None
    bad: dict[str, Any] | None = None
    rows: list[list[str]] = []

    def step(pps: int) -> dict[str, Any]:
        d = spawn("bridge", f"{variant}@{pps}", bl.spec, a)
        d.setdefault("requested", pps)
        steps.append(d)
        rows.append(_step_row(variant, d))
        return d

    rate = a.bridge_start
    limited = False
    while True:
        d = step(rate)
        if "error" in d:
            break
        if not _zero_loss(d):
            bad = d
            break
        good = d
        if d["offered_pps"] < 0.9 * rate:
            limited = True  # the generator could not offer more: the search cannot go higher
            break
        if rate >= a.bridge_max:
            break
        rate = min(rate * 2, a.bridge_max)
    for _ in range(a.bridge_steps):
        if bad is None or "error" in steps[-1]:
            break
        lo = good["requested"] if good else 0
        hi = bad["requested"]
        if lo and hi / lo < 1.04:
            break
        d = step((lo + hi) // 2)
        if "error" in d:
            break
        if _zero_loss(d):
            good = d
        else:
            bad = d
    # One step far above: how fast the bridge forwards when it cannot keep up.
    over = None
    if a.bridge_overload and "error" not in steps[-1]:
        over = step(a.bridge_max)
    print(_table(_STEP_HDR, rows), flush=True)
    return dict(steps=steps, good=good, bad=bad, limited=limited, over=over)


def run_bridge(a: argparse.Namespace) -> bool:
    """``--mode bridge``; True when every search ended with a zero-loss rate and no error."""
    variants = [v for v in a.bridges.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise BenchError(f"unknown --bridges {sorted(unknown)}; known: {sorted(VARIANTS)}")
    print()
    opts = bridge_capture_options(a)
    geometry = ", ".join(f"{k}={v}" for k, v in opts.items()) or "the Bridge's default"
    print(f"== bridge: A -> X -> B, trafgen in A (CPU 0) paced by tbf on its veth, Bridge in X (CPU "
          f"{sorted(BRIDGE_CPUS)}), {FRAME_LEN}-byte frames, {a.duration:g} s per step; zero loss = every frame "
          f"offered to the bridge (a1 rx_packets) arrived on b0; capture rings: {geometry}")
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with BridgeLab() as bl:
        for rnd in range(a.repeat):
            print(f"-- round {rnd + 1}/{a.repeat}")
            for v in variants:
                results[v].append(search(bl, v, a))
    rows = []
    ok = True
    for v in variants:
        goods = [float(r["good"]["offered_pps"]) for r in results[v] if r["good"]]
        bads = [float(r["bad"]["offered_pps"]) for r in results[v] if r["bad"]]
        losses = [100 * r["bad"]["lost"] / max(1, r["bad"]["offered"]) for r in results[v] if r["bad"]]
        # Under overload the bridge forwards as fast as it can.
        over = [r["over"] for r in results[v] if r["over"] and "error" not in r["over"]]
        fwd = [float(d["arrived"] / d["seconds"]) for d in over]
        offered_over = [float(d["offered_pps"]) for d in over]
        errs = sum(1 for r in results[v] for d in r["steps"] if "error" in d)
        ok &= errs == 0 and len(goods) == len(results[v])
        lim = sum(1 for r in results[v] if r["limited"])
        rows.append([VARIANTS[v], _span(goods, _fmt_int), _span(bads, _fmt_int),
                     _span(losses, lambda x: f"{x:.3f}%"), _span(fwd, _fmt_int), _span(offered_over, _fmt_int),
                     str(lim), str(errs)])
    print(f"-- bridge summary over {a.repeat} round(s): median [min..max] of measured offered rates")
    print(_table(["bridge", "zero-loss pps", "loss from pps", "loss there", "overload: arrived/s",
                  "of offered pps", "gen-limited", "errors"], rows),
          flush=True)
    return ok
