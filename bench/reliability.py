#!/usr/bin/env python3
"""netring_chan reliability figures: fuzz, signal storm, stop/error latency, flood.

    python3 bench/reliability.py [--part fuzz|signals|latency|flood|all] [--quick]

A measurement script, not a test: it prints one table per part and asserts
nothing. See bench/README.md ("Reliability figures") for what each column
means.

- fuzz: malformed TPACKET_V3 blocks (mutated from kernel-shaped blocks, and
  random bytes), each placed against a PROT_NONE guard page (ending at the
  upper one, then starting at the lower one) and walked by
  ``walk_block``; what walks is copied out and every field of every packet
  read. Runs in a child process, so a crash (SIGSEGV: an out-of-bounds read
  hit the guard page) is counted and the campaign resumes after it.
- signals: SIGALRM every 1 ms (setitimer) in the consuming process while a
  separate process sends, through every blocking call of every face.
- latency: stop latency with a full queue and nobody reading, and error
  latency after ``ip link del`` of the captured (or sending) interface.
- flood: trafgen at its maximum rate through each service face.

Everything runs in a private network namespace ``ncbench-<random>`` (bench/_lab.py) (veths made
here, traffic only between them), deleted on every exit path. Each
measurement runs in a fresh worker process inside that namespace, killed
(with everything it started) if it overruns its time budget. Needs root for
all parts but fuzz.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import mmap
import os
import queue
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _lab import ETH_P_BENCH, BenchError, BenchLab, Generator, mac, privilege_problem, sh, trafgen_problem  # noqa: E402

PAGE = mmap.PAGESIZE
SELF = os.path.abspath(__file__)


# =====================================================================================
# Small shared helpers
# =====================================================================================


def emit(obj: dict[str, Any]) -> None:
    """A worker's result: the last line of its stdout."""
    sys.stdout.write("RESULT " + json.dumps(obj) + "\n")
    sys.stdout.flush()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def seq_frame(dst: bytes, src: bytes, seq: int) -> bytes:
    """64 bytes: Ethernet header, the sequence number, padding."""
    return dst + src + ETH_P_BENCH.to_bytes(2, "big") + seq.to_bytes(8, "big") + b"\xab" * 42


def seq_of(data: Any) -> int:
    return int.from_bytes(bytes(data[14:22]), "big")


def veth(r: str, t: str) -> None:
    """A veth pair ``r`` (mac ..:01) <-> ``t`` (mac ..:02), up (called inside the namespace)."""
    sh("ip", "link", "add", r, "address", mac(1).hex(":"), "type", "veth", "peer", "name", t,
       "address", mac(2).hex(":"))
    sh("ip", "link", "set", r, "up")
    sh("ip", "link", "set", t, "up")


def if_rx_packets(ifname: str) -> int:
    with open(f"/sys/class/net/{ifname}/statistics/rx_packets") as f:
        return int(f.read())


def slow_qdisc(ifname: str, rate: str = "1mbit") -> None:
    """tbf: ~1950 64-byte frames/s; its queue (1 MB) holds every skb a small TX ring can have in flight."""
    sh("tc", "qdisc", "add", "dev", ifname, "root", "tbf", "rate", rate, "burst", "2kb", "limit", "1mb")


def fmt_s(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 1000:.0f} ms" if x < 10 else f"{x:.1f} s"


