"""The benchmark's private network world: one netns, one veth pair, trafgen.

Independent of the library (``ip`` and ``setns`` through ctypes, as
tests/lab.py does). Traffic only ever flows between the two veth ends made
here, inside a namespace made here; the namespace (and with it the veths) is
deleted on every exit path.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from typing import Iterator

CLONE_NEWNET = 0x40000000
ETH_P_BENCH = 0x88B5  # IEEE 802 local experimental EtherType 1
# Bytes handed to the NIC (no FCS): 64, the classic minimum frame, unless
# run.py --frame-len set NCBENCH_FRAME_LEN (its worker processes inherit it).
FRAME_LEN = int(os.environ.get("NCBENCH_FRAME_LEN", "64"))
if not 60 <= FRAME_LEN <= 1514:
    raise ValueError(f"NCBENCH_FRAME_LEN must be 60..1514 (a veth's 1500-byte MTU), got {FRAME_LEN}")
_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to measure."""


class FillError(BenchError):
    """Drain mode: the ring did not end up holding every frame that arrived."""


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def privilege_problem() -> str | None:
    """Why the lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command (apt-get install -y iproute2)"
    return None


def trafgen_problem(install: bool) -> str | None:
    """None when trafgen is usable (installing netsniff-ng if ``install``)."""
    if shutil.which("trafgen"):
        return None
    if install and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "netsniff-ng"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if shutil.which("trafgen"):
            return None
    return ("trafgen not found: install Debian's netsniff-ng package "
            "(apt-get install -y netsniff-ng) or rerun with --install")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Keep the calling thread (and threads it starts) on ``cpus``."""
    if not cpus:
        yield
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, old)


def mac(b: int) -> bytes:
    return bytes([0x02, 0x00, 0x00, 0x00, 0x00, b])


class Generator:
    """One trafgen process sending 64-byte frames out of ``ifname`` in ``ns``.

    trafgen runs inside the namespace (``ip netns exec``), one fork per CPU
    in ``cpus`` forks (trafgen pins fork *i* to CPU *i*). ``--no-sock-mem``
    and ``--notouch-irq`` keep it from retuning host-wide sysctls and IRQ
    affinities.
    """

    def __init__(self, ns: str, ifname: str, dst: bytes, src: bytes, *, cpus: int,
                 count: int | None = None, seconds: float | None = None, qdisc: bool = False,
                 body: str | None = None) -> None:
        """``qdisc``: trafgen's ``-q``, through the interface's qdisc (trafgen
        bypasses it by default, as PACKET_QDISC_BYPASS does). ``body``:
        trafgen's description of what follows the two MAC addresses
        (default: the bench EtherType and a fill to ``FRAME_LEN`` bytes)."""
        self._dir = tempfile.TemporaryDirectory(prefix="ncbench-")
        cfg = os.path.join(self._dir.name, "frame.cfg")
        payload = FRAME_LEN - 14
        if body is None:
            body = f"c16(0x{ETH_P_BENCH:04x}), fill(0xab, {payload})"
        with open(cfg, "w") as f:
            f.write("{ " + ", ".join(f"0x{b:02x}" for b in dst + src) + f", {body} }}\n")
        cmd = ["ip", "netns", "exec", ns]
        if seconds is not None:
            # -k: trafgen can spin on SIGINT when its interface vanished
            # (it keeps retrying the ring flush); then SIGKILL it.
            cmd += ["timeout", "-s", "INT", "-k", "3", f"{seconds:.3f}"]
        cmd += ["trafgen", "-o", ifname, "-i", cfg, "-P", str(cpus), "--no-sock-mem", "--notouch-irq"]
        if count is not None:
            cmd += ["-n", str(count)]
        if qdisc:
            cmd += ["-q"]
        self.started = time.monotonic()
        self.ended: float | None = None
        self.sent: int | None = None
        self.tx_seconds: float | None = None  # trafgen's own clock around its send loop (CPU 0)
        # Its own process group, so kill() reaches trafgen (and its forks)
        # behind ip and timeout.
        self._p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)

    def poll(self) -> bool:
        """True once trafgen has exited (and its output was read)."""
        if self.ended is not None:
            return True
        if self._p.poll() is None:
            return False
        self._finish()
        return True

    def wait(self, timeout: float) -> None:
        try:
            self._p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"trafgen did not finish within {timeout:.0f} s") from None
        self._finish()

    def _finish(self) -> None:
        if self.ended is not None:
            return
        self.ended = time.monotonic()
        out = self._p.stdout.read() if self._p.stdout else ""
        m = re.search(r"(\d+) packets outgoing", out)
        self.sent = int(m.group(1)) if m else None
        t = re.search(r"(\d+) sec, (\d+) usec on CPU0", out)
        self.tx_seconds = int(t.group(1)) + int(t.group(2)) / 1e6 if t else None
        # timeout(1) exits 124 after its SIGINT; trafgen itself exits 0.
        if self._p.returncode not in (0, 124) or self.sent is None:
            raise BenchError(f"trafgen failed (exit {self._p.returncode}): {out.strip()[-500:]}")
        self._dir.cleanup()

    @property
    def seconds(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def kill(self) -> None:
        if self._p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._p.pid, signal.SIGINT)
            try:
                self._p.wait(2)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._p.pid, signal.SIGKILL)
                self._p.wait()
        if self._p.stdout:
            self._p.stdout.close()
        self._dir.cleanup()


