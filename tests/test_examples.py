"""The examples run for real inside the lab namespace and see crafted frames."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import Lab, frame, mac

pytestmark = pytest.mark.privileged

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(lab: Lab, script: str, *args: str, send: list[bytes]) -> tuple[str, float]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, sys.executable, str(EXAMPLES / script), lab.a, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the service is running once this is printed
        assert first.startswith("listening on"), first + proc.stderr.read() if proc.stderr else first
        t0 = time.monotonic()
        lab.send(send)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == "", err
    return first + out, time.monotonic() - t0


CAPTURE_EXAMPLES = [("capture_sync.py",), ("capture_asyncio.py",), ("capture_trio.py",),
                    ("capture_anyio.py", "--backend", "asyncio"), ("capture_anyio.py", "--backend", "trio")]


@pytest.mark.parametrize("script", CAPTURE_EXAMPLES, ids=" ".join)
def test_example_sees_frames_and_stops_at_count(lab: Lab, script: tuple[str, ...]) -> None:
    sent = [frame(mac(1), mac(2), bytes([i]) * (60 + i)) for i in range(5)]
    out, dt = _run(lab, *script, "--count", "5", "--duration", "10", "--filter", "ether proto 0x88b5", send=sent)
    lines = [ln for ln in out.splitlines() if re.match(r"^\d+\.\d{6} ", ln)]
    assert [ln.split()[3] for ln in lines] == [f[:14].hex() for f in sent]
    assert [int(ln.split()[2]) for ln in lines] == [len(f) for f in sent]
    m = re.search(r"captured (\d+) packets; kernel packets (\d+), kernel drops (\d+), "
                  r"queue drops (\d+), left queued (\d+)", out)
    assert m, out
    captured, kpk, kdr, qdr, queued = map(int, m.groups())
    assert captured == 5 and kdr == 0 and qdr == 0
    assert kpk == captured + queued  # the exact balance, as the example prints it
    assert dt < 8  # stopped at --count, not at --duration


@pytest.mark.parametrize("script", CAPTURE_EXAMPLES, ids=" ".join)
def test_example_stops_at_duration(lab: Lab, script: tuple[str, ...]) -> None:
    out, dt = _run(lab, *script, "--duration", "0.5", "--filter", "ether proto 0x88b5", send=[])
    assert "captured 0 packets" in out
    assert dt < 5


def test_write_pcapng_then_replay_file(lab: Lab, tmp_path: Path) -> None:
    sent = [frame(mac(1), mac(2), bytes([i]) * (60 + i)) for i in range(5)]
    out_file = tmp_path / "lab.pcapng"
    out, _ = _run(lab, "write_pcapng.py", str(out_file), "--count", "5", "--duration", "10",
                  "--filter", "ether proto 0x88b5", send=sent)
    m = re.search(r"wrote (\d+) packets to .*; kernel packets (\d+), kernel drops (\d+), queue drops (\d+)", out)
    assert m, out
    assert int(m.group(1)) == int(m.group(2)) == 5 and m.group(3) == m.group(4) == "0"
    proc = subprocess.run([sys.executable, str(EXAMPLES / "replay_file.py"), str(out_file)],
                          capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"^\d+\.\d{9} ", ln)]
    assert [ln.split()[4] for ln in lines] == [f[:14].hex() for f in sent]
    assert [int(ln.split()[3]) for ln in lines] == [len(f) for f in sent]
    assert "ifrecv=5, ifdrop=0, osdrop=0, usrdeliv=5" in proc.stdout
    assert "replayed 5 packets from pcapng file" in proc.stdout


def test_zero_copy_example_reads_blocks(lab: Lab) -> None:
    sent = [frame(mac(1), mac(2), bytes([i]) * (60 + i)) for i in range(5)]
    out, dt = _run(lab, "zero_copy.py", "--count", "5", "--duration", "10",
                   "--filter", "ether proto 0x88b5", send=sent)
    lines = [ln for ln in out.splitlines() if re.match(r"^\d+\.\d{6} ", ln)]
    assert [ln.split()[2] for ln in lines] == [f[:14].hex() for f in sent]
    assert [int(ln.split()[1]) for ln in lines] == [len(f) for f in sent]
    assert re.search(r"read 5 packets in \d+ blocks, kept 5 copies; kernel packets 5, kernel drops 0", out), out
    assert dt < 8


def test_bridge_example_forwards_and_drops(lab_factory: type[Lab]) -> None:
    """a0 <-> a1 bridged; frames sent into b0 come out of b1, but the dropped EtherType does not."""
    import socket
    import struct

    lab = lab_factory(pairs=2)
    (a0, b0), (a1, b1) = lab.ifaces
    keep = [frame(mac(1), mac(2), struct.pack("!I", i) + bytes(50)) for i in range(5)]
    dropped = [frame(mac(1), mac(2), bytes(54), ethertype=0x88B6) for _ in range(3)]
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, str(EXAMPLES / "bridge.py"), a0, a1,
                             "--duration", "20", "--drop-ethertype", "0x88b6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "error"})
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("bridging"), first
        with lab.inside():
            rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            rx.bind((b1, 0))
            rx.settimeout(0.5)
        with rx:
            lab.send(keep + dropped, b0)
            got: list[bytes] = []
            end = time.monotonic() + 5
            while len(got) < len(keep) and time.monotonic() < end:
                try:
                    data, addr = rx.recvfrom(65536)
                except (TimeoutError, socket.timeout):
                    continue
                if addr[2] != socket.PACKET_OUTGOING and data[12:14] in (b"\x88\xb5", b"\x88\xb6"):
                    got.append(data)
            time.sleep(0.3)
            try:
                while True:
                    data, addr = rx.recvfrom(65536)
                    if addr[2] != socket.PACKET_OUTGOING and data[12:14] in (b"\x88\xb5", b"\x88\xb6"):
                        got.append(data)
            except (TimeoutError, socket.timeout):
                pass
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0 and err == "", err
    assert got == keep
    assert "a->b: received 8, forwarded 5, dropped 3, balanced True" in out, out


def test_workers_parquet_example_writes_one_dataset(lab: Lab, tmp_path: Path) -> None:
    """Two fanout workers write the frames of four flows as Parquet shards;
    the dataset the example reads back holds every one of them."""
    from capture_util import hwaddr, ipv4_frame

    with lab.inside():
        dst, src = hwaddr(lab.a), hwaddr(lab.b)
    sent = [ipv4_frame(dst, src, f"10.9.{f}.1", "10.8.0.2", 1000 + f, 2000 + f, bytes([k]) * 20)
            for k in range(5) for f in range(4)]
    out, dt = _run(lab, "workers_parquet.py", str(tmp_path / "dataset"), "--workers", "2",
                   "--count", str(len(sent)), "--duration", "20", "--filter", "udp", send=sent)
    m = re.search(r"workers wrote \[(\d+), (\d+)\] packets \((\d+) in all\); kernel packets (\d+), "
                  r"kernel drops (\d+)", out)
    assert m, out
    a, b, total, kpk, kdr = map(int, m.groups())
    assert a + b == total == kpk == len(sent) and kdr == 0, out
    assert f"the dataset holds {len(sent)} rows" in out, out
    assert dt < 15  # stopped at --count


def test_capture_xdp_example_sees_frames(lab: Lab) -> None:
    sent = [frame(mac(1), mac(2), bytes([i]) * (60 + i)) for i in range(5)]
    out, dt = _run(lab, "capture_xdp.py", "--attach", "skb", "--count", "5", "--duration", "10", send=sent)
    assert "(skb mode, copy)" in out.splitlines()[0], out
    lines = [ln for ln in out.splitlines() if re.match(r"^\d+\.\d{6} ", ln)]
    assert [ln.split()[2] for ln in lines] == [f[:14].hex() for f in sent]
    assert [int(ln.split()[1]) for ln in lines] == [len(f) for f in sent]
    assert "captured 5 packets; socket packets 5, drops 0" in out, out
    assert dt < 8