def table(title: str, cols: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in cols]] + [[str(c) for c in r] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    out = [f"\n{title}", "| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(cells[0])) + " |",
           "| " + " | ".join("-" * w[i] for i in range(len(cols))) + " |"]
    for r in cells[1:]:
        out.append("| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |")
    return "\n".join(out)


# =====================================================================================
# Part 1: fuzz (no root, no network)
# =====================================================================================


class Guarded:
    """[PROT_NONE][pages][PROT_NONE]: a block placed to end at the upper guard
    (or start at the lower one) faults on the first byte read outside it.
    As tests/test_walker.py's ``Guarded``, with a guard on both sides."""

    def __init__(self, pages: int) -> None:
        import ctypes

        from netring_chan._lowlevel import ffi

        self.size = pages * PAGE
        self.mm = mmap.mmap(-1, self.size + 2 * PAGE)
        self.base = ffi.from_buffer(self.mm)
        self.addr = int(ffi.cast("uintptr_t", self.base))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        for at in (self.addr, self.addr + PAGE + self.size):
            if libc.mprotect(at, PAGE, 0) != 0:  # PROT_NONE
                raise OSError(ctypes.get_errno(), "mprotect")
        self._u8 = ffi.cast("uint8_t *", self.base)

    def place_end(self, data: bytes) -> Any:
        start = PAGE + self.size - len(data)
        self.mm[start:PAGE + self.size] = data
        return self._u8 + start

    def place_start(self, data: bytes) -> Any:
        self.mm[PAGE:PAGE + len(data)] = data
        return self._u8 + PAGE


class Fuzzer:
    """Deterministic inputs: input ``i`` of seed ``s`` is always the same bytes."""

    MAX = 4 * PAGE
    INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 47, 48, 49, 56, 63, 64, 67, 68, 80, 81, 82, 83, 88,
                   96, 0x7F, 0x80, 0xFF, 0x100, 1514, 2048, 4095, 4096, 4097, 8192, 16383, 16384, 65535, 65536,
                   2**31 - 1, 2**31, 2**32 - 1, 2**32 - 2, 2**32 - 8, 2**32 - 16, 2**32 - 48, 2**32 - 82]
    # (offset in the record, width) of every tpacket3_hdr and sockaddr_ll field
    REC_FIELDS = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4), (24, 2), (26, 2), (28, 4), (32, 2), (34, 2),
                  (48, 2), (50, 2), (52, 4), (56, 2), (58, 1), (59, 1)]
    BLK_FIELDS = [(8, 4), (12, 4), (16, 4), (20, 4), (24, 8)]  # block_status, num_pkts, first, blk_len, seq
    KINDS = ("mutated", "random", "random-with-header", "truncated")

    def __init__(self, seed: int, pool_size: int = 300) -> None:
        from netring_chan.testing import tpacket_v3_block

        self.seed = seed
        rng = random.Random(seed)
        self.pool: list[tuple[bytes, list[int]]] = []
        while len(self.pool) < pool_size:
            n = rng.choice([0, 1, 2, 3, 5, 8, 13, 30, 60, 100])
            lens = [rng.choice([14, 15, 60, 64, 100, 1514, rng.randint(1, 1600)]) for _ in range(n)]
            recs, off = [], 48
            for ln in lens:
                recs.append(off)
                off += (82 + ln + 7) & ~7
            if off > self.MAX:
                continue
            size = off if rng.random() < 0.5 else min(self.MAX, max(PAGE, 1 << (off - 1).bit_length()))
            ts = [rng.randint(0, 2**32 * 10**9 - 1) if rng.random() < 0.1 else 1_700_000_000_000_000_000 + k for k in range(n)]
            frames = [rng.randbytes(ln) for ln in lens]
            blk = tpacket_v3_block(frames, ts, size=size, seq=rng.randint(0, 2**64 - 1),
                                   ifindex=rng.randint(-2**31, 2**31 - 1), protocol=rng.randint(0, 0xFFFF))
            self.pool.append((bytes(blk), recs))

    def _val(self, rng: random.Random, ctx: int) -> int:
        r = rng.random()
        if r < 0.6:
            return rng.choice(self.INTERESTING)
        if r < 0.8:
            return max(0, ctx + rng.randint(-16, 16))  # near a length of this block
        return rng.getrandbits(32)

    def make(self, i: int) -> tuple[str, bytes, int]:
        """Input ``i``: (kind, bytes, snaplen)."""
        rng = random.Random(self.seed * 1_000_003 + i)
        kind = self.KINDS[0] if rng.random() < 0.7 else rng.choice(self.KINDS[1:])
        snaplen = 0xFFFFFFFF if rng.random() < 0.8 else rng.randint(1, 2000)
        if kind == "random":
            n = rng.choice([rng.randint(0, 100), rng.randint(0, self.MAX), PAGE, 2 * PAGE, self.MAX])
            return kind, rng.randbytes(n), snaplen
        if kind == "random-with-header":
            n = rng.randint(48, self.MAX)
            b = bytearray(rng.randbytes(n))
            struct.pack_into("<IIIII", b, 0, 1, 0, 1, rng.choice([1, 2, 5, 40, rng.getrandbits(8)]), 48)
            struct.pack_into("<I", b, 20, n if rng.random() < 0.7 else rng.randint(0, n))
            return kind, bytes(b), snaplen
        blk, recs = self.pool[rng.randrange(len(self.pool))]
        b = bytearray(blk)
        if kind == "truncated":
            return kind, bytes(b[:rng.randint(0, len(b))]), snaplen
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4, 6])):
            op = rng.random()
            ln = len(b)
            if op < 0.25:  # a block descriptor field
                off, w = rng.choice(self.BLK_FIELDS)
                if off + w <= ln:
                    b[off:off + w] = (self._val(rng, ln) & ((1 << 8 * w) - 1)).to_bytes(w, "little")
            elif op < 0.55 and recs:  # a field of one record
                rec = rng.choice(recs)
                off, w = rng.choice(self.REC_FIELDS)
                if rec + off + w <= ln:
                    b[rec + off:rec + off + w] = (self._val(rng, ln - rec) & ((1 << 8 * w) - 1)).to_bytes(w, "little")
            elif op < 0.65 and ln >= 4:  # any aligned u32
                off = rng.randrange(0, ln - 3) & ~3
                b[off:off + 4] = self._val(rng, ln).to_bytes(4, "little")
            elif op < 0.75 and ln:  # a random byte / a bit flip
                off = rng.randrange(ln)
                b[off] = rng.getrandbits(8) if rng.random() < 0.5 else b[off] ^ (1 << rng.randrange(8))
            elif op < 0.82:  # cut the block short of what its headers claim
                b = b[:rng.randint(0, ln)]
            elif op < 0.86:  # more bytes than the headers claim
                b += rng.randbytes(rng.randint(1, 200)) if len(b) < self.MAX - 200 else b""
            elif op < 0.93 and len(recs) > 1:  # unaligned or overlapping record chain
                rec = rng.choice(recs)
                if rec + 4 <= ln:
                    cur = int.from_bytes(b[rec:rec + 4], "little")
                    b[rec:rec + 4] = max(0, cur + rng.choice([-8, -4, -2, -1, 1, 2, 4, 8, 16])).to_bytes(4, "little")
            elif ln >= 16:  # copy a chunk of the block over another place
                a, c = rng.randrange(ln), rng.randrange(ln)
                k = rng.randint(1, min(256, ln - max(a, c)) or 1)
                b[c:c + k] = b[a:a + k]
        return kind, bytes(b[:self.MAX]), snaplen


_PKT_FIELDS = ("data", "timestamp_ns", "timestamp", "datetime", "wire_len", "caplen", "truncated", "direction",
               "ifindex", "protocol", "hatype", "source_address", "status", "vlan_tci", "vlan_tpid", "rxhash")
_OWNED_CMP = ("data", "timestamp_ns", "wire_len", "status", "protocol", "ifindex", "rxhash", "vlan_tci",
              "vlan_tpid", "hatype", "source_address", "direction", "caplen", "truncated")


def _exercise(g: Guarded, data: bytes, snaplen: int, where: str, full: bool) -> tuple[int, str]:
    """Walk ``data`` placed at ``where``; read what walked. (-1 refused | packets, inconsistency or '')."""
    import netring_chan as nc
    from netring_chan.rings.afpacket.blocks import Lease, Scratch, own_block, walk_block

    owner = g.place_end(data) if where == "end" else g.place_start(data)
    # The capture threads' one-call walk and copy (own_block) must refuse,
    # and give, exactly what the walk and to_owned() do.
    try:
        fused: Any = own_block(Lease(owner, len(data)), snaplen, Scratch())
    except nc.MalformedBlockError as e:
        fused = e.packets
    try:
        b = walk_block(Lease(owner, len(data)), snaplen)
    except nc.MalformedBlockError as e:
        if not 0 <= e.packets <= len(data) // 68 + 1:
            return -1, f"MalformedBlockError.packets={e.packets}"
        if fused != e.packets:
            return -1, f"own_block gave {fused!r} where the walk refused ({e.packets} packets)"
        return -1, ""
    bad = ""
    with b:
        n = len(b)
        views = [bytes(v) for v in b.datas()]
        ts = list(b.timestamps_ns)
        owned = b.to_owned()
        if owned.datas() != views or list(owned.timestamps_ns) != ts or len(owned) != n:
            bad = "to_owned() differs from the views"
        if list(owned.caplens) != [len(v) for v in views] or owned.nbytes != sum(map(len, views)):
            bad = bad or "caplens/nbytes differ"
        if isinstance(fused, int) or fused.datas() != views or bytes(fused._cols) != bytes(owned._cols):
            bad = bad or "own_block differs from to_owned()"
        _ = (list(owned.wire_lens), b.seq_num, b.timed_out, b.losing, b.first_timestamp_ns, b.last_timestamp_ns)
        for k, (p, o) in enumerate(zip(b, owned)):
            vals = [getattr(p, f) for f in _PKT_FIELDS]
            if bytes(vals[0]) != views[k] or vals[1] != ts[k]:
                bad = bad or f"packet {k}: view data/timestamp differ from datas()/timestamps_ns"
            if full:
                q = p.to_owned()
                for f in _OWNED_CMP:
                    pv = bytes(getattr(p, f)) if f == "data" else getattr(p, f)
                    if not getattr(o, f) == getattr(q, f) == pv:
                        bad = bad or f"packet {k}: {f} differs between view and copies"
                _ = (o.timestamp, o.datetime, repr(o), repr(p))
    if b.released is False:
        bad = bad or "batch not released"
    return n, bad