class BenchLab:
    """Namespace ``ns`` with veth ``rx`` (captured) and ``tx`` (trafgen's end)."""

    def __init__(self, existing: str | None = None) -> None:
        """Build a new lab, or (``existing``, from ``spec``) use one another process owns."""
        self.rx_mac, self.tx_mac = mac(1), mac(2)
        self._owner = existing is None
        if existing is not None:
            self.ns, self.rx, self.tx = existing.split(",")
            return
        tag = uuid.uuid4().hex[:8]
        self.ns = f"ncbench-{tag}"
        self.rx, self.tx = f"ncb{tag}r", f"ncb{tag}t"
        sh("ip", "netns", "add", self.ns)
        try:
            # No IPv6: no router solicitations or MLD reports sneaking into
            # the counts.
            for k in ("all", "default"):
                sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
            sh("ip", "-n", self.ns, "link", "add", self.rx, "address", self.rx_mac.hex(":"),
               "type", "veth", "peer", "name", self.tx, "address", self.tx_mac.hex(":"))
            for ifc in (self.rx, self.tx):
                sh("ip", "-n", self.ns, "link", "set", ifc, "up")
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Run the calling thread (and threads it starts) inside the netns."""
        with open("/proc/thread-self/ns/net") as orig, open(f"/run/netns/{self.ns}") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(orig.fileno())

    def rx_packets(self) -> int:
        """``rx_packets`` of the captured veth end (its sysfs statistic)."""
        out = sh("ip", "-n", self.ns, "-j", "-s", "link", "show", "dev", self.rx).stdout
        return int(json.loads(out)[0]["stats64"]["rx"]["packets"])

    def generator(self, *, cpus: int, count: int | None = None, seconds: float | None = None,
                  qdisc: bool = False, body: str | None = None) -> Generator:
        return Generator(self.ns, self.tx, self.rx_mac, self.tx_mac, cpus=cpus, count=count, seconds=seconds,
                         qdisc=qdisc, body=body)

    def frame(self) -> bytes:
        """The frame trafgen sends (tx end -> rx end), as bytes."""
        return (self.rx_mac + self.tx_mac + ETH_P_BENCH.to_bytes(2, "big")
                + b"\xab" * (FRAME_LEN - 14))

    @property
    def spec(self) -> str:
        """What a worker process passes to ``BenchLab(existing=...)``."""
        return f"{self.ns},{self.rx},{self.tx}"

    def close(self) -> None:
        if self._owner:
            sh("ip", "netns", "del", self.ns, check=False)

    def __enter__(self) -> BenchLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def link_stats(ns: str, ifname: str) -> dict[str, int]:
    """``rx_packets``, ``rx_dropped``, ``tx_packets``, ``tx_dropped`` of ``ifname``,
    read inside ``ns`` (``/sys`` shows the namespace it was mounted in)."""
    out = sh("ip", "-n", ns, "-j", "-s", "link", "show", "dev", ifname).stdout
    st = json.loads(out)[0]["stats64"]
    return {"rx_packets": int(st["rx"]["packets"]), "rx_dropped": int(st["rx"]["dropped"]),
            "tx_packets": int(st["tx"]["packets"]), "tx_dropped": int(st["tx"]["dropped"])}


class BridgeLab:
    """Namespaces A, X, B: veth ``a0`` (in A) to ``a1`` (in X), ``b1`` (in X) to ``b0`` (in B).

    The bridge under test runs in X on ``a1``/``b1``; trafgen sends from
    ``a0`` to ``b0``'s MAC. No IP addresses and no IPv6, so nothing but the
    generator's frames crosses. All three namespaces are deleted on close.
    """

    def __init__(self, existing: str | None = None) -> None:
        self.a0_mac, self.b0_mac = mac(0x0A), mac(0x0B)
        self._owner = existing is None
        self.made: list[str] = []
        if existing is not None:
            self.A, self.X, self.B, self.a0, self.a1, self.b1, self.b0 = existing.split(",")
            return
        tag = uuid.uuid4().hex[:8]
        self.A, self.X, self.B = f"ncbench-{tag}-a", f"ncbench-{tag}-x", f"ncbench-{tag}-b"
        self.a0, self.a1, self.b1, self.b0 = (f"ncb{tag}{s}" for s in ("a0", "a1", "b1", "b0"))
        try:
            for ns in (self.A, self.X, self.B):
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
                for k in ("all", "default"):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
            sh("ip", "-n", self.A, "link", "add", self.a0, "address", self.a0_mac.hex(":"),
               "type", "veth", "peer", "name", self.a1, "netns", self.X)
            sh("ip", "-n", self.B, "link", "add", self.b0, "address", self.b0_mac.hex(":"),
               "type", "veth", "peer", "name", self.b1, "netns", self.X)
            for ns, ifc in ((self.A, self.a0), (self.X, self.a1), (self.X, self.b1), (self.B, self.b0)):
                sh("ip", "-n", ns, "link", "set", ifc, "up")
        except BaseException:
            self.close()
            raise

    @property
    def spec(self) -> str:
        """What a worker process passes to ``BridgeLab(existing=...)``."""
        return ",".join((self.A, self.X, self.B, self.a0, self.a1, self.b1, self.b0))

    @contextlib.contextmanager
    def inside_x(self) -> Iterator[None]:
        """Run the calling thread (and threads it starts) in the bridge namespace X."""
        with open("/proc/thread-self/ns/net") as orig, open(f"/run/netns/{self.X}") as target:
            _setns(target.fileno())
            try:
                yield
            finally:
                _setns(orig.fileno())

    def pace(self, pps: int, burst_frames: int = 20, limit_frames: int = 100) -> None:
        """Shape ``a0`` to ``pps`` 64-byte frames/s with a tbf qdisc.

        trafgen's own ``--rate`` is a one-second token bucket (it sends the
        second's quota at full speed, then sleeps) and its ``--gap`` tops out
        near 60 kpps here (one nanosleep per frame), so neither paces a
        zero-loss search. tbf releases at most ``burst_frames`` back to back;
        its queue is kept short enough (``limit_frames``) that trafgen's
        socket send buffer, not the qdisc, pushes back on it.
        """
        sh("ip", "netns", "exec", self.A, "tc", "qdisc", "replace", "dev", self.a0, "root", "tbf",
           "rate", f"{pps * FRAME_LEN * 8}bit", "burst", str(burst_frames * FRAME_LEN),
           "limit", str(limit_frames * FRAME_LEN))

    def generator(self, *, seconds: float) -> Generator:
        """trafgen on CPU 0 in A, through a0's qdisc (see ``pace``), a0 -> b0."""
        return Generator(self.A, self.a0, self.b0_mac, self.a0_mac, cpus=1, seconds=seconds, qdisc=True)

    def counters(self) -> dict[str, int]:
        """Frames out of a0, into a1 (offered to the bridge), out of b1 and into b0."""
        a0, a1 = link_stats(self.A, self.a0), link_stats(self.X, self.a1)
        b1, b0 = link_stats(self.X, self.b1), link_stats(self.B, self.b0)
        return {"a0_tx": a0["tx_packets"], "a0_tx_dropped": a0["tx_dropped"], "a1_rx": a1["rx_packets"],
                "a1_rx_dropped": a1["rx_dropped"], "b1_tx": b1["tx_packets"], "b1_tx_dropped": b1["tx_dropped"],
                "b0_rx": b0["rx_packets"], "b0_rx_dropped": b0["rx_dropped"]}

    def close(self) -> None:
        if self._owner:
            for ns in self.made:
                sh("ip", "netns", "del", ns, check=False)
            self.made = []

    def __enter__(self) -> BridgeLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
