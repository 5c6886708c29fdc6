"""pcap and pcapng files: the writers and readers against independent tools.

Files we write are read back by tshark, tcpdump, capinfos (where installed),
dpkt and scapy, packet for packet and byte for byte; files tcpdump, dpkt and
scapy write are read by ours; bad files give FileFormatError or the
documented truncated-tail stop; a fuzz test mutates valid files; rotation,
a writer killed mid-write, replay through the capture service's faces and
recorded pace. Everything but the lab test needs no root.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netring_chan as nc
from lab import ETH_P_LAB, Lab, frame, mac
from netring_chan.files import MAX_RECORD, Rotate, open_reader, open_writer
from netring_chan.testing import MemorySource

pytestmark = pytest.mark.unprivileged

T0 = 1_700_000_000_123_456_789  # a timestamp with every nanosecond digit set
SIZES = (60, 61, 63, 64, 100, 255, 256, 257, 1000, 1514)


def frames(n: int, start: int = 0) -> list[bytes]:
    return [frame(mac(1), mac(2), struct.pack("!I", i) + bytes([i % 251]) * (SIZES[i % len(SIZES)] - 18))
            for i in range(start, start + n)]


def packets(n: int) -> list[nc.OwnedPacket]:
    """Owned packets with every kind of metadata a file keeps."""
    dirs = (nc.Direction.HOST, nc.Direction.OUTGOING, nc.Direction.BROADCAST, nc.Direction.MULTICAST,
            nc.Direction.OTHER_HOST)
    return [nc.OwnedPacket.make(f, T0 + 1_000_003 * i, len(f) + (i % 3) * 7, int(dirs[i % len(dirs)]),
                                protocol=ETH_P_LAB) for i, f in enumerate(frames(n))]


def owned_batch(frs: list[bytes]) -> nc.OwnedBatch:
    """An OwnedBatch as a capture makes it (through the copy-out)."""
    src = MemorySource(frs, packets_per_block=len(frs), block_size=1 << 22)
    try:
        b = src.next_batch()
        assert b is not None
        with b:
            return b.to_owned()
    finally:
        src.close()


def read_all(path: Path | str, **kw: Any) -> tuple[list[nc.OwnedPacket], nc.Reader]:
    r = open_reader(path, **kw)
    out: list[nc.OwnedPacket] = []
    with r:
        while (b := r.next_batch()) is not None:
            out.extend(b)
    assert r.at_end
    return out, r


def write(path: Path, pkts: list[nc.OwnedPacket], **kw: Any) -> None:
    with open_writer(path, interface="lab0", **kw) as w:
        assert w.write(pkts) == len(pkts)
        w.write_stats(ifrecv=len(pkts) + 5, ifdrop=5, osdrop=2, usrdeliv=len(pkts) - 2)


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed")
    return path


def run(*args: str) -> str:
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout


FORMATS = ["pcap", "pcapng"]


# -- our files, read by ourselves and by independent readers ----------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_keeps_every_field(tmp_path: Path, fmt: str) -> None:
    pkts = packets(300)
    p = tmp_path / f"x.{fmt}"
    write(p, pkts)
    got, r = read_all(p)
    assert [g.data for g in got] == [q.data for q in pkts]
    assert [g.timestamp_ns for g in got] == [q.timestamp_ns for q in pkts]
    assert [g.wire_len for g in got] == [q.wire_len for q in pkts]
    assert all(g.protocol == ETH_P_LAB and g.source_address == mac(2) for g in got)
    if fmt == "pcapng":
        assert [g.direction for g in got] == [q.direction for q in pkts]
        assert r.interfaces[0].name == "lab0" and r.interfaces[0].tsresol == 9
        assert r.interface_stats[0]["ifrecv"] == 305 and r.interface_stats[0]["osdrop"] == 2
    else:
        assert r.interface_stats == [] and r.interfaces[0].tsresol == 9
    assert r.stats().packets == 300 and r.stats().drops == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_owned_batch_fast_path_and_snaplen(tmp_path: Path, fmt: str) -> None:
    frs = frames(500)
    p = tmp_path / f"x.{fmt}"
    with open_writer(p, snaplen=200) as w:
        assert w.write(owned_batch(frs)) == 500
        assert w.packets == 500
    assert w.closed and w.bytes_written == p.stat().st_size and w.paths == [str(p)]
    got, _ = read_all(p)
    assert [g.data for g in got] == [f[:200] for f in frs]
    assert [g.wire_len for g in got] == [len(f) for f in frs]


@pytest.mark.parametrize("fmt", FORMATS)
def test_tshark_reads_ours(tmp_path: Path, fmt: str) -> None:
    need("tshark")
    pkts = packets(50)
    p = tmp_path / f"x.{fmt}"
    write(p, pkts)
    out = json.loads(run("tshark", "-r", str(p), "-T", "json", "-x"))
    assert len(out) == len(pkts)
    for o, q in zip(out, pkts):
        f = o["_source"]["layers"]["frame"]
        assert Decimal(f["frame.time_epoch"]) * 10**9 == q.timestamp_ns
        assert int(f["frame.len"]) == q.wire_len and int(f["frame.cap_len"]) == len(q.data)
        assert bytes.fromhex(o["_source"]["layers"]["frame_raw"][0]) == q.data
        if fmt == "pcapng":
            assert f["frame.interface_id_tree"]["frame.interface_name"] == "lab0"
            flags = int(f["frame.packet_flags"], 16)
            assert flags & 3 == (2 if q.direction == nc.Direction.OUTGOING else 1)


def test_capinfos_sees_the_statistics_block(tmp_path: Path) -> None:
    need("capinfos")
    p = tmp_path / "x.pcapng"
    write(p, packets(10))
    out = run("capinfos", str(p))
    assert re.search(r"Number of stat entries = 1", out), out
    assert re.search(r"Number of packets\s*=\s*10", out), out


def test_statistics_block_by_hand(tmp_path: Path) -> None:
    """The ISB parsed by a minimal independent parser (dpkt 1.9 has none)."""
    p = tmp_path / "x.pcapng"
    write(p, packets(10))
    data, k, isbs = p.read_bytes(), 0, []
    while k < len(data):
        btype, blen = struct.unpack_from("<II", data, k)
        if btype == 5:
            opts, j = {}, k + 20
            while True:
                code, n = struct.unpack_from("<HH", data, j)
                if code == 0:
                    break
                opts[code] = data[j + 4:j + 4 + n]
                j += 4 + n + (-n % 4)
            isbs.append({c: struct.unpack("<Q", v)[0] for c, v in opts.items() if c in (4, 5, 7, 8)})
        k += blen
    assert isbs == [{4: 15, 5: 5, 7: 2, 8: 8}]


@pytest.mark.parametrize("fmt", FORMATS)
def test_tcpdump_reads_ours(tmp_path: Path, fmt: str) -> None:
    need("tcpdump")
    pkts = packets(40)
    p = tmp_path / f"x.{fmt}"
    write(p, pkts)
    out = run("tcpdump", "-r", str(p), "-nn", "--nano", "-tt", "-xx")
    recs = re.split(r"^(?=\d+\.\d{9} )", out, flags=re.M)[1:]
    assert len(recs) == len(pkts)
    for rec, q in zip(recs, pkts):
        head, *lines = rec.splitlines()
        ts = head.split()[0].replace(".", "")
        assert int(ts) == q.timestamp_ns
        hexed = "".join("".join(ln.split(":", 1)[1].split()) for ln in lines if ln.strip())
        assert bytes.fromhex(hexed) == q.data


@pytest.mark.parametrize("fmt", FORMATS)
def test_dpkt_reads_ours(tmp_path: Path, fmt: str) -> None:
    import dpkt

    pkts = packets(60)
    p = tmp_path / f"x.{fmt}"
    write(p, pkts)
    with open(p, "rb") as f:
        rd = dpkt.pcap.Reader(f) if fmt == "pcap" else dpkt.pcapng.Reader(f)
        got = list(rd)
    assert [bytes(b) for _, b in got] == [q.data for q in pkts]
    if fmt == "pcap":  # dpkt gives a Decimal for a nanosecond pcap: exact
        assert [int(Decimal(t) * 10**9) for t, _ in got] == [q.timestamp_ns for q in pkts]
    else:  # and a float for pcapng: to the microsecond
        assert all(abs(round(float(t) * 1e6) - q.timestamp_ns // 1000) <= 1 for (t, _), q in zip(got, pkts))


@pytest.mark.parametrize("fmt", FORMATS)
def test_scapy_reads_ours(tmp_path: Path, fmt: str) -> None:
    from scapy.utils import PcapNgReader, rdpcap

    pkts = packets(60)
    p = tmp_path / f"x.{fmt}"
    write(p, pkts)
    if fmt == "pcap":
        got = list(rdpcap(str(p)))
    else:
        with PcapNgReader(str(p)) as rd:
            got = list(rd)
    assert [bytes(g) for g in got] == [q.data for q in pkts]
    assert [int(Decimal(str(g.time)) * 10**9) for g in got] == [q.timestamp_ns for q in pkts]
    assert [g.wirelen for g in got] == [q.wire_len for q in pkts]
    if fmt == "pcapng":
        assert [g.direction for g in got] == [2 if q.direction == nc.Direction.OUTGOING else 1 for q in pkts]
        assert {g.sniffed_on for g in got} == {"lab0"}


# -- their files, read by ours ----------------------------------------------------------------


def _ours_match(path: Path, frs: list[bytes], ts_ns: list[int], wires: list[int] | None = None) -> None:
    got, _ = read_all(path)
    assert [g.data for g in got] == frs
    assert [g.timestamp_ns for g in got] == ts_ns
    assert [g.wire_len for g in got] == (wires or [len(f) for f in frs])


@pytest.mark.parametrize("precision", ["micro", "nano"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_ours_reads_tcpdump_w(tmp_path: Path, fmt: str, precision: str) -> None:
    need("tcpdump")
    pkts = packets(80)
    src = tmp_path / "in.pcap"
    write(src, pkts)
    dst = tmp_path / f"out.{fmt}"
    # tcpdump -w writes pcap; pcapng through tshark's conversion (a third writer).
    run("tcpdump", "-r", str(src), f"--time-stamp-precision={precision}", "-w", str(dst))
    if fmt == "pcapng":
        need("tshark")
        conv = tmp_path / "conv.pcapng"
        run("tshark", "-r", str(dst), "-F", "pcapng", "-w", str(conv))
        dst = conv
    div = 1000 if precision == "micro" else 1
    _ours_match(dst, [q.data for q in pkts], [q.timestamp_ns // div * div for q in pkts],
                [q.wire_len for q in pkts])


def test_ours_reads_dpkt(tmp_path: Path) -> None:
    import dpkt

    frs = frames(70)
    ts = [T0 // 1000 * 1000 + 1000 * i for i in range(70)]
    p1, p2 = tmp_path / "d.pcap", tmp_path / "d.pcapng"
    with open(p1, "wb") as f:
        w = dpkt.pcap.Writer(f, nano=True)
        for fr, t in zip(frs, ts):
            w.writepkt(fr, ts=Decimal(t) / 10**9)
    with open(p2, "wb") as f:
        w2 = dpkt.pcapng.Writer(f)
        for fr, t in zip(frs, ts):
            w2.writepkt(fr, ts=t / 1e9)
    _ours_match(p1, frs, ts)
    got, _ = read_all(p2)
    assert [g.data for g in got] == frs
    assert [round(g.timestamp_ns / 1000) for g in got] == [t // 1000 for t in ts]  # dpkt: µs, through a float


def test_ours_reads_scapy(tmp_path: Path) -> None:
    from scapy.layers.l2 import Ether
    from scapy.utils import PcapNgWriter, wrpcap

    frs = frames(70)
    ts = [T0 + 1_000_001 * i for i in range(70)]
    pk = []
    for fr, t in zip(frs, ts):
        e = Ether(fr)
        e.time = Decimal(t) / 10**9
        pk.append(e)
    p1, p2 = tmp_path / "s.pcap", tmp_path / "s.pcapng"
    wrpcap(str(p1), pk, nano=True)
    with PcapNgWriter(str(p2)) as w:
        for e in pk:
            w.write(e)
    _ours_match(p1, frs, ts)
    got, _ = read_all(p2)
    assert [g.data for g in got] == frs
    assert all(abs(g.timestamp_ns // 1000 - t // 1000) <= 1 for g, t in zip(got, ts))  # scapy's pcapng: µs


def test_big_endian_files(tmp_path: Path) -> None:
    """pcap and a pcapng section written byte-swapped (by hand), with µs resolution."""
    frs = frames(5)
    p = tmp_path / "be.pcap"
    p.write_bytes(struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
                  + b"".join(struct.pack(">IIII", 1000 + i, 500 + i, len(f), len(f)) + f
                  for i, f in enumerate(frs)))
    _ours_match(p, frs, [(1000 + i) * 10**9 + (500 + i) * 1000 for i in range(5)])

    def blk(t: int, body: bytes) -> bytes:
        return struct.pack(">II", t, 12 + len(body)) + body + struct.pack(">I", 12 + len(body))

    def epb(i: int, f: bytes) -> bytes:
        t = 10**6 * (2000 + i)
        return blk(6, struct.pack(">IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(f), len(f))
                   + f + b"\0" * (-len(f) % 4) + struct.pack(">HHI", 2, 4, 2) + b"\0" * 4)

    shb = blk(0x0A0D0D0A, struct.pack(">IHHq", 0x1A2B3C4D, 1, 0, -1))
    idb = blk(1, struct.pack(">HHI", 1, 0, 0))
    q = tmp_path / "be.pcapng"
    q.write_bytes(shb + idb + blk(0xBAD, b"x" * 40) + b"".join(epb(i, f) for i, f in enumerate(frs)))
    got, _ = read_all(q)
    assert [g.data for g in got] == frs
    assert [g.timestamp_ns for g in got] == [(2000 + i) * 10**9 for i in range(5)]
    assert {g.direction for g in got} == {nc.Direction.OUTGOING}


# -- bad files ---------------------------------------------------------------------------------------


@pytest.fixture
def good(tmp_path: Path) -> dict[str, bytes]:
    out = {}
    for fmt in FORMATS:
        p = tmp_path / f"good.{fmt}"
        write(p, packets(20))
        out[fmt] = p.read_bytes()
    return out


def _bad(tmp_path: Path, data: bytes, **kw: Any) -> nc.FileFormatError:
    p = tmp_path / "bad.bin"
    p.write_bytes(data)
    with pytest.raises(nc.FileFormatError) as e:
        read_all(p, **kw)
    assert str(p) in str(e.value)
    return e.value


def test_bad_headers(tmp_path: Path) -> None:
    assert "empty file" in str(_bad(tmp_path, b""))
    assert "magic 0x" in str(_bad(tmp_path, b"GIF89a" + b"\0" * 40))
    assert "cut short" in str(_bad(tmp_path, struct.pack("=I", 0xA1B2C3D4) + b"\0" * 4))
    assert "cut short" in str(_bad(tmp_path, struct.pack("=II", 0x0A0D0D0A, 28)))
    assert "byte-order magic" in str(_bad(tmp_path, struct.pack("=III", 0x0A0D0D0A, 28, 0x12345678) + b"\0" * 16))


def test_absurd_lengths_are_errors_not_allocations(tmp_path: Path, good: dict[str, bytes]) -> None:
    hdr = good["pcap"][:24]
    e = _bad(tmp_path, hdr + struct.pack("=IIII", 1, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"x" * 100)
    assert e.offset == 24 and str(MAX_RECORD) in str(e)
    # pcapng: a block length over the limit, not a multiple of 4, a trailing length that differs,
    # an interface that was never described.
    ng = good["pcapng"]
    shb_len = struct.unpack_from("=I", ng, 4)[0]
    idb_len = struct.unpack_from("=I", ng, shb_len + 4)[0]
    first = shb_len + idb_len
    for at, value, what in ((first + 4, 0x7FFFFFF0, "length"), (first + 4, 101, "length"),
                            (first + 8, 7, "interface 7")):
        bad = bytearray(ng)
        struct.pack_into("=I", bad, at, value)
        e = _bad(tmp_path, bytes(bad))
        assert e.offset == first and what in str(e)
    blen = struct.unpack_from("=I", ng, first + 4)[0]
    bad = bytearray(ng)
    struct.pack_into("=I", bad, first + blen - 4, blen + 4)
    assert "trailing" in str(_bad(tmp_path, bytes(bad)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_tail_is_a_documented_stop(tmp_path: Path, good: dict[str, bytes], fmt: str) -> None:
    data = good[fmt]
    p = tmp_path / f"cut.{fmt}"
    full, _ = read_all(tmp_path / f"good.{fmt}")
    for cut in (len(data) - 3, len(data) - 300, len(data) // 2 + 1):  # (pcapng: -3 cuts the ISB)
        p.write_bytes(data[:cut])
        got, r = read_all(p)
        assert r.truncated and "ends inside a record" in r.problem
        assert [g.data for g in got] == [g.data for g in full[:len(got)]] and 0 < len(got) <= 20
        with pytest.raises(nc.FileFormatError, match="ends inside a record"):
            read_all(p, strict=True)


def test_block_past_the_end_and_unknown_blocks(tmp_path: Path, good: dict[str, bytes]) -> None:
    ng = good["pcapng"]
    unknown = struct.pack("=II", 0x40000BAD, 24) + b"u" * 12 + struct.pack("=I", 24)
    shb_len = struct.unpack_from("=I", ng, 4)[0]
    p = tmp_path / "u.pcapng"
    p.write_bytes(ng[:shb_len] + unknown + ng[shb_len:] + unknown)
    got, r = read_all(p)
    assert len(got) == 20 and not r.truncated
    # An unknown block claiming 60 MiB at the end of a small file: skipped without reading, then the tail.
    p.write_bytes(ng + struct.pack("=II", 0x40000BAD, 60 << 20) + b"z" * 100)
    got, r = read_all(p)
    assert len(got) == 20 and r.truncated and "past the end" in r.problem


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(fmt=st.sampled_from(FORMATS), cut=st.integers(0, 4000),
       flips=st.lists(st.tuples(st.integers(0, 3999), st.integers(0, 255)), max_size=8))
def test_fuzz_reader(tmp_path_factory: pytest.TempPathFactory, fmt: str, cut: int,
                     flips: list[tuple[int, int]]) -> None:
    """Mutated files: the reader ends (or raises FileFormatError) quickly and never hangs."""
    d = tmp_path_factory.getbasetemp() / "fuzz"
    d.mkdir(exist_ok=True)
    src = d / f"seed.{fmt}"
    if not src.exists():
        write(src, packets(12))
    data = bytearray(src.read_bytes()[:cut])
    for at, v in flips:
        if at < len(data):
            data[at] = v
    p = d / "f.bin"
    p.write_bytes(bytes(data))
    t = time.monotonic()
    try:
        got, _ = read_all(p)
        assert len(got) <= 12
    except nc.FileFormatError:
        pass
    assert time.monotonic() - t < 2


def test_format_and_options_checked(tmp_path: Path) -> None:
    with pytest.raises(nc.ConfigError, match=r"x\.cap.*pcap"):
        open_writer(tmp_path / "x.cap")
    with pytest.raises(nc.ConfigError, match="format"):
        open_writer(tmp_path / "x.pcap", format="erf")
    with pytest.raises(nc.ConfigError, match="pace"):
        open_reader(tmp_path / "x.pcap", pace="slow")
    with pytest.raises(nc.ConfigError, match="Rotate"):
        Rotate()
    with open_writer(tmp_path / "x.anything", format="pcapng") as w:
        with pytest.raises(ValueError, match="snaplen"):
            w.check_frame(b"x" * 300000)


def test_writer_dropped_open_warns_and_closes(tmp_path: Path) -> None:
    p = tmp_path / "x.pcapng"
    w = open_writer(p)
    w.write(packets(3))
    with pytest.warns(ResourceWarning):
        del w
        import gc
        gc.collect()
    got, _ = read_all(p)
    assert len(got) == 3


# -- rotation ------------------------------------------------------------------------------------------


def test_rotate_by_size_tcpdump_names(tmp_path: Path) -> None:
    pkts = packets(200)
    base = tmp_path / "cap.pcapng"
    with open_writer(base, rotate=Rotate(size=20_000)) as w:
        for k in range(0, 200, 25):
            w.write(pkts[k:k + 25])
    assert w.paths[:3] == [str(base), str(base) + "1", str(base) + "2"]
    got: list[nc.OwnedPacket] = []
    for p in w.paths:
        size = os.path.getsize(p)
        part, _ = read_all(p)
        assert part
        if p != w.paths[-1]:  # at least the limit, exceeded by at most one packet (and the ISB)
            assert 20_000 <= size <= 20_000 + 1600 + 200
        got += part
    assert [g.data for g in got] == [q.data for q in pkts]


def test_rotate_ring_of_files(tmp_path: Path) -> None:
    pkts = packets(300)
    base = tmp_path / "ring.pcap"
    with open_writer(base, rotate=Rotate(size=10_000, files=3)) as w:
        w.write(pkts)
    names = sorted(os.listdir(tmp_path))
    assert names == ["ring.pcap0", "ring.pcap1", "ring.pcap2"]
    assert len(w.paths) > 3
    last, _ = read_all(w.path)
    assert last[-1].data == pkts[-1].data


def test_rotate_by_seconds_with_template(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    pkts = packets(10)
    tmpl = tmp_path / "t-%Y-{n:03d}.pcapng"
    with open_writer(tmpl, rotate=Rotate(seconds=60), _clock=lambda: now[0]) as w:
        for q in pkts:
            w.write([q])
            now[0] += 25  # a new file every third packet
    assert [os.path.basename(p) for p in w.paths] == [f"t-2023-{k:03d}.pcapng" for k in range(4)]
    assert [len(read_all(p)[0]) for p in w.paths] == [3, 3, 3, 1]


# -- crashes ---------------------------------------------------------------------------------------------

_KILLED = r"""
import sys, time, netring_chan as nc
sys.path.insert(0, sys.argv[2])
from test_files import packets
w = nc.open_writer(sys.argv[1], interface="k")
pk = packets(50)
for i in range(40):
    w.write(pk)
    w.flush()
