"""The command, driven as a user drives it: subprocesses inside a veth lab.

``python -m netring_chan ...`` (and once the installed ``netring-chan``
script) runs in the lab's namespace through ``ip netns exec``; frames come
from the lab's stdlib sender on the peer end; files are read back by
tshark. Ctrl-C is a real SIGINT.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import netring_chan as nc
from lab import Lab, frame, mac

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONWARNINGS": "error", "COLUMNS": "200"}
LINE = re.compile(r"^\d\d:\d\d:\d\d\.\d{6} (\S+)\s+(.*) length (\d+)$")


def _cmd(lab: Lab | None, *args: str) -> list[str]:
    base = [sys.executable, "-m", "netring_chan", *args]
    return base if lab is None else ["ip", "netns", "exec", lab.ns, *base]


def _start(lab: Lab, *args: str, ready: str = "capturing on", **kw: Any) -> subprocess.Popen[str]:
    """Start the command and wait until it says it is capturing."""
    proc = subprocess.Popen(_cmd(lab, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, cwd=ROOT, **kw)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    if not first.startswith(ready):
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"no {ready!r} line: {first!r}\n{out}\n{err}")
    return proc


def _finish(proc: subprocess.Popen[str], timeout: float = 15) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _run(lab: Lab | None, *args: str, timeout: float = 20, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cmd(lab, *args), capture_output=True, text=True, env=ENV, cwd=ROOT,
                          timeout=timeout, **kw)


def _udp4(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 1, 0, 64, 17, 0,
                     bytes([10, 0, 0, 2]), bytes([10, 0, 0, 1]))
    return frame(dst, src, ip + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload, 0x0800)


def _frames(n: int) -> list[bytes]:
    return [frame(mac(1), mac(2), struct.pack("!I", i) + bytes(42 + i)) for i in range(n)]


def _summary_ok(err: str, packets: int) -> None:
    assert re.search(rf"^{packets} packets \(\d+ bytes\) captured on ", err, re.M), err
    m = re.search(r"accounting: kernel packets (\d+) = delivered (\d+) \+ kernel drops (\d+) \+ queue drops "
                  r"(\d+) \+ queued (\d+) \+ lost (\d+) \(balanced\)", err)
    assert m, err
    kp, dl, kd, qd, q, lost = map(int, m.groups())
    assert kp == dl + kd + qd + q + lost and kd == qd == lost == 0


# -- capture -------------------------------------------------------------------------


@pytest.mark.privileged
def test_capture_count_prints_one_line_per_packet(lab: Lab) -> None:
    proc = _start(lab, "capture", "-i", lab.a, "-c", "6")
    sent = _frames(5) + [_udp4(mac(2), mac(1), 5353, 53, b"q" * 30)]
    lab.send(sent)
    rc, out, err = _finish(proc)
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 6, out
    parsed = [LINE.match(ln) for ln in lines]
    assert all(parsed), out
    assert [int(m.group(3)) for m in parsed if m] == [len(f) for f in sent]
    assert all(m.group(1) == "in" for m in parsed if m)
    for m in parsed[:5]:
        assert m is not None and m.group(2) == "02:00:00:00:00:02 > 02:00:00:00:00:01 ethertype 0x88b5 (local-exp-1)"
    assert parsed[5] is not None and parsed[5].group(2) == "10.0.0.2:5353 > 10.0.0.1:53 UDP"
    _summary_ok(err, 6)


@pytest.mark.privileged
def test_capture_filter_and_duration(lab: Lab) -> None:
    t0 = time.monotonic()
    proc = _start(lab, "capture", "-i", lab.a, "--duration", "1.5", "-f", "udp")
    lab.send(_frames(3) + [_udp4(mac(2), mac(1), 1, 2, b"x" * 20)])
    rc, out, err = _finish(proc)
    assert rc == 0, err
    assert time.monotonic() - t0 < 8
    assert [ln.split(" length ")[1] for ln in out.splitlines()] == ["62"], out
    _summary_ok(err, 1)


@pytest.mark.privileged
def test_ctrl_c_ends_cleanly_with_a_summary(lab: Lab) -> None:
    proc = _start(lab, "capture", "-i", lab.a)
    lab.send(_frames(20))
    assert proc.stdout is not None
    got = [proc.stdout.readline() for _ in range(20)]  # the packets are out before the signal
    assert all(LINE.match(ln.rstrip("\n")) for ln in got), got
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    assert rc == 0, err
    assert out == "", out
    assert "(stopped by Ctrl-C)" in err and "Traceback" not in err, err
    _summary_ok(err, 20)


@pytest.mark.privileged
def test_status_line_on_a_terminal_only(lab: Lab) -> None:
    # stderr on a pseudo-terminal: the rich status line shows; stdout is a pipe and stays clean.
    master, slave = os.openpty()
    proc = subprocess.Popen(_cmd(lab, "capture", "-i", lab.a, "--duration", "1.5"), stdout=subprocess.PIPE,
                            stderr=slave, text=True, env={**ENV, "TERM": "xterm"}, cwd=ROOT)
    os.close(slave)
    seen = b""
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if b"capturing on" in seen and b"pkt/s" not in seen:
                lab.send(_frames(3))
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    text = seen.decode(errors="replace")
    assert "pkt/s" in text and "Mbit/s" in text and "kernel drops" in text, text
    assert "\x1b[" not in out and "pkt/s" not in out  # only packet lines on stdout
    assert len(out.splitlines()) >= 3


# -- stats -------------------------------------------------------------------------


@pytest.mark.privileged
def test_stats_prints_counters(lab: Lab) -> None:
    proc = _start(lab, "stats", "-i", lab.a, "--duration", "1.6", "--interval", "0.4", ready="counting on")
    lab.send(_frames(10))
    rc, out, err = _finish(proc)
    assert rc == 0, err
    periodic = [ln for ln in out.splitlines() if re.match(r"^\s*\d+\.\ds packets \d+ bytes \d+ pkt/s", ln)]
    assert len(periodic) >= 2, out
    assert re.search(r"^total: 10 packets, \d+ bytes in ", out, re.M), out
    assert re.search(r"kernel drops\s*│\s*0", out), out
    assert "(balanced)" in out, out


# -- errors that speak to a person ----------------------------------------------------


@pytest.mark.privileged
def test_unknown_interface_lists_the_interfaces(lab: Lab) -> None:
    r = _run(lab, "capture", "-i", "nosuch0")
    assert r.returncode == 1
    assert "no network interface named 'nosuch0'" in r.stderr, r.stderr
    for name in ("lo", lab.a, lab.b):
        assert re.search(rf"\b{name}\b", r.stderr.split("exist:")[1]), r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.privileged
def test_bad_filter_shows_the_expression_and_libpcap_message(lab: Lab) -> None:
    r = _run(lab, "capture", "-i", lab.a, "-f", "tcp port nonsense-port-x")
    assert r.returncode == 2
    assert "'tcp port nonsense-port-x'" in r.stderr, r.stderr
    try:
        nc.compile_filter("tcp port nonsense-port-x")
    except nc.FilterError as e:
        libpcap_msg = str(e).split(": ", 1)[1]
    assert libpcap_msg in r.stderr


@pytest.mark.privileged
def test_xdp_backend_is_not_in_this_version(lab: Lab) -> None:
    r = _run(lab, "capture", "-i", lab.a, "--backend", "xdp")
    assert r.returncode == 2
    assert "AF_XDP backend is not available in this version" in r.stderr, r.stderr


@pytest.mark.privileged
def test_missing_capability_names_it_and_how_to_grant_it(lab: Lab) -> None:
    # A real refusal by the kernel: root without CAP_NET_RAW (dropped from the
    # bounding set), so the interpreter under /root stays reachable.
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    r = subprocess.run(["ip", "netns", "exec", lab.ns, "setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw",
                        *_cmd(None, "capture", "-i", lab.a)],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=20)
    assert r.returncode == 1, r.stderr
    assert "CAP_NET_RAW" in r.stderr and "sudo " in r.stderr and "setcap cap_net_raw+ep" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.unprivileged
def test_capability_message_unit() -> None:
    from netring_chan.cli import explain

    status, msg = explain(nc.CapabilityError(1, "socket(AF_PACKET)", "CAP_NET_RAW"))
    assert status == 1
    assert "CAP_NET_RAW" in msg and "sudo netring-chan" in msg and "setcap cap_net_raw+ep" in msg
    status, msg = explain(nc.InterfaceNotFoundError("zz9"))
    assert status == 1 and "'zz9'" in msg and "lo" in msg


@pytest.mark.unprivileged
def test_summary_never_raises_on_odd_frames() -> None:
    from netring_chan.cli._summary import dissect

    for n in range(0, 80):
        for base in (_udp4(mac(2), mac(1), 1, 2, b"x" * 30),
                     frame(mac(1), mac(2), b"\x00\x05\x86\xdd" + b"\x60" + bytes(60), 0x8100),
                     frame(mac(1), mac(2), bytes.fromhex("0001080006040001") + bytes(20), 0x0806)):
            assert isinstance(dissect(base[:n]), str)
    assert dissect(b"\xff" * 200).startswith("ff:ff")


# -- demo ----------------------------------------------------------------------------


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


@pytest.mark.privileged
def test_demo_end_to_end_leaves_nothing_but_its_file() -> None:
    from conftest import need_privileges

    need_privileges()
    r = _run(None, "demo", "--frames", "2000", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    ns = re.search(r"^namespace (ncdemo-[0-9a-f]{8}): veth (\S+) .* <-> (\S+) ", out, re.M)
    assert ns, out
    rows = re.findall(r"^│ (sync|asyncio|trio)\s+│\s+(\d+) │\s+(\d+) │\s+(yes|no)\s+│$", out, re.M)
    assert [(face, int(p), o) for face, p, _, o in rows] == [("sync", 2000, "yes"), ("asyncio", 2000, "yes"),
                                                             ("trio", 2000, "yes")], out
    assert len(set(b for _, _, b, _ in rows)) == 1
    assert out.count("(balanced)") == 3, out
    m = re.search(r"^pcapng of what the sync consumer received: (\S+\.pcapng)$", out, re.M)
    assert m, out
    path = Path(m.group(1))
    try:
        assert len(_tshark_lens(path)) == 2000
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert ns.group(1) not in _netns_list()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert ns.group(2) not in links and ns.group(3) not in links


@pytest.mark.privileged
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_interrupted_cleans_up(sig: signal.Signals) -> None:
    from conftest import need_privileges

    need_privileges()
    proc = subprocess.Popen(_cmd(None, "demo", "--hold", "20"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, cwd=ROOT)
    assert proc.stdout is not None
    head = ""
    while "holding" not in head:
        line = proc.stdout.readline()
        if not line:
            break
        head += line
    ns = re.search(r"^namespace (ncdemo-[0-9a-f]{8})", head, re.M)
    f = re.search(r"writes what it receives to (\S+)$", head, re.M)
    assert ns and f and "holding" in head, head
    assert ns.group(1) in _netns_list()
    proc.send_signal(sig)
    rc, out, err = _finish(proc)
    assert rc == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert ns.group(1) not in _netns_list()
    assert not Path(f.group(1)).parent.exists()


@pytest.mark.unprivileged
def test_demo_not_root_says_what_to_do() -> None:
    import argparse

    from netring_chan.cli import demo

    if os.geteuid() == 0:
        real = os.geteuid
        os.geteuid = lambda: 65534  # type: ignore[assignment]
    else:
        real = None
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            rc = demo.run_demo(argparse.Namespace(frames=10, hold=0.0))
    finally:
        if real is not None:
            os.geteuid = real  # type: ignore[assignment]
    assert rc == 1
    msg = buf.getvalue()
    assert "CAP_NET_ADMIN" in msg and "CAP_NET_RAW" in msg and "sudo netring-chan demo" in msg, msg


# -- files: -w and inject -r ------------------------------------------------------------


def _script() -> str:
    """The installed ``netring-chan`` entry point (next to the interpreter)."""
    path = Path(sys.executable).parent / "netring-chan"
    if not path.exists():
        pytest.skip("the netring-chan script is not installed (pip install -e .)")
    return str(path)


def _tshark_lens(path: Path) -> list[int]:
    if shutil.which("tshark") is None:
        pytest.skip("needs tshark")
    r = subprocess.run(["tshark", "-r", str(path), "-T", "fields", "-e", "frame.len"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


@pytest.mark.privileged
@pytest.mark.parametrize("ext", ["pcapng", "pcap"])
def test_ctrl_c_with_write_leaves_a_complete_file(lab: Lab, tmp_path: Path, ext: str) -> None:
    out_file = tmp_path / f"cap.{ext}"
    proc = _start(lab, "capture", "-i", lab.a, "-w", str(out_file))
    sent = _frames(100)
    lab.send(sent)
    time.sleep(0.3)  # a few block timeouts: the frames are in the ring or the queue
    proc.send_signal(signal.SIGINT)
    rc, out, err = _finish(proc)
    assert rc == 0, err
    assert out == ""
    _summary_ok(err, 100)
    assert f"wrote {out_file}" in err
    assert _tshark_lens(out_file) == [len(f) for f in sent]
    if ext == "pcapng":  # the statistics block closes the file: tshark reads the counters
        r = subprocess.run(["tshark", "-r", str(out_file), "-q", "-z", "io,stat,0"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr


@pytest.mark.privileged
def test_capture_count_to_file_with_rotation(lab: Lab, tmp_path: Path) -> None:
    base = tmp_path / "ring.pcapng"
    proc = _start(lab, "capture", "-i", lab.a, "-w", str(base), "-c", "150", "--rotate", "size=4k,files=3")
    lab.send(_frames(160))
    rc, out, err = _finish(proc)
    assert rc == 0, err
    files = sorted(tmp_path.iterdir())
    assert 1 < len(files) <= 3, files
    lens = [n for f in files for n in _tshark_lens(f)]
    assert 0 < len(lens) <= 150
    assert re.search(r"^150 packets \(\d+ bytes\) captured", err, re.M), err


def _write_pcap(path: Path, frames: list[bytes], step: float) -> None:
    import dpkt  # an independent writer

    with open(path, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i, fr in enumerate(frames):
            w.writepkt(fr, ts=1_700_000_000 + i * step)


@pytest.mark.privileged
@pytest.mark.parametrize("pace", ["recorded", "rate", "max-loop"])
def test_inject_replays_a_file(lab: Lab, tmp_path: Path, pace: str) -> None:
    path = tmp_path / "in.pcap"
    frames = [frame(mac(1), mac(2), struct.pack("!I", i) + bytes(50 + i)) for i in range(8)]
    _write_pcap(path, frames + [frame(mac(1), mac(2), bytes(3000))], step=0.05)  # the last: above the MTU
    extra, loops, floor = {"recorded": ([], 1, 0.35), "rate": (["--rate", "40"], 1, 0.17),
                           "max-loop": (["--rate", "max", "--loop", "2"], 2, 0.0)}[pace]
    with nc.Capture(lab.a, protocol=0x88B5, block_timeout_ms=10) as cap:
        cmd = [_script() if pace == "max-loop" else "", "inject", "-i", lab.b, "-r", str(path), *extra]
        argv = ["ip", "netns", "exec", lab.ns, *cmd] if cmd[0] else _cmd(lab, *cmd[1:])
        t0 = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=30)
        dt = time.monotonic() - t0
        got = [bytes(p.data) for p in cap.packets(idle_timeout=0.3)]
    assert r.returncode == 0, r.stderr
    assert got == frames * loops
    assert dt >= floor
    assert f"sent {8 * loops} frames" in r.stdout, r.stdout
    assert "skipped 1 frames" in r.stdout if loops == 1 else "skipped 2 frames" in r.stdout, r.stdout


@pytest.mark.privileged
def test_inject_not_a_capture_file(lab: Lab, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"this is not a capture file at all")
    r = _run(lab, "inject", "-i", lab.b, "-r", str(bad))
    assert r.returncode == 1 and str(bad) in r.stderr and "Traceback" not in r.stderr, r.stderr
