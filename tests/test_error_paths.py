"""Error paths and edge cases a user can reach, with no root and no network.

The command's error messages (called in-process), the packet summary on odd
frames, the file writer and reader on bad input, closed objects and damaged
files, the async faces of the services on empty/closed/full queues, and
``AsyncInjector`` over a stalled ``MemorySink``. Every test asserts the
exception type and what its message names, or exact values.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import queue
import struct
from pathlib import Path
from typing import Any

import pytest

import netring_chan as nc
from netring_chan.cli import explain, main
from netring_chan.cli._summary import describe, dissect
from netring_chan.testing import MemorySink, MemorySource

pytestmark = pytest.mark.unprivileged

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
HEAD = "02:00:00:00:00:02 > 02:00:00:00:00:01"


def eth(ethertype: int, payload: bytes) -> bytes:
    return MAC_A + MAC_B + struct.pack("!H", ethertype) + payload


def ipv4(proto: int, l4: bytes, *, ihl: int = 5, frag: int = 0) -> bytes:
    return (struct.pack("!BBHHHBBH", 0x40 | ihl, 0, 20 + len(l4), 1, frag, 64, proto, 0)
            + bytes([10, 0, 0, 1]) + bytes([10, 0, 0, 2]) + l4)


def ipv6(nxt: int, rest: bytes) -> bytes:
    return (struct.pack("!IHBB", 0x60000000, len(rest), nxt, 64)
            + bytes.fromhex("fe80" + "00" * 13 + "01") + bytes.fromhex("fe80" + "00" * 13 + "02") + rest)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8, 0)


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, flags, 1024, 0, 0)


def arp(op: int, *, hlen: int = 6, plen: int = 4) -> bytes:
    return (struct.pack("!HHBBH", 1, 0x0800, hlen, plen, op) + MAC_B + bytes([10, 0, 0, 2])
            + bytes(6) + bytes([10, 0, 0, 1]))


# == the packet summary (cli._summary) ================================================


@pytest.mark.parametrize(("data", "expected"), [
    (b"", "[runt frame of 0 bytes]"),
    (b"\x01" * 13, "[runt frame of 13 bytes]"),
    (eth(0x0800, ipv4(6, tcp(1234, 80, 0x12))), "10.0.0.1:1234 > 10.0.0.2:80 TCP [SA]"),
    (eth(0x0800, ipv4(6, tcp(1, 2, 0x12))[:20 + 10]), "10.0.0.1:1 > 10.0.0.2:2 TCP"),
    (eth(0x0800, ipv4(17, b"\x00\x35")), "10.0.0.1 > 10.0.0.2 UDP [truncated]"),
    (eth(0x0800, ipv4(1, bytes([8, 0, 0, 0]))), "10.0.0.1 > 10.0.0.2 ICMP type 8 code 0"),
    (eth(0x0800, ipv4(1, b"\x08")), "10.0.0.1 > 10.0.0.2 ICMP [truncated]"),
    (eth(0x0800, ipv4(47, b"")), "10.0.0.1 > 10.0.0.2 GRE"),
    (eth(0x0800, ipv4(253, b"")), "10.0.0.1 > 10.0.0.2 proto 253"),
    (eth(0x0800, ipv4(17, udp(1, 2), ihl=4)), "10.0.0.1 > 10.0.0.2 IPv4 [bad header length 16]"),
    (eth(0x0800, ipv4(17, udp(1, 2), frag=0x2000 | 185)), "10.0.0.1 > 10.0.0.2 UDP [fragment]"),
    (eth(0x0800, ipv4(17, b"")[:19]), "IPv4 [truncated]"),
    (eth(0x86DD, ipv6(17, udp(53, 5353))), "fe80::1.53 > fe80::2.5353 UDP"),
    (eth(0x86DD, ipv6(58, bytes([128, 0]))), "fe80::1 > fe80::2 ICMPv6 type 128 code 0"),
    # hop-by-hop (0) then a routing header (43) then UDP
    (eth(0x86DD, ipv6(0, bytes([43, 0]) + bytes(6) + bytes([17, 0]) + bytes(6) + udp(7, 9))),
     "fe80::1.7 > fe80::2.9 UDP"),
    (eth(0x86DD, ipv6(0, b"\x11")), "fe80::1 > fe80::2 IPv6 [truncated]"),
    # a fragment header with offset 8: not the first fragment
    (eth(0x86DD, ipv6(44, struct.pack("!BBHI", 6, 0, 8 << 3, 1))), "fe80::1 > fe80::2 TCP [fragment]"),
    # an atomic fragment (offset 0): the header after it is read
    (eth(0x86DD, ipv6(44, struct.pack("!BBHI", 17, 0, 0, 1) + udp(1, 2))), "fe80::1.1 > fe80::2.2 UDP"),
    (eth(0x86DD, ipv6(44, b"\x11\x00\x00")), "fe80::1 > fe80::2 IPv6 [truncated]"),
    (eth(0x86DD, ipv6(17, b"")[:39]), "IPv6 [truncated]"),
    (eth(0x0806, arp(1)), f"{HEAD} ARP who-has 10.0.0.1 tell 10.0.0.2"),
    (eth(0x0806, arp(2)), f"{HEAD} ARP 10.0.0.2 is-at 02:00:00:00:00:02"),
    (eth(0x0806, arp(9)), f"{HEAD} ARP op 9 10.0.0.2 > 10.0.0.1"),
    (eth(0x0806, arp(1, hlen=8)), f"{HEAD} ARP"),
    (eth(0x0806, arp(1)[:27]), f"{HEAD} ARP [truncated]"),
    # stacked tags: 802.1ad 100 outside, 802.1Q 200 inside, then IPv4
    (eth(0x88A8, struct.pack("!HH", 100, 0x8100) + struct.pack("!HH", 0x2000 | 200, 0x0800)
         + ipv4(17, udp(1, 2))), "10.0.0.1:1 > 10.0.0.2:2 UDP vlan 100.200"),
    (eth(0x8100, struct.pack("!HH", 5, 0x88CC)), f"{HEAD} vlan 5 ethertype 0x88cc (LLDP)"),
    (eth(0x8100, b"\x00\x05\x81"), f"{HEAD} vlan [truncated]"),
    (eth(0x0040, b"\xaa\xaa\x03"), f"{HEAD} 802.3 LLC"),
    (eth(0x1234, b""), f"{HEAD} ethertype 0x1234"),
    (eth(0x88B5, b""), f"{HEAD} ethertype 0x88b5 (local-exp-1)"),
])
def test_summary_dissects_odd_frames(data: bytes, expected: str) -> None:
    assert dissect(data) == expected


def test_summary_vlan_tag_taken_off_by_the_kernel_comes_first() -> None:
    tagged = eth(0x8100, struct.pack("!HH", 7, 0x0806) + arp(1))
    assert dissect(tagged, vlan_tci=0x2000 | 3) == f"{HEAD} vlan 3.7 ARP who-has 10.0.0.1 tell 10.0.0.2"


class _Odd:
    """A packet whose metadata raises: ``describe`` must still give one line."""

    def __init__(self, data: Any, **ok: Any) -> None:
        self.data = data
        self._ok = ok

    def __getattr__(self, name: str) -> Any:
        if name in self._ok:
            return self._ok[name]
        raise RuntimeError(f"no {name}")


def test_describe_never_raises_on_broken_metadata() -> None:
    line = describe(_Odd(eth(0x1234, b"")))
    assert line == f"? -     {HEAD} ethertype 0x1234 length 14"
    line = describe(_Odd(None, wire_len=99, timestamp_ns=0, vlan_tci=None))
    assert line.endswith(" -     [undecodable: TypeError] length 99")

    class Dir:
        name = "OUTGOING"

    class Weird:
        name = "LOOPBACK"

    assert " out   " in describe(_Odd(eth(0x1234, b""), direction=Dir(), wire_len=14))
    assert " ?     " in describe(_Odd(eth(0x1234, b""), direction=Weird(), wire_len=14))


# == the command (cli.main, in-process) ===============================================


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["capture", "-i", "lo", "-c", "0"], "argument -c/--count: must be positive, got 0"),
    (["capture", "-i", "lo", "-c", "ten"], "argument -c/--count: not an integer: 'ten'"),
    (["capture", "-i", "lo", "--duration", "inf"], "must be a positive number of seconds, got inf"),
    (["capture", "-i", "lo", "--duration", "soon"], "argument --duration: not a number: 'soon'"),
    (["capture", "-i", "lo", "--backend", "dpdk"], "invalid choice: 'dpdk'"),
    (["inject", "-i", "lo", "-r", "x.pcap", "--loop", "-1"], "must be 0 (for ever) or more, got -1"),
    (["inject", "-i", "lo", "-r", "x.pcap", "--loop", "twice"], "argument --loop: not an integer: 'twice'"),
    (["inject", "-i", "lo", "-r", "x.pcap", "--rate", "-5"], "--rate must be positive, got -5"),
    (["inject", "-i", "lo", "-r", "x.pcap", "--rate", "fastest"],
     "--rate takes packets per second or 'max', got 'fastest'"),
    (["capture"], "the following arguments are required: -i/--interface"),
])
def test_cli_bad_option_values_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                 message: str) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("spec", "message"), [
    ("size=lots", "--rotate 'size=lots': expected size=N[k|M|G], seconds=N[s|m|h] or files=N, got 'size=lots'"),
    ("size", "got 'size'"),
    ("colour=5", "--rotate 'colour=5': cannot read 'colour=5'"),
    ("size=5parsecs", "cannot read 'size=5parsecs'"),
    ("seconds=5d", "cannot read 'seconds=5d'"),
    ("files=1.5", "cannot read 'files=1.5'"),
    ("size=0", "--rotate 'size=0': size must be positive"),
    (" , ", "--rotate ' , ': give size=, seconds= and/or files="),
    # readable, but not a Rotate: a usage error too, reported before anything is opened
    ("files=3", "--rotate 'files=3': Rotate needs size=, seconds= or both"),
])
def test_cli_bad_rotate_spec(capsys: pytest.CaptureFixture[str], tmp_path: Path, spec: str, message: str) -> None:
    out = tmp_path / "x.pcapng"
    status, err = run(capsys, "capture", "-i", "lo", "-w", str(out), "--rotate", spec)
    assert status == 2 and err.startswith("netring-chan: ") and message in err, err
    assert not out.exists()


def test_cli_file_it_cannot_write_is_a_usage_error_before_anything_opens(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # The interface does not exist either: the file name is refused first, so a
    # user without privileges hears about the extension, not the capability.
    out = tmp_path / "capture.txt"
    assert main(["capture", "-i", "nc-no-such0", "-w", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot tell the format of {str(out)!r} by its extension" in err, err
    assert not out.exists()


def test_cli_rotate_without_write(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "capture", "-i", "lo", "--rotate", "size=1M") == (2, "netring-chan: --rotate needs -w FILE\n")


@pytest.mark.parametrize(("spec", "message"), [
    ("bogus:1", "--fanout 'bogus:1': expected MODE:GROUP with MODE one of hash"),
    ("hash", "--fanout 'hash': expected MODE:GROUP"),
    ("hash:x", "--fanout 'hash:x': GROUP must be an integer 0..65535"),
    ("hash:70000", "--fanout 'hash:70000': GROUP must be in 0..65535"),
])
def test_cli_bad_fanout(capsys: pytest.CaptureFixture[str], spec: str, message: str) -> None:
    status, err = run(capsys, "capture", "-i", "lo", "--fanout", spec)
    assert status == 2 and err.startswith(f"netring-chan: {message}"), err


def test_cli_xdp_backend(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(capsys, "capture", "-i", "lo", "--backend", "xdp")
    assert status == 2 and "the AF_XDP backend is not available in this version" in err, err


@pytest.mark.parametrize("cmd", ["capture", "stats"])
def test_cli_unknown_interface(capsys: pytest.CaptureFixture[str], cmd: str) -> None:
    status, err = run(capsys, cmd, "-i", "nosuch0")
    assert status == 1
    assert err.startswith("netring-chan: no network interface named 'nosuch0' here. The interfaces that exist: ")
    assert "lo" in err.split("exist: ")[1].strip().split(", ")


def test_cli_bad_filter(capsys: pytest.CaptureFixture[str]) -> None:
    status, err = run(capsys, "capture", "-i", "lo", "-f", "tcp port nonsense-port-x")
    assert status == 2
    assert err == ("netring-chan: bad filter: invalid filter expression 'tcp port nonsense-port-x': "
                   "unknown port 'nonsense-port-x'\n"), err


def test_cli_debug_reraises(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRING_CLI_DEBUG", "1")
    with pytest.raises(nc.InterfaceNotFoundError):
        main(["capture", "-i", "nosuch0"])
    assert "no network interface named 'nosuch0'" in capsys.readouterr().err


def test_cli_ctrl_c_while_opening(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*a: object, **k: object) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(nc, "compile_filter", interrupted)
    assert run(capsys, "capture", "-i", "lo", "-f", "udp") == (130, "netring-chan: interrupted\n")


def test_cli_inject_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "none.pcap"
    assert run(capsys, "inject", "-i", "lo", "-r", str(missing)) == \
        (1, f"netring-chan: {missing}: No such file or directory\n")


@pytest.mark.parametrize(("content", "what"), [
    (b"", "at offset 0: empty file: not a pcap or pcapng file"),
    (b"GIF89a, not a capture", "at offset 0: not a pcap or pcapng file (magic 0x38464947)"),
])
def test_cli_inject_damaged_file(capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes,
                                 what: str) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(content)
    assert run(capsys, "inject", "-i", "lo", "-r", str(bad)) == \
        (1, f"netring-chan: not a pcap/pcapng file I can read: {bad}: {what}\n")


def test_cli_inject_directory_names_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    status, err = run(capsys, "inject", "-i", "lo", "-r", str(tmp_path))
    assert status == 1 and str(tmp_path) in err and "Is a directory" in err and "Traceback" not in err, err


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 000")
def test_cli_inject_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "secret.pcap"
    with nc.open_writer(f):
        pass
    f.chmod(0)
    assert run(capsys, "inject", "-i", "lo", "-r", str(f)) == (1, f"netring-chan: {f}: Permission denied\n")


def test_cli_inject_unknown_interface_closes_the_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "ok.pcap"
    with nc.open_writer(f):
        pass
    status, err = run(capsys, "inject", "-i", "nosuch0", "-r", str(f))
    gc.collect()  # an unclosed Reader would warn here (filterwarnings=error)
    assert status == 1 and "no network interface named 'nosuch0'" in err, err


def test_explain_maps_each_error() -> None:
    cause = nc.InterfaceNotFoundError("eth9")
    wrapped = nc.ServiceError("nc-rx0", cause)
    wrapped.__cause__ = cause  # as the service raises it
    assert explain(wrapped) == explain(cause)
    assert explain(nc.ServiceError("nc-tx0", RuntimeError("sink died"))) == \
        (1, "the capture failed: nc-tx0 failed: RuntimeError: sink died")
    assert explain(nc.ConfigError("snaplen must be positive")) == (2, "snaplen must be positive")
    assert explain(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")) == \
        (1, "/x/y: No such file or directory")
    assert explain(ZeroDivisionError("boom")) == (1, "ZeroDivisionError: boom")
    status, msg = explain(nc.LibpcapMissingError("filters need libpcap.so.0.8"))
    assert (status, msg) == (1, "filters need libpcap.so.0.8")


# == options and config (no socket is opened before they are checked) ================


@pytest.mark.parametrize("cls", [nc.Capture, nc.Injector])
def test_config_errors_name_the_option(cls: Any) -> None:
    name = cls.__name__
    with pytest.raises(nc.ConfigError, match=rf"^{name}: .*unexpected keyword argument 'bogus'"):
        cls("lo", bogus=1)
    other = nc.InjectorConfig() if cls is nc.Capture else nc.CaptureConfig()
    with pytest.raises(nc.ConfigError, match=rf"^{name}: config must be a {name}Config, got {type(other).__name__}$"):
        cls("lo", config=other)
    own = nc.CaptureConfig() if cls is nc.Capture else nc.InjectorConfig()
    with pytest.raises(nc.ConfigError, match=r"^pass either config= or options, not both: \['snaplen'\]$"):
        cls("lo", config=own, snaplen=64)


# == the file writer ===================================================================


@pytest.mark.parametrize(("kw", "message"), [
    ({"size": 0}, "Rotate.size must be a positive int or None, got 0"),
    ({"size": True}, "Rotate.size must be a positive int or None, got True"),
    ({"size": 1, "files": 1.5}, "Rotate.files must be a positive int or None, got 1.5"),
    ({"seconds": 0}, "Rotate.seconds must be a number > 0 or None, got 0"),
    ({"seconds": "60"}, "Rotate.seconds must be a number > 0 or None, got '60'"),
    ({"files": 3}, "Rotate needs size=, seconds= or both"),
])
def test_rotate_bad_values(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(nc.ConfigError) as e:
        nc.Rotate(**kw)
    assert str(e.value) == message


@pytest.mark.parametrize(("name", "kw", "message"), [
    ("out.txt", {}, "cannot tell the format of '{p}' by its extension; "
                    "pass format= one of ('pcap', 'pcapng', 'parquet')"),
    ("out.pcap", {"format": "erf"}, "format must be one of ('pcap', 'pcapng', 'parquet'), got 'erf'"),
    ("out.pcap", {"snaplen": 0}, "snaplen must be an int in 1..67108864, got 0"),
    ("out.pcap", {"snaplen": True}, "snaplen must be an int in 1..67108864, got True"),
    ("out.pcap", {"linktype": 70000}, "linktype must be an int in 0..65535, got 70000"),
    ("out.pcap", {"rotate": "size=1M"}, "rotate must be a Rotate or None, got 'size=1M'"),
    ("out.pcapng", {"interface": []}, "interface must be a str or a non-empty sequence of str, got []"),
    ("out.pcapng", {"interface": ["eth0", 1]}, "interface must be a str or a non-empty sequence of str"),
    ("out.pcap", {"interface": ["a", "b"]}, "a pcap file has one interface; use pcapng for several"),
])
def test_open_writer_bad_arguments(tmp_path: Path, name: str, kw: dict[str, Any], message: str) -> None:
    p = tmp_path / name
    with pytest.raises(nc.ConfigError) as e:
        nc.open_writer(p, **kw)
    assert str(e.value).startswith(message.format(p=p)), str(e.value)


def test_open_writer_in_a_missing_directory(tmp_path: Path) -> None:
    p = tmp_path / "no" / "such" / "x.pcap"
    with pytest.raises(FileNotFoundError) as e:
        nc.open_writer(p)
    assert e.value.filename == str(p)


def test_closed_writer_raises_closed_error(tmp_path: Path) -> None:
    p = tmp_path / "c.pcapng"
    w = nc.open_writer(p)
    w.close()
    w.close()  # idempotent
    assert w.closed and repr(w) == f"<Writer pcapng {str(p)!r} closed>"
    calls = [lambda: w.write([]), lambda: w.write_stats(ifrecv=1), lambda: w.publish([b"x" * 14]),
             w.flush, w.room, w.wait_room, w.fileno, lambda: w.wait_drained(1.0)]
    for call in calls:
        with pytest.raises(nc.ClosedError) as e:
            call()
        assert str(e.value) == f"writer {str(p)!r} is closed"


def test_writer_argument_errors(tmp_path: Path) -> None:
    with nc.open_writer(tmp_path / "a.pcapng", snaplen=100, interface="eth0") as w:
        for bad, message in ((-1, "ifdrop must be an int in 0..2**64-1, got -1"),
                             (True, "ifdrop must be an int in 0..2**64-1, got True"),
                             (1 << 64, f"ifdrop must be an int in 0..2**64-1, got {1 << 64}")):
            with pytest.raises(nc.ConfigError) as e:
                w.write_stats(ifdrop=bad)
            assert str(e.value) == message
        with pytest.raises(nc.ConfigError, match=r"^interface must be an index of the writer's 1 interface\(s\), got 1$"):
            w.write_stats(ifrecv=1, interface=1)
        with pytest.raises(TypeError, match=r"^frame must be a bytes-like object, got str$"):
            w.check_frame("abc")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^frame must be a bytes-like object, got int$"):
            w.publish([7])  # type: ignore[list-item]
        with pytest.raises(ValueError, match=r"^empty frame$"):
            w.check_frame(b"")
        with pytest.raises(ValueError, match=r"^frame of 101 bytes is longer than the file's snaplen 100$"):
            w.check_frame(bytes(101))
        assert w.write([]) == 0 and w.publish([]) == 0
        # a bad frame after good ones ends the run: the good ones are written
        assert w.publish([bytes(20), bytes(30), bytes(101), bytes(20)]) == 2
        assert w.stats().sent == 2 and w.packets == 2
    with nc.open_reader(w.path) as r:
        b = r.next_batch()
        assert b is not None and [len(p.data) for p in b] == [20, 30]


def test_writer_interface_out_of_range(tmp_path: Path) -> None:
    with nc.open_writer(tmp_path / "a.pcap") as w, MemorySource([eth(0x1234, b"abc")]) as src:
        b = src.next_batch()
        assert b is not None
        with pytest.raises(nc.ConfigError, match=r"^interface must be an index of the writer's 1 interface\(s\), got 2$"):
            w.write(b, interface=2)
        assert w.packets == 0


def _frames(n: int, size: int = 100) -> list[bytes]:
    return [eth(0x88B5, k.to_bytes(4, "big") + bytes(size - 18)) for k in range(n)]


def test_rotation_ring_survives_a_file_removed_meanwhile(tmp_path: Path) -> None:
    # Time-stamped names never come round again: the ring removes the oldest
    # itself, and one removed meanwhile by someone else is no error.
    now = [1_700_000_000.0]
    tmpl = tmp_path / "cap-%H%M%S-{n}.pcap"
    with nc.open_writer(tmpl, rotate=nc.Rotate(seconds=10, files=2), _clock=lambda: now[0]) as w:
        for k in range(4):
            w.publish([bytes(60)])
            if k == 1:
                os.unlink(w.paths[0])
            now[0] += 11
    assert len(set(w.paths)) == 4
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in w.paths[2:])
    assert [os.path.basename(p)[-7:] for p in w.paths] == ["-0.pcap", "-1.pcap", "-0.pcap", "-1.pcap"]


def test_rotation_by_time_with_strftime_names(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    tmpl = tmp_path / "cap-%Y.pcapng"
    with nc.open_writer(tmpl, rotate=nc.Rotate(seconds=10), _clock=lambda: now[0]) as w:
        w.publish([bytes(60)])
        now[0] += 5
        w.publish([bytes(60)])  # same file
        now[0] += 6
        w.publish([bytes(60)])  # 11 s after the first opened: a new one
    year = __import__("time").strftime("%Y", __import__("time").localtime(now[0]))
    assert w.paths == [str(tmp_path / f"cap-{year}.pcapng"), str(tmp_path / f"cap-{year}.pcapng1")]
    counts = []
    for p in w.paths:
        with nc.open_reader(p) as r:
            counts.append(sum(len(b) for b in iter(r.next_batch, None)))
    assert counts == [2, 1]


# == the file reader ==================================================================


def _blk(btype: int, body: bytes, *, trail: int | None = None) -> bytes:
    n = 12 + len(body)
    return struct.pack("=II", btype, n) + body + struct.pack("=I", n if trail is None else trail)


def _shb(major: int = 1, bom: int = 0x1A2B3C4D) -> bytes:
    return _blk(0x0A0D0D0A, struct.pack("=IHHq", bom, major, 0, -1))


def _idb(opts: bytes = b"") -> bytes:
    return _blk(1, struct.pack("=HHI", 1, 0, 65535) + opts)


def _opt(code: int, val: bytes) -> bytes:
    return struct.pack("=HH", code, len(val)) + val + b"\0" * (-len(val) % 4)


def _epb(iface: int, data: bytes, *, caplen: int | None = None) -> bytes:
    body = struct.pack("=IIIII", iface, 0, 1, len(data) if caplen is None else caplen, len(data))
    return _blk(6, body + data + b"\0" * (-len(data) % 4))


PCAP_HDR = struct.pack("=IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


@pytest.mark.parametrize(("content", "offset", "what"), [
    (b"\xd4\xc3", 0, "file shorter than any header: not a pcap or pcapng file"),
    (PCAP_HDR[:20], 0, "pcap file header cut short (24 bytes needed)"),
    (struct.pack("=IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1), 4, "pcap version 3.0 (only 2.x is known)"),
    (_shb()[:20], 0, "pcapng section header of 28 bytes cut short"),
    (_shb()[:8], 0, "pcapng section header cut short"),
    (_shb(bom=0x11223344), 0, "section header with byte-order magic 0x11223344"),
    (_shb(major=2), 0, "pcapng version 2 (only 1.x is known)"),
    (_shb() + _blk(1, struct.pack("=HHI", 1, 0, 65535), trail=99), 28,
     "trailing block length differs from the leading one"),
    (_shb() + _blk(1, b"\x01\x00\x00\x00"), 28, "interface description block too short"),
    (_shb() + _idb(struct.pack("=HH", 2, 40) + b"eth0"), 28, "option 2 of 40 bytes overruns its block"),
    (_shb() + _idb(_opt(9, bytes([19]))), 28, "if_tsresol 10^-19 is not supported"),
    (_shb() + _idb(_opt(9, bytes([0x80 | 64]))), 28, "if_tsresol 2^-64 is not supported"),
    (_shb() + _idb() + _blk(5, b"\0" * 8), 28 + 20, "interface statistics block too short"),
    (_shb() + _idb() + struct.pack("=II", 0x99, 10) + bytes(4), 28 + 20, "block type 0x00000099 with length 10"),
    (_shb() + _idb() + _epb(5, bytes(20)), 28 + 20,
     "packet of interface 5 that no interface description block declared"),
    (_shb() + _idb() + _epb(0, bytes(20), caplen=200), 28 + 20, "captured length 200 larger than its block"),
])
def test_reader_damaged_files(tmp_path: Path, content: bytes, offset: int, what: str) -> None:
    p = tmp_path / "bad.pcapng"
    p.write_bytes(content)
    with pytest.raises(nc.FileFormatError) as e:
        with nc.open_reader(p) as r:
            while r.next_batch() is not None:
                pass
    assert str(e.value) == f"{p}: at offset {offset}: {what}"
    assert (e.value.path, e.value.offset) == (str(p), offset)


@pytest.mark.parametrize(("tail", "what"), [
    (struct.pack("=III", 0x99, 4096, 0), "a block of 4096 bytes that reaches past the end of the file"),
    (_blk(5, bytes(16))[:20], "a block of 28 bytes cut short"),
    (b"\x05\x00\x00", "3 bytes of a 8-byte record"),
])
def test_reader_truncated_tail_is_the_end_unless_strict(tmp_path: Path, tail: bytes, what: str) -> None:
    p = tmp_path / "cut.pcapng"
    good = _shb() + _idb() + _blk(0x1234, bytes(8)) + _epb(0, eth(0x1234, b"x"))
    p.write_bytes(good + tail)
    with nc.open_reader(p) as r:
        b = r.next_batch()
        assert b is not None and len(b) == 1
        assert r.next_batch() is None and r.at_end and r.truncated
        assert r.problem == f"{p}: at offset {len(good)}: file ends inside a record ({what}); ignored"
    with pytest.raises(nc.FileFormatError) as e:
        with nc.open_reader(p, strict=True) as r:
            while r.next_batch() is not None:
                pass
    assert str(e.value) == f"{p}: at offset {len(good)}: file ends inside a record: {what}"


def test_reader_statistics_of_an_undeclared_interface_keep_raw_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "isb.pcapng"
    p.write_bytes(_shb() + _blk(5, struct.pack("=III", 3, 0, 1234) + _opt(4, struct.pack("=Q", 9))
                                + _opt(99, b"zz") + _opt(0, b"")))
    with nc.open_reader(p) as r:
        assert r.next_batch() is None and r.at_end and not r.truncated
        assert r.interface_stats == [{"interface": 3, "timestamp_ns": 1234, "ifrecv": 9}]


@pytest.mark.parametrize(("kw", "message"), [
    ({"pace": "slow"}, "pace must be 'fast' or 'recorded', got 'slow'"),
    ({"loop": -1}, "loop must be an int >= 0 (0: for ever), got -1"),
    ({"loop": True}, "loop must be an int >= 0 (0: for ever), got True"),
])
def test_open_reader_bad_arguments(tmp_path: Path, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(nc.ConfigError) as e:
        nc.open_reader(tmp_path / "whatever.pcap", **kw)
    assert str(e.value) == message


def test_reader_missing_file_and_loop_over_nothing_ends(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        nc.open_reader(tmp_path / "none.pcap")
    assert e.value.filename == str(tmp_path / "none.pcap")
    p = tmp_path / "empty.pcap"
    p.write_bytes(PCAP_HDR)
    with nc.open_reader(p, loop=0) as r:  # for ever, but no packet: ends at once
        assert r.next_batch_blocking(1.0) is None and r.at_end


def test_closed_reader(tmp_path: Path) -> None:
    p = tmp_path / "one.pcap"
    p.write_bytes(PCAP_HDR + struct.pack("=IIII", 1, 0, 14, 14) + eth(0x1234, b""))
    r = nc.open_reader(p)
    r.close()
    r.close()
    assert repr(r) == f"<Reader pcap {str(p)!r} closed>"
    for call in (r.next_batch, r.fileno):
        with pytest.raises(nc.ClosedError) as e:
            call()
        assert str(e.value) == f"reader {str(p)!r} is closed"
    assert r.next_batch_blocking(0.1) is None


# == the async faces of the services (_faces) =========================================


def test_receiver_nowait_empty_stopped_and_closed() -> None:
    async def body() -> None:
        src = MemorySource(packets_per_block=2)
        svc = nc.CaptureService(src, name="nc-ep-rx")
        with svc:
            rx = svc.asyncio()
            with pytest.raises(queue.Empty):
                rx.receive_nowait()
            src.push(_frames(3, 60))
            got = []
            while len(got) < 3:
                try:
                    got.append(rx.receive_nowait())
                except queue.Empty:
                    await asyncio.sleep(0.01)
            assert [bytes(p.data) for p in got] == _frames(3, 60)
            twin = rx.clone()
            await twin.aclose()
            with pytest.raises(nc.ClosedError, match=r"^this AsyncioReceiver was closed$"):
                twin.receive_nowait()
            with pytest.raises(nc.ClosedError, match=r"^this AsyncioReceiver was closed$"):
                twin.clone()
            with pytest.raises(nc.ClosedError, match=r"^this AsyncioReceiver was closed$"):
                await twin.receive_batch()
            assert "closed" in repr(twin)
        # the service stopped: the face says the stream ended
        with pytest.raises(nc.ClosedError, match=r"^the service is stopped$"):
            rx.receive_nowait()
        assert [b async for b in rx.batches()] == []
        await rx.aclose()

    asyncio.run(body())


def test_receiver_of_a_failing_source_raises_service_error() -> None:
    async def body() -> None:
        src = MemorySource(_frames(2, 60), packets_per_block=1, fail_at=2)
        with nc.CaptureService(src, name="nc-ep-fail") as svc:
            async with svc.asyncio() as rx:
                first = await rx.receive()
                assert bytes(first.data) == _frames(1, 60)[0]
                with pytest.raises(nc.ServiceError) as e:
                    await asyncio.wait_for(rx.receive(), 5.0)
        assert isinstance(e.value.__cause__, nc.RingError)
        assert "injected failure at batch 2" in str(e.value.__cause__)

    asyncio.run(body())


def test_sender_nowait_full_and_closed() -> None:
    async def body() -> None:
        sink = MemorySink(capacity=1)
        sink.stall()
        with nc.InjectService(sink, capacity=2, name="nc-ep-tx") as svc:
            tx = svc.asyncio()
            results = []
            with pytest.raises(queue.Full):
                for _ in range(10):  # the sink holds one, the queue two: full soon
                    results.append(tx.send_nowait(bytes(60)))
            assert results and all(results) and len(results) <= 3
            assert await tx.wait_drained(0.05) is False
            with pytest.raises(ValueError, match=r"frame of 5 bytes is outside 14\.\.1514 bytes"):
                await tx.send(bytes(5))
            sink.resume()
            assert await tx.wait_drained(5.0) is True
            twin = tx.clone()
            await twin.aclose()
            with pytest.raises(nc.ClosedError, match=r"^this AsyncioSender was closed$"):
                twin.send_nowait(bytes(60))
            with pytest.raises(nc.ClosedError, match=r"^this AsyncioSender was closed$"):
                await twin.send_many([bytes(60)])
            await tx.aclose()
        assert len(sink.sent) == len(results)

    asyncio.run(body())


def test_trio_receiver_nowait_would_block_and_end() -> None:
    trio = pytest.importorskip("trio")

    async def body() -> None:
        src = MemorySource()
        svc = nc.CaptureService(src, name="nc-ep-trio")
        with svc:
            rx = svc.trio()
            with pytest.raises(trio.WouldBlock):
                rx.receive_nowait()
            twin = rx.clone()
            await twin.aclose()
            with pytest.raises(trio.ClosedResourceError):
                twin.receive_nowait()
        with pytest.raises(trio.EndOfChannel):
            rx.receive_nowait()
        await rx.aclose()

    trio.run(body)


# == AsyncInjector over a MemorySink (aio/inject.py) ==================================


def test_async_injector_send_timeout_with_a_stalled_sink() -> None:
    async def body() -> None:
        sink = MemorySink(capacity=2, label="stuck")
        sink.stall()
        inj = nc.AsyncInjector(sink)
        await inj.send(bytes(60))
        await inj.send(bytes(60))
        with pytest.raises(nc.RingFullError) as e:
            await inj.send(bytes(60), timeout=0.05)
        assert str(e.value).endswith("no free TX slot on 'stuck' in time") and e.value.errno == errno.EAGAIN
        assert await inj.wait_drained(0.05) is False
        assert await inj.flush() == 0
        await inj.aclose(timeout=0.01)
        assert inj.closed and sink.closed  # owned: closed with it
        await inj.aclose()  # idempotent
        for call in (inj.flush, inj.wait_drained, lambda: inj.send(bytes(60))):
            with pytest.raises(nc.ClosedError, match=r"^injector on 'stuck' is closed$"):
                await call()

    asyncio.run(body())


def test_async_injector_not_owning_leaves_the_sink_open() -> None:
    async def body() -> None:
        sink = MemorySink(capacity=4, label="mine")
        async with nc.AsyncInjector(sink, owns=False) as inj:
            assert await inj.send_many([bytes(60)] * 6) == 6
            assert inj.injector is sink
        assert inj.closed and not sink.closed
        assert inj.stats().sent == 6 and len(sink.sent) == 6
        sink.close()
        # a sink closed under a (new) face: the face reports closed
        inj2 = nc.AsyncInjector(sink, owns=False)
        assert inj2.closed
        with pytest.raises(nc.ClosedError, match=r"^injector on 'mine' is closed$"):
            await inj2.send(bytes(60))
        inj2.close()

    asyncio.run(body())


@pytest.mark.parametrize(("args", "kw", "message"), [
    (("lo",), {"owns": False}, "owns=False: a ring opened here by interface name is always owned"),
    ((None,), {"owns": 1}, "owns must be a bool, got 1"),
    ((None,), {"frame_count": 64}, "options ['frame_count'] apply only when opening by interface name"),
    ((b"eth0",), {}, "not a sink (see netring_chan.contract.Sink): b'eth0'"),
])
def test_async_injector_bad_arguments(args: tuple[Any, ...], kw: dict[str, Any], message: str) -> None:
    sink = MemorySink()
    try:
        with pytest.raises(nc.ConfigError) as e:
            nc.AsyncInjector(sink if args == (None,) else args[0], **kw)
        assert str(e.value) == message
    finally:
        sink.close()


def test_async_injector_dropped_open_warns_and_closes() -> None:
    sink = MemorySink()
    inj = nc.AsyncInjector(sink)
    with pytest.warns(ResourceWarning, match="unclosed <AsyncInjector"):
        del inj
        gc.collect()
    assert sink.closed


# == the in-memory ends themselves (testing.py) ========================================


@pytest.mark.parametrize(("make", "message"), [
    (lambda: MemorySource(block_size=0), "block_size must be a positive int, got 0"),
    (lambda: MemorySource(block_size=64), "block_size must be at least"),
    (lambda: MemorySource(fail_at=0), "fail_at must be a positive int or None, got 0"),
    (lambda: MemorySource(label=""), "label must be a non-empty str, got ''"),
    (lambda: MemorySource([bytes(70000)]), "frame 0 of 70000 bytes does not fit a 65536-byte block"),
    (lambda: MemorySink(min_frame=100, max_frame=60), "min_frame (100) must not exceed max_frame (60)"),
    (lambda: MemorySink(drain_timeout=-1), "drain_timeout must be a number >= 0, got -1"),
    (lambda: MemorySink(keep=True), "keep must be a positive int, got True"),
])
def test_memory_ends_bad_arguments(make: Any, message: str) -> None:
    with pytest.raises(nc.ConfigError) as e:
        make()
    assert str(e.value).startswith(message)
    gc.collect()


def test_memory_ends_closed_and_stalled() -> None:
    src = MemorySource(label="src")
    src.close()
    assert repr(src) == "<MemorySource 'src' closed>"
    with pytest.raises(nc.ClosedError, match=r"^memory source 'src' is closed$"):
        src.fileno()
    with pytest.raises(nc.ClosedError, match=r"^memory source 'src' is closed$"):
        src.next_batch()
    assert src.next_batch_blocking(0.01) is None
    sink = MemorySink(capacity=1, label="snk")
    sink.stall()
    assert sink.publish([bytes(60)]) == 1
    with pytest.raises(ValueError, match=r"^frame of 5 bytes is outside 14\.\.1514 bytes$"):
        sink.publish([bytes(5)])
    assert sink.publish([bytes(60)]) == 0 and sink.stats().ring_full == 1
    with pytest.raises(nc.RingFullError, match=r"no room in memory sink 'snk' in time \(stalled\)"):
        sink.wait_room(0.01)
    sink.resume()
    # a bad frame after a good one ends the run
    assert sink.publish([bytes(60), "no"]) == 1  # type: ignore[list-item]
    sink.close()
    with pytest.raises(nc.ClosedError, match=r"^memory sink 'snk' is closed$"):
        sink.flush()


def test_writer_names_a_bad_packet_or_interface(tmp_path: Path) -> None:
    with nc.open_writer(tmp_path / "w.pcapng", interface=["a", "b"]) as w:
        good = [nc.OwnedPacket.make(eth(0x1234, b"abc"), 5)]
        for bad in ("1", 1.0, True):
            with pytest.raises(nc.ConfigError, match=rf"interface must be an index of the writer's 2 interface\(s\), got {bad!r}"):
                w.write(good, interface=bad)  # type: ignore[arg-type]
        with pytest.raises(nc.ConfigError, match="write: packet 0: AttributeError"):
            w.write([b"abc"])  # type: ignore[list-item]
        with pytest.raises(nc.ConfigError, match="write: packets must be"):
            w.write(5)  # type: ignore[arg-type]
        with pytest.raises(nc.ConfigError, match="write: packet 0: OverflowError"):
            w.write([nc.OwnedPacket.make(eth(0x1234, b"abc"), -1)])
        assert w.write(good, interface=1) == 1
    with pytest.raises(nc.ConfigError, match="interface must be a str or a non-empty sequence of str, got 5"):
        nc.open_writer(tmp_path / "x.pcapng", interface=5)  # type: ignore[arg-type]