print("written", flush=True)
while True:
    w.write(pk)       # keeps writing (buffered) until killed
"""


@pytest.mark.parametrize("fmt", FORMATS)
def test_sigkill_mid_write_leaves_a_readable_prefix(tmp_path: Path, fmt: str) -> None:
    p = tmp_path / f"k.{fmt}"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED, str(p), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "written\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    got, r = read_all(p)
    # Only whole records are handed to write(2), but a SIGKILL can cut a large
    # write(2) short: then the last record is partial, and the readers stop before it.
    assert len(got) >= 2000
    ref = packets(50)
    assert all(g.data == ref[i % 50].data for i, g in enumerate(got))
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.len"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == (2 if r.truncated else 0), out.stderr
        assert len(out.stdout.split()) == len(got)


def test_a_cut_file_is_read_by_tshark_and_ours_to_the_last_whole_packet(tmp_path: Path,
                                                                        good: dict[str, bytes]) -> None:
    need("tshark")
    p = tmp_path / "cut.pcapng"
    p.write_bytes(good["pcapng"][:-150])  # the ISB (100 bytes) and part of the last packet
    got, r = read_all(p)
    out = subprocess.run(["tshark", "-r", str(p), "-T", "fields", "-e", "frame.len"],
                         capture_output=True, text=True, timeout=60)
    assert len(out.stdout.split()) == len(got) == 19 and r.truncated


_INTERRUPTED = r"""
import sys, netring_chan as nc
sys.path.insert(0, sys.argv[2])
from test_files import packets
with nc.open_writer(sys.argv[1]) as w:
    w.write_stats(ifrecv=1, ifdrop=0, osdrop=0, usrdeliv=1)
    w.write(packets(10))
    raise KeyboardInterrupt
