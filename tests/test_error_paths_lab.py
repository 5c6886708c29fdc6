"""Error paths that need a real interface (a veth lab, root): an Injector's
frame checks on odd frames, a closed Injector, and the command refusing a
file name it cannot write after it opened the capture."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import netring_chan as nc
from netring_chan.cli import main
from lab import Lab

pytestmark = pytest.mark.privileged


def tagged(n: int) -> bytearray:
    f = bytearray(n)
    f[12:14] = b"\x81\x00"  # an 802.1Q tag: 4 more bytes allowed
    return f


def test_injector_frame_checks(lab: Lab) -> None:
    with nc.Injector(lab.a) as inj:
        assert inj.max_frame == 1514
        with pytest.raises(TypeError, match=r"^frame must be a bytes-like object, got int$"):
            inj.check_frame(12345)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^frame must be a bytes-like object, got str 'abc'$"):
            inj.send("abc")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^frame of 10 bytes is shorter than the 14-byte Ethernet header$"):
            inj.check_frame(bytearray(10))
        assert inj.check_frame(tagged(1518)) == 1518  # a buffer, not bytes: read through cdata
        with pytest.raises(ValueError) as e:
            inj.check_frame(tagged(1519))
        assert str(e.value) == f"frame of 1519 bytes exceeds {lab.a!r} MTU 1500 + 14 + 4 (802.1Q) = 1518"
        with pytest.raises(ValueError) as e:
            inj.check_frame(bytearray(1515))
        assert str(e.value) == f"frame of 1515 bytes exceeds {lab.a!r} MTU 1500 + 14 = 1514"
        assert inj.stats().queued == 0
    with pytest.raises(nc.ClosedError, match="closed"):
        inj.send(bytes(60))


def test_cli_write_to_a_name_without_a_format(lab: Lab, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "capture.txt"
    status = main(["capture", "-i", lab.a, "-w", str(out), "-c", "1"])
    gc.collect()  # the capture opened first must have been closed (filterwarnings=error)
    err = capsys.readouterr().err
    assert status == 2 and f"cannot tell the format of {str(out)!r} by its extension" in err, err
    assert not out.exists()
