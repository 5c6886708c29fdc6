"""The examples run for real inside the lab namespace and see crafted frames."""

from __future__ import annotations

import os
import re
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