"""


def test_ctrl_c_closes_cleanly(tmp_path: Path) -> None:
    p = tmp_path / "i.pcapng"
    proc = subprocess.run([sys.executable, "-c", _INTERRUPTED, str(p), str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr
    got, r = read_all(p)
    assert len(got) == 10 and r.interface_stats and not r.truncated


# -- replay through the services ------------------------------------------------------------------------


@pytest.fixture
def replay_file(tmp_path: Path) -> Path:
    p = tmp_path / "replay.pcapng"
    write(p, packets(3000))
    return p


def _same(got: list[nc.OwnedPacket]) -> None:
    ref = packets(3000)
    assert [g.data for g in got] == [q.data for q in ref]
    assert [g.timestamp_ns for g in got] == [q.timestamp_ns for q in ref]
    assert [g.wire_len for g in got] == [q.wire_len for q in ref]
    assert [g.direction for g in got] == [q.direction for q in ref]
    assert {g.ifindex for g in got} == {0}


def test_replay_sync(replay_file: Path) -> None:
    with nc.CaptureService(open_reader(replay_file)) as svc:
        got = list(svc)  # ends by itself: the source is at its end
    _same(got)
    assert svc.stats().balanced and svc.stats().delivered == 3000


def test_replay_asyncio(replay_file: Path) -> None:
    async def main() -> list[nc.OwnedPacket]:
        svc = nc.CaptureService(open_reader(replay_file))
        async with svc.asyncio() as rx:
            return [p async for p in rx]

    _same(asyncio.run(main()))


def test_replay_trio(replay_file: Path) -> None:
    async def main() -> list[nc.OwnedPacket]:
        svc = nc.CaptureService(open_reader(replay_file))
        async with svc.trio() as rx:
            return [p async for p in rx]

    _same(trio.run(main))


def test_replay_loop_and_stop_midway(replay_file: Path) -> None:
    got, _ = read_all(replay_file, loop=3)
    assert len(got) == 9000
    svc = nc.CaptureService(open_reader(replay_file, loop=0), capacity=2048)
    with svc:
        for _ in range(5000):
            svc.get(timeout=2)
    assert svc.stats().balanced


def test_recorded_pace(tmp_path: Path) -> None:
    p = tmp_path / "paced.pcap"
    pk = [nc.OwnedPacket.make(f, T0 + 50_000_000 * i) for i, f in enumerate(frames(5))]
    write(p, pk)
    r = open_reader(p, pace="recorded")
    t, seen = time.monotonic(), []
    with r:
        assert r.next_batch_blocking(0.01) is not None  # the first packet at once
        seen.append(time.monotonic() - t)
        assert r.next_batch() is None and not r.at_end  # the second is not due yet
        while r.next_batch_blocking(1.0) is not None:
            seen.append(time.monotonic() - t)
    assert len(seen) == 5
    assert all(k * 0.05 - 0.005 <= s <= k * 0.05 + 0.1 for k, s in enumerate(seen)), seen


def test_writer_is_a_sink_for_inject_service(tmp_path: Path) -> None:
    p = tmp_path / "sent.pcapng"
    w = open_writer(p)
    assert isinstance(w, nc.Sink)
    frs = frames(100)
    with nc.InjectService(w) as tx:
        tx.send_many(frs)
        assert tx.wait_drained(5)
    assert w.closed
    got, _ = read_all(p)
    assert [g.data for g in got] == frs and {g.direction for g in got} == {nc.Direction.OUTGOING}


def test_reader_is_a_source(replay_file: Path) -> None:
    r = open_reader(replay_file)
    with r:
        assert isinstance(r, nc.Source) and r.label == "replay.pcapng"
        assert r.fileno() >= 0
        assert r.quiesce() == 0 and r.at_end and r.next_batch_blocking(None) is None
    with pytest.raises(nc.ClosedError):
        r.next_batch()


# -- a real capture into a file -------------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.parametrize("fmt", FORMATS)
def test_capture_into_a_file(lab: Lab, tmp_path: Path, fmt: str) -> None:
    sent = frames(200)
    p = tmp_path / f"lab.{fmt}"
    with warnings.catch_warnings():
        cap = nc.Capture(lab.a, block_size=1 << 16, block_count=8, block_timeout_ms=10, protocol=ETH_P_LAB)
    with open_writer(p, interface=lab.a) as w, nc.CaptureService(cap) as svc:
        lab.send(sent)
        n = 0
        while n < len(sent):
            b = svc.get_batch(timeout=5)
            n += w.write(b)
        svc.stop()
        st = svc.stats()
        w.write_stats(ifrecv=st.kernel_packets, ifdrop=st.kernel_drops, osdrop=st.queue_drops,
                      usrdeliv=st.delivered)
    got, r = read_all(p)
    assert [g.data for g in got] == sent
    assert {g.direction for g in got} == ({nc.Direction.HOST} if fmt == "pcapng" else {nc.Direction.HOST})
    if fmt == "pcapng":
        assert r.interfaces[0].name == lab.a
        assert r.interface_stats[0]["ifrecv"] == 200 and r.interface_stats[0]["ifdrop"] == 0
    if shutil.which("tshark"):
        assert len(run("tshark", "-r", str(p), "-T", "fields", "-e", "frame.len").split()) == 200