def worker_fuzz(a: dict[str, Any]) -> None:
    """The campaign from ``start`` to ``count`` (exclusive); progress in a shared file."""
    fz = Fuzzer(a["seed"])
    g = Guarded(pages=Fuzzer.MAX // PAGE)
    fd = os.open(a["progress"], os.O_RDWR)
    prog = mmap.mmap(fd, 8)
    os.close(fd)
    counts = {"walked": 0, "refused": 0, "packets": 0, "inconsistent": 0, "exceptions": 0,
              **{f"kind_{k}": 0 for k in Fuzzer.KINDS}}
    examples: list[str] = []
    t0 = time.monotonic()
    for i in range(a["start"], a["count"]):
        struct.pack_into("<q", prog, 0, i)  # the input being run, for the parent if we die
        kind, data, snaplen = fz.make(i)
        counts[f"kind_{kind}"] += 1
        try:
            n1, bad1 = _exercise(g, data, snaplen, "end", True)
            n2, bad2 = _exercise(g, data, snaplen, "start", False)
        except Exception as e:  # noqa: BLE001 - a Python-level failure: counted, reported
            counts["exceptions"] += 1
            if len(examples) < 5:
                examples.append(f"input {i} ({kind}): {type(e).__name__}: {e}")
            continue
        if n1 != n2:
            bad1 = bad1 or f"walks differ by placement ({n1} vs {n2})"
        if bad1 or bad2:
            counts["inconsistent"] += 1
            if len(examples) < 5:
                examples.append(f"input {i} ({kind}): {bad1 or bad2}")
        if n1 < 0:
            counts["refused"] += 1
        else:
            counts["walked"] += 1
            counts["packets"] += n1
    struct.pack_into("<q", prog, 0, a["count"])
    emit({**counts, "seconds": time.monotonic() - t0, "examples": examples})


def worker_fuzz_selfcheck(a: dict[str, Any]) -> None:
    """The guard page can fail a walk: a block told 64 bytes longer than its memory must SIGSEGV."""
    from netring_chan._lowlevel import ffi, lib
    from netring_chan.testing import tpacket_v3_block

    g = Guarded(pages=2)
    data = bytes(tpacket_v3_block([bytes(100)] * 3, [1, 2, 3], size=48 + 3 * 184))
    blk = g.place_end(data[:-64])
    out = ffi.new("struct nc_pkt[]", 8)
    info = ffi.new("struct nc_block_info *")
    n = lib.nc_walk_block(blk, len(data), out, 8, info)  # the size lies
    ffi.buffer(blk + out[2].data_off, out[2].snaplen)[:]
    emit({"survived": True, "n": n})


def run_fuzz(args: argparse.Namespace) -> list[str]:
    count = args.fuzz_n or (10_000 if args.quick else 120_000)
    seed = args.seed
    print(f"\n== fuzz: {count:,} inputs, seed {seed} ==", flush=True)
    sc = subprocess.run([sys.executable, SELF, "--worker", "fuzz-selfcheck", "--args", "{}"],
                        capture_output=True, text=True, timeout=60)
    armed = sc.returncode == -signal.SIGSEGV
    fd, path = tempfile_path("ncrel-fuzz-")
    os.ftruncate(fd, 8)
    os.close(fd)
    totals: dict[str, Any] = {}
    crashes: list[str] = []
    start = 0
    t0 = time.monotonic()
    try:
        while start < count:
            with open(path, "r+b") as f:
                f.write(struct.pack("<q", start))
            p = subprocess.run([sys.executable, SELF, "--worker", "fuzz", "--args",
                                json.dumps({"seed": seed, "start": start, "count": count, "progress": path})],
                               capture_output=True, text=True, timeout=3600)
            with open(path, "rb") as f:
                at = struct.unpack("<q", f.read(8))[0]
            if p.returncode == 0:
                r = result_of(p.stdout)
                for k, v in r.items():
                    if k == "examples":
                        totals.setdefault(k, []).extend(v)
                    elif k != "seconds":
                        totals[k] = totals.get(k, 0) + v
                start = count
            elif p.returncode > 0:  # the harness failed, not the library under test
                raise BenchError(f"fuzz worker failed (exit {p.returncode}): {p.stderr.strip()[-1500:]}")
            else:
                crashes.append(f"input {at} (signal {-p.returncode}): {p.stderr.strip()[-300:]}")
                if len(crashes) >= 50:
                    break
                start = at + 1  # resume after the input that killed it
    finally:
        os.unlink(path)
    secs = time.monotonic() - t0
    done = totals.get("walked", 0) + totals.get("refused", 0) + totals.get("exceptions", 0) + len(crashes)
    kinds = ", ".join(f"{k} {totals.get('kind_' + k, 0):,}" for k in Fuzzer.KINDS)
    rows = [[f"{done:,}", f"{totals.get('walked', 0):,}", f"{totals.get('packets', 0):,}",
             f"{totals.get('refused', 0):,}", len(crashes), len(crashes), totals.get("exceptions", 0),
             totals.get("inconsistent", 0), f"{done / secs:,.0f}", "yes" if armed else f"NO ({sc.returncode})"]]
    out = [table("fuzz: malformed TPACKET_V3 blocks against PROT_NONE guard pages (walked twice: ending at the "
                 "upper guard, starting at the lower one)",
                 ["inputs", "walked OK", "packets read", "refused (MalformedBlockError)", "crashes",
                  "OOB reads", "other exceptions", "inconsistent", "inputs/s", "guard armed"], rows),
           f"kinds: {kinds}; {secs:.0f} s"]
    for e in crashes[:5] + totals.get("examples", [])[:5]:
        out.append(f"  ! {e}")
    print("\n".join(out), flush=True)
    return out


def tempfile_path(prefix: str) -> tuple[int, str]:
    import tempfile
    return tempfile.mkstemp(prefix=prefix)


def result_of(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    raise BenchError(f"worker gave no result: {stdout[-500:]!r}")


# =====================================================================================
# Workers (run inside the namespace) and the parent's handle on them
# =====================================================================================

_WORKERS: set[subprocess.Popen[str]] = set()


class Worker:
    """A worker process inside the lab namespace, in its own process group."""

    def __init__(self, ns: str, name: str, args: dict[str, Any]) -> None:
        cmd = ["ip", "netns", "exec", ns, sys.executable, SELF, "--worker", name, "--args", json.dumps(args)]
        self.name = name
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        _WORKERS.add(self.p)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout
        for line in self.p.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _read_err(self) -> None:
        assert self.p.stderr
        for line in self.p.stderr:
            self.err.append(line)

    def wait_line(self, prefix: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no {prefix!r} within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                time.sleep(0.1)
                raise BenchError(f"{self.name} exited ({self.p.poll()}) before {prefix!r}: "
                                 f"{''.join(self.err)[-800:]}")
            if line.startswith(prefix):
                return line

    def tell(self, line: str) -> None:
        assert self.p.stdin
        with contextlib.suppress(BrokenPipeError):
            self.p.stdin.write(line + "\n")
            self.p.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.wait_line("RESULT ", timeout)
        finally:
            self.kill()
        return json.loads(line[7:])  # type: ignore[no-any-return]

    def kill(self) -> None:
        if self.p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait()
        _WORKERS.discard(self.p)


def run_worker(ns: str, name: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    w = Worker(ns, name, args)
    try:
        return w.result(timeout)
    except BenchError as e:
        return {"failed": str(e)}


def stdin_lines() -> "queue.Queue[str]":
    """The parent's commands to a worker, one per line, read in a thread."""
    q: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            q.put(line.strip())
        q.put("EOF")
    threading.Thread(target=read, daemon=True).start()
    return q


def exc_name(e: BaseException) -> str:
    cause = e.__cause__
    return type(e).__name__ + (f"<-{type(cause).__name__}" if cause is not None else "") + f": {e}"[:200]


# =====================================================================================
# Part 2: signal storm
# =====================================================================================

RING = dict(block_size=1 << 16, block_count=32, block_timeout_ms=5, filter=f"ether proto {ETH_P_BENCH:#x}")
CAPTURE_FACES = ["Capture.next_batch_blocking", "CaptureService.get", "CaptureService.get_batch",
                 "CaptureService iteration", "svc.asyncio() receive", "svc.trio() receive",
                 "AsyncCapture recv (asyncio)", "AsyncCapture recv (trio)"]
INJECT_FACES = ["Injector.send", "InjectService.send", "svc.asyncio() send", "svc.trio() send",
                "AsyncInjector.send (asyncio)", "AsyncInjector.send (trio)"]


def worker_sender(a: dict[str, Any]) -> None:
    """Send ``count`` sequence-numbered frames at ``rate`` per second out of ``ifname``."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a["ifname"], 0))
    time.sleep(a.get("delay", 0.0))
    dst, src = mac(1), mac(2)
    t0 = time.monotonic()
    n = 0
    for i in range(a["count"]):
        due = t0 + i / a["rate"]
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        s.send(seq_frame(dst, src, i))
        n += 1
    emit({"sent": n, "seconds": time.monotonic() - t0})


def worker_sink(a: dict[str, Any]) -> None:
    """An independent receiver (stdlib AF_PACKET socket): counts frames until told, then 0.7 s idle."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_BENCH))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((a["ifname"], ETH_P_BENCH))  # Python puts this one in network order itself
    s.settimeout(0.1)
    cmds = stdin_lines()
    say("READY")
    seqs: list[int] = []
    stopping = 0.0
    last = time.monotonic()
    while True:
        try:
            d = s.recv(2048)
            seqs.append(seq_of(d))
            last = time.monotonic()
        except socket.timeout:
            pass
        if not stopping and not cmds.empty():
            stopping = time.monotonic()
        if stopping and time.monotonic() - max(last, stopping) > 0.7:
            break
    emit({"received": len(seqs), "unique": len(set(seqs)), "in_order": seqs == sorted(seqs)})


class Storm:
    """SIGALRM every ``interval`` s for this process (process-directed: any thread may take it)."""

    def __init__(self, interval: float = 0.001) -> None:
        self.hits = 0
        self.interval = interval

    def _h(self, signum: int, frame: Any) -> None:
        self.hits += 1

    def __enter__(self) -> Storm:
        self._old = signal.signal(signal.SIGALRM, self._h)
        signal.setitimer(signal.ITIMER_REAL, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self._old)


def child(name: str, args: dict[str, Any]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, SELF, "--worker", name, "--args", json.dumps(args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def worker_signals(a: dict[str, Any]) -> None:
    face, secs, rate, tag = a["face"], a["seconds"], a["rate"], a["tag"]
    r, t = f"{tag}r", f"{tag}t"
    veth(r, t)
    if face in INJECT_FACES:
        return _signals_inject(face, r, t, secs)
    import trio

    import netring_chan as nc

    count = int(rate * secs)
    got: list[int] = []
    spurious: list[str] = []
    rx0 = if_rx_packets(r)
    stats: dict[str, Any] = {}
    sender = child("sender", {"ifname": t, "count": count, "rate": rate, "delay": 0.3})
    sent: list[int] = []

    def sender_done() -> bool:
        if sender.poll() is None:
            return False
        if not sent:
            sent.append(result_of(sender.communicate()[0])["sent"])
        return True

    def finished() -> bool:
        # The sender is done and every frame arrived, or 1.5 s passed since.
        if not sender_done():
            return False
        if not hasattr(finished, "t"):
            finished.t = time.monotonic()  # type: ignore[attr-defined]
        return len(set(got)) >= sent[0] or time.monotonic() - finished.t > 1.5  # type: ignore[attr-defined]

    def guard(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (queue.Empty, asyncio.TimeoutError):
            return None
        except Exception as e:  # noqa: BLE001 - the figure: a spurious error
            spurious.append(exc_name(e))
            return None

    t0 = time.monotonic()
    with Storm() as storm:
        if face == "Capture.next_batch_blocking":
            with nc.Capture(r, **RING) as cap:
                while not finished() and len(spurious) < 20:
                    b = guard(lambda: cap.next_batch_blocking(0.2))
                    if b is not None:
                        with b:
                            got += [seq_of(d) for d in b.datas()]
                st = cap.stats()
                stats = {"lib_packets": st.packets, "lib_drops": st.drops}
        elif face.startswith("CaptureService"):
            svc = nc.CaptureService(nc.Capture(r, **RING))
            with svc:
                while not finished() and len(spurious) < 20:
                    if face.endswith(".get"):
                        p = guard(lambda: svc.get(timeout=0.2))
                        if p is not None:
                            got.append(seq_of(p.data))
                    elif face.endswith("get_batch"):
                        ob = guard(lambda: svc.get_batch(timeout=0.2))
                        if ob is not None:
                            got += [seq_of(d) for d in ob.datas()]
                    else:
                        def it() -> None:
                            for p in svc.packets(timeout=0.2):
                                got.append(seq_of(p.data))
                                if finished():
                                    break
                        guard(it)
            st = svc.stats()
            stats = {"lib_packets": st.kernel_packets, "lib_drops": st.kernel_drops + st.queue_drops,
                     "balanced": st.balanced}
        elif face == "svc.asyncio() receive":
            svc = nc.CaptureService(nc.Capture(r, **RING))

            async def main_asyncio() -> None:
                async with svc.asyncio() as rx:
                    while not finished() and len(spurious) < 20:
                        try:
                            p = await asyncio.wait_for(rx.receive(), 0.2)
                            got.append(seq_of(p.data))
                        except asyncio.TimeoutError:
                            pass
                        except Exception as e:  # noqa: BLE001
                            spurious.append(exc_name(e))
            asyncio.run(main_asyncio())
            st = svc.stats()
            stats = {"lib_packets": st.kernel_packets, "lib_drops": st.kernel_drops + st.queue_drops,
                     "balanced": st.balanced}
        elif face == "svc.trio() receive":
            svc = nc.CaptureService(nc.Capture(r, **RING))

            async def main_trio() -> None:
                async with svc.trio() as rx:
                    while not finished() and len(spurious) < 20:
                        try:
                            with trio.move_on_after(0.2):
                                p = await rx.receive()
                                got.append(seq_of(p.data))
                        except Exception as e:  # noqa: BLE001
                            spurious.append(exc_name(e))
            trio.run(main_trio)
            st = svc.stats()
            stats = {"lib_packets": st.kernel_packets, "lib_drops": st.kernel_drops + st.queue_drops,
                     "balanced": st.balanced}
        elif face.startswith("AsyncCapture"):
            backend = "trio" if "trio" in face else "asyncio"

            async def main_aio() -> None:
                async with nc.AsyncCapture(r, **RING) as cap:
                    while not finished() and len(spurious) < 20:
                        try:
                            if backend == "trio":
                                with trio.move_on_after(0.2):
                                    ob = await cap.recv()
                                    got.extend(seq_of(d) for d in ob.datas())
                            else:
                                ob = await asyncio.wait_for(cap.recv(), 0.2)
                                got.extend(seq_of(d) for d in ob.datas())
                        except asyncio.TimeoutError:
                            pass
                        except Exception as e:  # noqa: BLE001
                            spurious.append(exc_name(e))
                    st = cap.stats()
                    stats.update(lib_packets=st.packets, lib_drops=st.drops)
            trio.run(main_aio) if backend == "trio" else asyncio.run(main_aio())
        else:
            raise BenchError(f"unknown face {face}")
    finished()
    sender.kill()
    emit({"face": face, "hits": storm.hits, "seconds": time.monotonic() - t0, "sent": sent[0] if sent else None,
          "iface_rx": if_rx_packets(r) - rx0, "received": len(got), "unique": len(set(got)),
          "in_order": got == sorted(got), "spurious": len(spurious), "examples": spurious[:3], **stats})


def _signals_inject(face: str, r: str, t: str, secs: float) -> None:
    import trio

    import netring_chan as nc

    slow_qdisc(t)  # ~1950 frames/s: the 16-slot ring (and the service's queue) stay full
    count = int(1950 * secs)
    frames = [seq_frame(mac(1), mac(2), i) for i in range(count)]
    sink = child("sink", {"ifname": r})
    assert sink.stdout
    sink.stdout.readline()  # READY
    rx0 = if_rx_packets(r)
    spurious: list[str] = []
    stats: dict[str, Any] = {}
    done = 0
    t0 = time.monotonic()
    with Storm() as storm:
        try:
            if face == "Injector.send":
                with nc.Injector(t, frame_count=16) as inj:
                    for f in frames:
                        inj.send(f)
                        done += 1
                        if done % 8 == 0:
                            inj.flush()
                    inj.wait_drained(15)
                    st = inj.stats()
                    stats = {"lib_sent": st.sent, "ring_full": st.ring_full}
            elif face == "InjectService.send":
                svc = nc.InjectService(nc.Injector(t, frame_count=16), capacity=64)
                with svc:
                    for f in frames:
                        svc.send(f)
                        done += 1
                    svc.wait_drained(15)
                st = svc.stats()
                stats = {"lib_sent": st.sent, "ring_full": st.ring_full, "balanced": st.balanced}
            elif face.startswith("svc."):
                svc = nc.InjectService(nc.Injector(t, frame_count=16), capacity=64)
                backend = "trio" if "trio" in face else "asyncio"

                async def main_svc() -> None:
                    nonlocal done
                    async with (svc.trio() if backend == "trio" else svc.asyncio()) as tx:
                        for f in frames:
                            await tx.send(f)
                            done += 1
                        await tx.wait_drained(15)
                trio.run(main_svc) if backend == "trio" else asyncio.run(main_svc())
                st = svc.stats()
                stats = {"lib_sent": st.sent, "ring_full": st.ring_full, "balanced": st.balanced}
            else:
                backend = "trio" if "trio" in face else "asyncio"

                async def main_ainj() -> None:
                    nonlocal done
                    async with nc.AsyncInjector(t, frame_count=16) as inj:
                        for f in frames:
                            await inj.send(f)
                            done += 1
                            if done % 8 == 0:
                                await inj.flush()
                        await inj.wait_drained(15)
                        st = inj.stats()
                        stats.update(lib_sent=st.sent, ring_full=st.ring_full)
                trio.run(main_ainj) if backend == "trio" else asyncio.run(main_ainj())
        except Exception as e:  # noqa: BLE001 - the figure: a spurious error
            spurious.append(exc_name(e))
    secs_taken = time.monotonic() - t0
    assert sink.stdin
    sink.stdin.write("STOP\n")
    sink.stdin.flush()
    got = result_of(sink.communicate(timeout=30)[0])
    emit({"face": face, "hits": storm.hits, "seconds": secs_taken, "sent": done, "iface_rx": if_rx_packets(r) - rx0,
          "received": got["received"], "unique": got["unique"], "in_order": got["in_order"],
          "spurious": len(spurious), "examples": spurious[:3], **stats})


def run_signals(args: argparse.Namespace, lab: BenchLab) -> list[str]:
    secs = 1.5 if args.quick else 3.0
    print(f"\n== signals: SIGALRM every 1 ms, {secs:.1f} s of traffic per face ==", flush=True)
    rows = []
    problems: list[str] = []
    for k, face in enumerate(CAPTURE_FACES + INJECT_FACES):
        r = run_worker(lab.ns, "signals", {"face": face, "seconds": secs, "rate": 2000, "tag": f"sg{k}"},
                       timeout=60 + 4 * secs)
        if "failed" in r:
            rows.append([face] + ["-"] * 8 + [f"FAILED: {r['failed'][:120]}"])
            problems.append(f"{face}: {r['failed']}")
            continue
        sent = r["sent"] or 0
        lost = sent - r["unique"]
        lib = r.get("lib_packets", r.get("lib_sent", "-"))
        drops = r["lib_drops"] if "lib_drops" in r else f"(ring full {r.get('ring_full', 0):,} times)"
        check = []
        if r["spurious"]:
            check.append("spurious: " + "; ".join(r["examples"]))
        if lost:
            check.append(f"{lost} lost")
        if r["unique"] != r["received"]:
            check.append(f"{r['received'] - r['unique']} duplicates")
        if not r["in_order"]:
            check.append("out of order")
        if r["iface_rx"] != sent:
            check.append(f"interface saw {r['iface_rx']}")
        if lib != "-" and lib != sent:
            check.append(f"library counted {lib}")
        if r.get("balanced") is False:
            check.append("stats not balanced")
        rows.append([face, f"{r['hits']:,} in {r['seconds']:.1f} s", f"{sent:,}", f"{r['iface_rx']:,}", lib, drops, f"{r['unique']:,}",
                     r["spurious"], lost, "ok" if not check else "; ".join(check)])
        if check:
            problems.append(f"{face}: {'; '.join(check)}")
        print(f"  {face}: {rows[-1][-1]}", flush=True)
    out = [table("signals: SIGALRM at 1 kHz (setitimer) in the consuming/producing process",
                 ["face", "signals handled", "frames sent", "interface rx", "library count", "library drops",
                  "received", "spurious errors", "lost", "check"], rows)]
    print(out[0], flush=True)
    return out


# =====================================================================================
# Part 3: stop latency and error latency
# =====================================================================================

LAT_CAPTURE = ["sync", "asyncio", "trio", "AsyncCapture asyncio", "AsyncCapture trio"]
LAT_INJECT = ["InjectService sync", "InjectService asyncio", "InjectService trio"]
STOP_RING = dict(block_size=1 << 16, block_count=16, block_timeout_ms=50)


def worker_latency(a: dict[str, Any]) -> None:
    import trio

    import netring_chan as nc

    face, what, tries, ifname = a["face"], a["what"], a["tries"], a.get("ifname", "")
    times: list[float] = []
    errors: list[str] = []
    notes: dict[str, int] = {}
    backend = "trio" if "trio" in face else ("asyncio" if "asyncio" in face else "sync")

    def note(k: str) -> None:
        notes[k] = notes.get(k, 0) + 1

    def run(fn: Callable[[], Any]) -> Any:
        if backend == "trio":
            return trio.run(fn)
        if backend == "asyncio":
            return asyncio.run(fn())
        return fn()

    async def sleep(s: float) -> None:
        await (trio.sleep(s) if backend == "trio" else asyncio.sleep(s))

    if what == "stop" and face in LAT_CAPTURE:
        say("READY")  # the parent starts trafgen at full rate on the lab's pair
        time.sleep(0.5)
        for _ in range(tries):
            cap = nc.Capture(ifname, **STOP_RING)
            if face.startswith("AsyncCapture"):
                async def one_ac() -> float:
                    ac = nc.AsyncCapture(cap)
                    await ac.recv()  # binds the loop; then nobody reads and the ring fills
                    await sleep(0.3)
                    t0 = time.monotonic()
                    await ac.aclose()
                    return time.monotonic() - t0
                times.append(run(one_ac))
                continue
            svc = nc.CaptureService(cap, capacity=4096)

            def full() -> bool:
                st = svc.stats()
                return st.queued >= svc.capacity - 500

            if backend == "sync":
                svc.start()
                end = time.monotonic() + 5
                while not full() and time.monotonic() < end:
                    time.sleep(0.01)
                time.sleep(0.1)  # and the ring behind it
                note("full" if full() else "not full")
                t0 = time.monotonic()
                svc.stop()
                times.append(time.monotonic() - t0)
            else:
                async def one_face() -> float:
                    rx = svc.trio() if backend == "trio" else svc.asyncio()
                    end = time.monotonic() + 5
                    while not full() and time.monotonic() < end:
                        await sleep(0.01)
                    await sleep(0.1)
                    note("full" if full() else "not full")
                    t0 = time.monotonic()
                    await rx.aclose()
                    return time.monotonic() - t0
                times.append(run(one_face))
            st = svc.stats()
            note("balanced" if st.balanced else "NOT balanced")
            if svc.running:
                note("still running")
    elif what == "stop":  # an injection service, queue full behind a slow qdisc
        for k in range(tries):
            r, t = f"ls{k}r", f"ls{k}t"
            veth(r, t)
            slow_qdisc(t, "100kbit")
            svc = nc.InjectService(nc.Injector(t, frame_count=16), capacity=4096)
            frame = seq_frame(mac(1), mac(2), 0)
            if backend == "sync":
                svc.start()
                with contextlib.suppress(queue.Full):
                    while True:
                        svc.send_nowait(frame)
                time.sleep(0.1)
                note("full" if svc.stats().queued >= svc.capacity - 64 else "not full")
                t0 = time.monotonic()
                svc.stop()
                times.append(time.monotonic() - t0)
            else:
                async def one_tx() -> float:
                    tx = svc.trio() if backend == "trio" else svc.asyncio()
                    try:
                        while True:
                            tx.send_nowait(frame)
                    except (queue.Full, trio.WouldBlock):
                        pass
                    await sleep(0.1)
                    note("full" if svc.stats().queued >= svc.capacity - 64 else "not full")
                    t0 = time.monotonic()
                    # Leaving ``async with`` on an exception: the discarding stop.
                    # (aclose() drains, by design bounded by drain_timeout.)
                    await tx.__aexit__(RuntimeError, RuntimeError("leave"), None)
                    return time.monotonic() - t0
                times.append(run(one_tx))
            note("balanced" if svc.stats().balanced else "NOT balanced")
            sh("ip", "link", "del", r)
    else:  # error latency: the interface is deleted while the consumer (producer) waits
        for k in range(tries):
            r, t = f"le{k}r", f"le{k}t"
            veth(r, t)
            victim = r if face in LAT_CAPTURE or face == "Capture" else t
            deleted: list[float] = []

            def delete_later() -> None:
                time.sleep(0.3)
                deleted.append(time.monotonic())
                sh("ip", "link", "del", victim)
                deleted.append(time.monotonic())

            seen: list[Any] = []

            def record(e: BaseException | None) -> None:
                seen.append((time.monotonic(), exc_name(e) if e else "no error within 5 s"))

            deleter = threading.Thread(target=delete_later)
            if face in LAT_INJECT:
                svc = nc.InjectService(nc.Injector(t, frame_count=16), capacity=256)
                slow_qdisc(t, "100kbit")
                frame = seq_frame(mac(1), mac(2), 0)
                if backend == "sync":
                    svc.start()
                    deleter.start()
                    end = time.monotonic() + 5
                    try:
                        while time.monotonic() < end:
                            with contextlib.suppress(queue.Full):  # full behind the slow qdisc
                                svc.send(frame, timeout=0.2)
                        record(None)
                    except Exception as e:  # noqa: BLE001
                        record(e)
                    svc.stop()
                else:
                    async def one_err_tx() -> None:
                        async with (svc.trio() if backend == "trio" else svc.asyncio()) as tx:
                            deleter.start()
                            end = time.monotonic() + 5
                            try:
                                while time.monotonic() < end:
                                    # full behind the slow qdisc: a cancelled send queues nothing
                                    if backend == "trio":
                                        with trio.move_on_after(0.2):
                                            await tx.send(frame)
                                    else:
                                        with contextlib.suppress(asyncio.TimeoutError):
                                            await asyncio.wait_for(tx.send(frame), 0.2)
                                record(None)
                            except Exception as e:  # noqa: BLE001
                                record(e)
                                raise
                    with contextlib.suppress(Exception):
                        run(one_err_tx)
            elif face.startswith("AsyncCapture"):
                async def one_err_ac() -> None:
                    async with nc.AsyncCapture(r, **STOP_RING) as ac:
                        deleter.start()
                        try:
                            if backend == "trio":
                                with trio.fail_after(5):
                                    await ac.recv()
                            else:
                                await asyncio.wait_for(ac.recv(), 5)
                            record(None)
                        except Exception as e:  # noqa: BLE001
                            record(e)
                run(one_err_ac)
            elif face == "Capture":
                with nc.Capture(r, **STOP_RING) as cap:
                    deleter.start()
                    try:
                        cap.next_batch_blocking(5)
                        record(None)
                    except Exception as e:  # noqa: BLE001
                        record(e)
            else:
                svc = nc.CaptureService(nc.Capture(r, **STOP_RING))
                if backend == "sync":
                    svc.start()
                    deleter.start()
                    try:
                        svc.get(timeout=5)
                        record(None)
                    except Exception as e:  # noqa: BLE001
                        record(e)
                    svc.stop()
                else:
                    async def one_err_face() -> None:
                        async with (svc.trio() if backend == "trio" else svc.asyncio()) as rx:
                            deleter.start()
                            try:
                                if backend == "trio":
                                    with trio.fail_after(5):
                                        await rx.receive()
                                else:
                                    await asyncio.wait_for(rx.receive(), 5)
                                record(None)
                            except Exception as e:  # noqa: BLE001
                                record(e)
                    with contextlib.suppress(Exception):
                        run(one_err_face)
            deleter.join()
            when, what_seen = seen[0] if seen else (time.monotonic(), "nothing recorded")
            kind = what_seen.split(":")[0]
            note(kind)
            ok = any(n in kind for n in ("ServiceError", "RingError"))
            if ok and len(deleted) == 2:
                times.append(when - deleted[0])
            else:
                errors.append(what_seen)
            with contextlib.suppress(subprocess.CalledProcessError):
                sh("ip", "link", "del", r)
    emit({"face": face, "what": what, "times": times, "errors": errors[:3], "n_errors": len(errors),
          "notes": notes})


def run_latency(args: argparse.Namespace, lab: BenchLab) -> list[str]:
    tries = args.tries or (5 if args.quick else 20)
    print(f"\n== latency: {tries} tries per face ==", flush=True)
    out = []
    for what in ("stop", "error"):
        rows = []
        faces = LAT_CAPTURE + LAT_INJECT + (["Capture"] if what == "error" else [])
        for face in faces:
            w = Worker(lab.ns, "latency", {"face": face, "what": what, "tries": tries, "ifname": lab.rx})
            gen: Generator | None = None
            try:
                if what == "stop" and face in LAT_CAPTURE:
                    w.wait_line("READY", 30)
                    gen = lab.generator(cpus=1, seconds=600)
                r = w.result(30 + tries * 8)
            except BenchError as e:
                r = {"failed": str(e)}
            finally:
                w.kill()
                if gen is not None:
                    gen.kill()
            if "failed" in r:
                rows.append([face, "-", "-", "-", "-", f"FAILED: {r['failed'][:150]}"])
                continue
            ts = r["times"]
            notes = ", ".join(f"{k} {v}" for k, v in sorted(r["notes"].items()))
            verdict = "ok" if ts and max(ts) < 1.0 and not r["n_errors"] else "OVER 1 s" if ts and max(ts) >= 1.0 \
                else ""
            if r["n_errors"]:
                verdict = (verdict + "; " if verdict else "") + f"{r['n_errors']} tries without the error: " \
                    + "; ".join(r["errors"])
            rows.append([face, len(ts), fmt_s(max(ts)) if ts else "-", fmt_s(statistics.median(ts)) if ts else "-",
                         notes, verdict])
            print(f"  {what} {face}: {rows[-1][2]} max, {rows[-1][3]} median; {notes}; {verdict}", flush=True)
        title = ("stop latency with a full queue and nobody reading (svc.stop() / face aclose(); "
                 "injection async faces: leaving `async with` on an exception)" if what == "stop" else
                 "error latency: from `ip link del` of the interface to the consumer's (producer's) exception")
        out.append(table(title, ["face", "tries", "max", "median", "what was seen", "target < 1 s"], rows))
        print(out[-1], flush=True)
    return out


# =====================================================================================
# Part 4: flood
# =====================================================================================

FLOOD_FACES = ["sync per-packet", "asyncio", "trio"]


def worker_flood(a: dict[str, Any]) -> None:
    import trio

    import netring_chan as nc

    face = a["face"]
    if a.get("pin"):
        os.sched_setaffinity(0, set(a["pin"]))  # trafgen -P 1 has CPU 0
    cmds = stdin_lines()
    svc = nc.CaptureService(nc.Capture(a["ifname"], block_size=1 << 20, block_count=32, block_timeout_ms=50))
    n = nbytes = 0
    tsum = 0
    samples: list[tuple[float, float]] = []
    spurious: list[str] = []
    t_go = [0.0]

    def sampler() -> None:
        while True:
            cmd = None
            with contextlib.suppress(queue.Empty):
                cmd = cmds.get(timeout=0.5)
            samples.append((time.monotonic() - t_go[0], rss_mib(), svc.stats().queued))
            if cmd is not None:  # STOP (or EOF): the load is over
                samples.append((time.monotonic() - t_go[0], rss_mib(), svc.stats().queued))
                svc.stop()
                return

    def go() -> None:
        say("READY")
        t_go[0] = time.monotonic()
        threading.Thread(target=sampler, daemon=True).start()

    try:
        if face == "sync per-packet":
            with svc:
                go()
                for p in svc:
                    nbytes += len(p.data)
                    tsum += p.timestamp_ns
                    n += 1
        else:
            async def main() -> None:
                nonlocal n, nbytes, tsum
                async with (svc.trio() if face == "trio" else svc.asyncio()) as rx:
                    go()
                    async for p in rx:
                        nbytes += len(p.data)
                        tsum += p.timestamp_ns
                        n += 1
            trio.run(main) if face == "trio" else asyncio.run(main())
    except Exception as e:  # noqa: BLE001
        spurious.append(exc_name(e))
    st = svc.stats()
    emit({"face": face, "delivered": n, "nbytes": nbytes, "kernel_packets": st.kernel_packets,
          "kernel_drops": st.kernel_drops, "queue_drops": st.queue_drops, "queued": st.queued,
          "delivered_stats": st.delivered, "peak_queued": st.peak_queued, "balanced": st.balanced,
          "samples": samples, "errors": spurious})


def run_flood(args: argparse.Namespace, lab: BenchLab) -> list[str]:
    secs = 10.0 if args.quick else 60.0
    warm = 5.0
    print(f"\n== flood: {secs:.0f} s of trafgen at full rate (CPU 0) per face, consumer on CPU 1 ==", flush=True)
    rows = []
    for face in FLOOD_FACES:
        w = Worker(lab.ns, "flood", {"face": face, "ifname": lab.rx, "pin": [1] if (os.cpu_count() or 1) > 1 else []})
        gen = None
        try:
            w.wait_line("READY", 30)
            rx0 = lab.rx_packets()
            gen = lab.generator(cpus=1, seconds=secs)
            gen.wait(secs + 30)
            time.sleep(0.3)
            w.tell("STOP")
            r = w.result(60)
            r["iface_rx"] = lab.rx_packets() - rx0
            r["gen_seconds"] = gen.seconds
        except BenchError as e:
            r = {"failed": str(e)}
        finally:
            w.kill()
            if gen is not None:
                gen.kill()
        if "failed" in r:
            rows.append([face] + ["-"] * 10 + [f"FAILED: {r['failed'][:150]}"])
            continue
        smp = r["samples"]
        w_s = next((x for x in smp if x[0] >= warm), smp[0] if smp else [0, float("nan"), 0])
        e_s = smp[-1] if smp else [0, float("nan"), 0]
        at_warm, end = w_s[1], e_s[1]
        peak = max((x[1] for x in smp), default=float("nan"))
        check = []
        if r["nbytes"] != 64 * r["delivered"]:
            check.append("byte total")
        if r["delivered"] != r["delivered_stats"]:
            check.append(f"stats delivered {r['delivered_stats']}")
        if r["kernel_packets"] != r["iface_rx"]:
            check.append(f"kernel {r['kernel_packets']} != interface {r['iface_rx']}")
        if r["errors"]:
            check.append("; ".join(r["errors"]))
        rows.append([face, f"{r['iface_rx'] / r['gen_seconds']:,.0f}", f"{r['delivered']:,}",
                     f"{r['kernel_drops']:,}", f"{r['queue_drops']:,}", f"{r['peak_queued']:,}",
                     "yes" if r["balanced"] else "NO", f"{at_warm:.1f} ({w_s[2]:,})", f"{end:.1f} ({e_s[2]:,})", f"{end - at_warm:+.1f}",
                     f"{peak:.1f}", "ok" if not check else "; ".join(check)])
        print(f"  {face}: {rows[-1]}", flush=True)
    out = [table(f"flood: {secs:.0f} s of 64-byte frames at trafgen's maximum (1 CPU) through each service face "
                 "(touch: len(data) and timestamp_ns of every packet)",
                 ["face", "offered pps", "delivered", "kernel drops", "queue drops", "peak queued",
                  "balanced", f"RSS at {warm:.0f} s MiB (queued)", "RSS at end MiB (queued)", "growth MiB", "peak MiB", "check"], rows)]
    print(out[0], flush=True)
    return out


# =====================================================================================
# main
# =====================================================================================

WORKERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "fuzz": worker_fuzz, "fuzz-selfcheck": worker_fuzz_selfcheck, "sender": worker_sender, "sink": worker_sink,
    "signals": worker_signals, "latency": worker_latency, "flood": worker_flood,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["fuzz", "signals", "latency", "flood", "all"], default="all")
    ap.add_argument("--quick", action="store_true", help="short runs: 10k fuzz inputs, 5 tries, 10 s flood")
    ap.add_argument("--fuzz-n", type=int, default=0, help="fuzz inputs (default 120,000; --quick 10,000)")
    ap.add_argument("--tries", type=int, default=0, help="latency tries per face (default 20; --quick 5)")
    ap.add_argument("--seed", type=int, default=1, help="fuzz seed (input i of a seed is always the same)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        WORKERS[a.worker](json.loads(a.args or "{}"))
        return 0
    parts = ["fuzz", "signals", "latency", "flood"] if a.part == "all" else [a.part]
    if parts != ["fuzz"]:
        prob = privilege_problem() or trafgen_problem(install=False)
        if prob:
            print(f"cannot run {', '.join(p for p in parts if p != 'fuzz')}: {prob}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the namespace is deleted
    import netring_chan
    print(f"netring_chan {getattr(netring_chan, '__version__', '?')} from {os.path.dirname(netring_chan.__file__)}; "
          f"python {sys.version.split()[0]}; kernel {os.uname().release}; {os.cpu_count()} CPUs", flush=True)
    lab: BenchLab | None = None
    t_all = time.monotonic()
    try:
        for part in parts:
            t0 = time.monotonic()
            if part == "fuzz":
                run_fuzz(a)
            else:
                if lab is None:
                    lab = BenchLab()
                    print(f"lab: namespace {lab.ns}", flush=True)
                {"signals": run_signals, "latency": run_latency, "flood": run_flood}[part](a, lab)
            print(f"[{part}: {time.monotonic() - t0:.0f} s]", flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for p in list(_WORKERS):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        if lab is not None:
            lab.close()
    print(f"[total: {time.monotonic() - t_all:.0f} s]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
