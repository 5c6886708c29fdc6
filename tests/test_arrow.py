"""Arrow record batches and Parquet shards, read back by pyarrow and DuckDB.

``OwnedBatch.to_arrow`` is compared field by field with the batch's own
packets (property-based, metadata of every kind, VLAN tags included); the
Parquet writer is fed by ``MemorySource`` batches, by packets, by an
``InjectService`` and by a real capture in a veth lab, and its files and
dataset directories are read back by ``pyarrow.dataset`` and by DuckDB
(``read_parquet(..., hive_partitioning=true)``). Rotation, partitions,
the command's ``capture -w x.parquet``, a missing pyarrow and bad
arguments. Everything but the lab tests needs no root.
"""

from __future__ import annotations

import gc
import os
import queue
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import netring_chan as nc
from lab import ETH_P_LAB, Lab, frame, mac
from netring_chan._lowlevel import ffi, lib
from netring_chan.files import Rotate, open_parquet, open_writer
from netring_chan.packet import PacketCursor
from netring_chan.testing import MemorySource

pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

pytestmark = pytest.mark.unprivileged

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_123_456_789
HOUR = 3600 * 10**9
VLAN = lib.TP_STATUS_VLAN_VALID
TPID = lib.TP_STATUS_VLAN_TPID_VALID


def frames(n: int, start: int = 0) -> list[bytes]:
    return [frame(mac(1), mac(2), struct.pack("!I", i) + bytes([i % 251]) * (40 + (i * 37) % 1400))
            for i in range(start, start + n)]


def owned_batch(frs: list[bytes]) -> nc.OwnedBatch:
    """An OwnedBatch as a capture makes it (through the copy-out)."""
    with MemorySource(frs, packets_per_block=len(frs), block_size=1 << 22) as src:
        b = src.next_batch()
        assert b is not None
        with b:
            return b.to_owned()


def batch_from_fields(rows: list[dict[str, Any]]) -> nc.OwnedBatch:
    """An OwnedBatch laid out exactly as the copy-out lays one out, from per-packet fields."""
    n = len(rows)
    offs = ffi.new("uint64_t[]", lib.NC_NCOLS + 1)
    lib.nc_cols_layout(n, offs)
    cols = bytearray(int(offs[lib.NC_NCOLS]))
    fmts = ("Q", "I", "I", "I", "I", "i", "H", "H", "H", "H", "B", "B")
    names = ("ts", "caplen", "wire_len", "status", "rxhash", "ifindex", "protocol", "hatype", "vlan_tci",
             "vlan_tpid", "pkttype", "halen")
    for k, (f, name) in enumerate(zip(fmts, names)):
        values = [len(r["data"]) if name == "caplen" else r.get(name, 0) for r in rows]
        cols[offs[k]:offs[k + 1]] = struct.pack(f"={n}{f}", *values)
    return nc.OwnedBatch([r["data"] for r in rows], cols, n)


def same_rows(rb: Any, pkts: list[Any]) -> None:
    """Every column of ``rb`` equals the packets' fields."""
    assert rb.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert rb.num_rows == len(pkts)
    c = {name: rb.column(name) for name in rb.schema.names}
    assert c["timestamp"].cast(pa.int64()).to_pylist() == [p.timestamp_ns for p in pkts]
    assert c["wire_len"].to_pylist() == [p.wire_len for p in pkts]
    assert c["caplen"].to_pylist() == [p.caplen for p in pkts]
    assert c["direction"].to_pylist() == [int(p.direction) for p in pkts]
    assert c["ifindex"].to_pylist() == [p.ifindex for p in pkts]
    assert c["protocol"].to_pylist() == [p.protocol for p in pkts]
    assert c["vlan_tci"].to_pylist() == [p.vlan_tci for p in pkts]
    assert c["vlan_tpid"].to_pylist() == [p.vlan_tpid for p in pkts]
    assert c["rxhash"].to_pylist() == [p.rxhash for p in pkts]
    assert c["data"].to_pylist() == [bytes(p.data) for p in pkts]


def read_dir(root: Path) -> Any:
    return ds.dataset(str(root), format="parquet", partitioning="hive").to_table()


def duck(sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()  # type: ignore[no-any-return]
    finally:
        con.close()


# -- to_arrow ----------------------------------------------------------------------------------------------


_row = st.fixed_dictionaries({
    "data": st.binary(min_size=1, max_size=300),
    "ts": st.integers(0, 2**63 - 1),
    "wire_len": st.integers(0, 2**32 - 1),
    "status": st.sampled_from([0, VLAN, VLAN | TPID, TPID, lib.TP_STATUS_COPY | VLAN]),
    "rxhash": st.integers(0, 2**32 - 1),
    "ifindex": st.integers(-2**31, 2**31 - 1),
    "protocol": st.integers(0, 0xFFFF),
    "vlan_tci": st.integers(0, 0xFFFF),
    "vlan_tpid": st.integers(0, 0xFFFF),
    "pkttype": st.integers(0, 255),
})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row, max_size=60))
def test_to_arrow_equals_the_packets_field_by_field(rows: list[dict[str, Any]]) -> None:
    b = batch_from_fields(rows)
    rb = b.to_arrow()
    same_rows(rb, list(b))
    assert rb.schema == nc.OwnedBatch([], b"", 0).to_arrow().schema


def test_to_arrow_from_a_capture_shares_the_columns() -> None:
    frs = frames(500)
    b = owned_batch(frs)
    rb = b.to_arrow()
    same_rows(rb, list(b))
    assert rb.column("protocol").to_pylist() == [ETH_P_LAB] * 500
    assert rb.column("vlan_tci").null_count == 500  # no tag: null, not 0
    # fixed-width columns are views of the batch's column memory, not copies
    assert rb.column("timestamp").buffers()[1].address == pa.py_buffer(b.timestamps_ns).address
    del b
    gc.collect()
    assert rb.column("data").to_pylist() == frs  # the record batch keeps what it needs alive


def test_packet_batch_and_rest_batch_to_arrow() -> None:
    frs = frames(50)
    with MemorySource(frs, packets_per_block=50, block_size=1 << 20) as src:
        pb = src.next_batch()
        assert pb is not None
        with pb:
            same_rows(pb.to_arrow(), list(pb.to_owned()))
        cur = PacketCursor()
        cur.set(owned_batch(frs))
        for _ in range(20):
            cur.next()
        rest = cur.take_rest()
        assert rest is not None
        same_rows(rest.to_arrow(), list(rest))
        assert rest.to_arrow().column("data").to_pylist() == frs[20:]


# -- the Parquet writer ------------------------------------------------------------------------------


def test_parquet_file_read_by_pyarrow_and_duckdb(tmp_path: Path) -> None:
    batches = [owned_batch(frames(300, k * 300)) for k in range(4)]
    p = tmp_path / "cap.parquet"
    with open_writer(p, interface="lab0") as w:
        assert isinstance(w, nc.ParquetWriter) and isinstance(w, nc.Sink)
        assert sum(w.write(b) for b in batches) == 1200
        w.write_stats(ifrecv=1210, ifdrop=10, osdrop=0, usrdeliv=1200)
    assert w.paths == [str(p)] and w.packets == 1200 and w.bytes_written == p.stat().st_size
    t = pq.read_table(p)
    same_rows(t.combine_chunks().to_batches()[0], [q for b in batches for q in b])
    meta = pq.read_metadata(p).metadata
    assert meta[b"netring_chan.interfaces"] == b'["lab0"]' and meta[b"netring_chan.linktype"] == b"1"
    assert b'"ifrecv": 1210' in meta[b"netring_chan.stats"]
    sent = [f for b in batches for f in b.datas()]
    assert duck(f"SELECT count(*), sum(caplen), sum(octet_length(data)) FROM read_parquet('{p}')") == \
        [(1200, sum(map(len, sent)), sum(map(len, sent)))]
    got = duck(f"SELECT data FROM read_parquet('{p}') ORDER BY timestamp")
    assert [bytes(r[0]) for r in got] == sent


def test_packets_snaplen_and_row_groups(tmp_path: Path) -> None:
    pkts = [nc.OwnedPacket.make(f, T0 + i, len(f) + 3, int(nc.Direction.OUTGOING), ifindex=7, protocol=0x800,
                                status_bits=VLAN, vlan_tci=100 + i) for i, f in enumerate(frames(100))]
    p = tmp_path / "p.parquet"
    with open_parquet(p, snaplen=64, row_group_rows=30) as w:
        assert w.write(pkts) == 100
    f = pq.ParquetFile(p)
    assert f.metadata.num_row_groups == 4 and f.metadata.num_rows == 100
    t = f.read()
    assert t.column("data").to_pylist() == [q.data[:64] for q in pkts]
    assert t.column("caplen").to_pylist() == [min(64, len(q.data)) for q in pkts]
    assert t.column("wire_len").to_pylist() == [q.wire_len for q in pkts]
    assert t.column("vlan_tci").to_pylist() == [100 + i for i in range(100)]
    assert set(t.column("direction").to_pylist()) == {int(nc.Direction.OUTGOING)}


def test_rotate_by_size_makes_several_shards(tmp_path: Path) -> None:
    frs = frames(2000)
    with open_writer(tmp_path / "cap.parquet", rotate=Rotate(size=100_000)) as w:
        for k in range(0, 2000, 250):
            w.write(owned_batch(frs[k:k + 250]))
    names = [os.path.basename(p) for p in w.paths]
    assert len(names) > 5 and names[:3] == ["cap.parquet", "cap1.parquet", "cap2.parquet"]
    rows = [pq.read_metadata(p).num_rows for p in w.paths]
    assert all(rows) and sum(rows) == 2000
    for p in w.paths[:-1]:  # a shard holds up to `size` bytes as buffered, one packet over at most
        est = sum(pq.read_table(p).column("caplen").to_pylist()) + 35 * pq.read_metadata(p).num_rows
        assert 100_000 <= est <= 100_000 + 1514 + 35
    assert [d for p in w.paths for d in pq.read_table(p).column("data").to_pylist()] == frs
    assert duck(f"SELECT count(*) FROM read_parquet('{tmp_path}/*.parquet')") == [(2000,)]


def test_rotate_by_seconds_and_ring(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    frs = frames(10)
    with open_parquet(tmp_path / "t-{n:02d}.parquet", rotate=Rotate(seconds=60, files=3),
                      _clock=lambda: now[0]) as w:
        for f in frs:
            w.write([nc.OwnedPacket.make(f, T0)])
            now[0] += 25  # a new file every third packet
    assert [os.path.basename(p) for p in w.paths] == ["t-00.parquet", "t-01.parquet", "t-02.parquet",
                                                       "t-00.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["t-00.parquet", "t-01.parquet", "t-02.parquet"]
    assert [pq.read_metadata(tmp_path / f"t-{k:02d}.parquet").num_rows for k in range(3)] == [1, 3, 3]


def test_hive_partitions_by_worker_and_hour(tmp_path: Path) -> None:
    # Two writers, as two fanout workers would be; worker 1's batch crosses an hour.
    pk = [nc.OwnedPacket.make(f, T0 + i * HOUR // 4) for i, f in enumerate(frames(12))]
    root = tmp_path / "ds"
    for worker, part in ((0, pk[:4]), (1, pk[4:])):
        with open_parquet(root / "shard.parquet", partition={"worker": worker}, partition_time="hour",
                          rotate=Rotate(size=1 << 30)) as w:
            w.write(part)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))
    # T0 is 2023-11-14 22:13:20 UTC: worker 0 stays in hour 22, worker 1 runs from 23:13 to 00:58
    assert files == ["worker=0/date=2023-11-14/hour=22/shard.parquet",
                     "worker=1/date=2023-11-14/hour=23/shard.parquet",
                     "worker=1/date=2023-11-15/hour=00/shard1.parquet"]
    hours = {}
    for f in files:
        t = pq.read_table(root / f)
        h = {(ts // HOUR) for ts in t.column("timestamp").cast(pa.int64()).to_pylist()}
        assert len(h) == 1, f  # one hour per file
        hours[f] = h.pop()
        assert f.split("/")[2] == time.strftime("hour=%H", time.gmtime(hours[f] * 3600))
    got = duck(f"SELECT worker, count(*), sum(caplen) FROM read_parquet('{root}/**/*.parquet', "
               "hive_partitioning=true) GROUP BY worker ORDER BY worker")
    assert got == [(0, 4, sum(len(q.data) for q in pk[:4])), (1, 8, sum(len(q.data) for q in pk[4:]))]
    t = read_dir(root)
    assert sorted(t.column("data").to_pylist()) == sorted(q.data for q in pk)
    assert sorted(set(t.column("worker").to_pylist())) == [0, 1]


def _shard_worker(root: str, worker: int, frs: list[bytes]) -> int:
    """What a fanout worker does with its packets: its own shards, partitioned by its number."""
    with open_parquet(os.path.join(root, f"w{worker}-{os.getpid()}.parquet"), partition={"worker": worker},
                      partition_time="hour", rotate=Rotate(size=50_000)) as w:
        n = 0
        for k in range(0, len(frs), 100):
            n += w.write(owned_batch(frs[k:k + 100]))
        return n


def test_processes_write_shards_of_one_dataset(tmp_path: Path) -> None:
    import multiprocessing

    frs = frames(1000)
    parts = {0: frs[0::2], 1: frs[1::2]}
    root = tmp_path / "ds"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        done = pool.starmap(_shard_worker, [(str(root), k, v) for k, v in parts.items()])
    assert done == [500, 500]
    assert len(list(root.rglob("*.parquet"))) > 2
    glob = f"read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    assert duck(f"SELECT worker, count(*) FROM {glob} GROUP BY worker ORDER BY worker") == [(0, 500), (1, 500)]
    assert duck(f"SELECT count(*) FROM (SELECT data FROM {glob} GROUP BY data HAVING count(*) > 1)") == [(0,)]
    t = read_dir(root)
    for k, v in parts.items():
        mine = t.filter(pa.compute.equal(t.column("worker"), k))
        assert sorted(mine.column("data").to_pylist()) == sorted(v)


def test_publish_from_an_inject_service(tmp_path: Path) -> None:
    p = tmp_path / "sent.parquet"
    w = open_writer(p)
    frs = frames(100)
    with nc.InjectService(w) as tx:
        tx.send_many(frs)
        assert tx.wait_drained(5)
    assert w.closed and w.stats().queued == 100
    t = pq.read_table(p)
    assert t.column("data").to_pylist() == frs
    assert set(t.column("direction").to_pylist()) == {int(nc.Direction.OUTGOING)}


def test_closed_and_leaked_writers(tmp_path: Path) -> None:
    w = open_parquet(tmp_path / "a.parquet")
    w.write([nc.OwnedPacket.make(frames(1)[0], T0)])
    w.close()
    w.close()
    with pytest.raises(nc.ClosedError):
        w.write([])
    w2 = open_parquet(tmp_path / "b.parquet")
    w2.write([nc.OwnedPacket.make(b"\x01" * 60, T0)] * 3)
    with pytest.warns(ResourceWarning):
        del w2
        gc.collect()
    assert pq.read_metadata(tmp_path / "b.parquet").num_rows == 3


def test_interpreter_exit_closes_the_file(tmp_path: Path) -> None:
    p = tmp_path / "exit.parquet"
    code = ("import sys, netring_chan as nc\n"
            "w = nc.open_writer(sys.argv[1])\n"
            "w.write([nc.OwnedPacket.make(bytes([i]) * 60, 10**18 + i) for i in range(7)])\n"
            "sys.modules['keep'] = w  # never closed: atexit does it\n")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert pq.read_table(p).column("data").to_pylist() == [bytes([i]) * 60 for i in range(7)]


def test_a_forked_child_leaves_the_file_alone(tmp_path: Path) -> None:
    p = tmp_path / "f.parquet"
    w = open_parquet(p)
    w.write(owned_batch(frames(10)))
    size = p.stat().st_size
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            try:
                w.write([])
            except nc.ClosedError:
                code = 0
            w._pw.close()  # what collecting it in the child would do: write a footer
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert p.stat().st_size == size  # nothing of the child's reached the parent's file
    w.write(owned_batch(frames(5)))
    w.close()
    assert pq.read_table(p).num_rows == 15


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    p = tmp_path / "x.parquet"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"partition": {"date": 1}}, "partition key"),
        ({"partition": {"1x": 1}}, "partition key"),
        ({"partition": {"worker": "a/b"}}, "partition value"),
        ({"partition": {"worker": True}}, "partition value"),
        ({"partition": ["worker", 1]}, "partition must be a mapping"),
        ({"partition_time": "minute"}, "partition_time"),
        ({"compression": "nope"}, "compression"),
        ({"compression": "snappy", "compression_level": 3}, "compression_level"),
        ({"compression_level": 99}, "compression_level"),
        ({"row_group_rows": 0}, "row_group_rows"),
        ({"row_group_bytes": 1.5}, "row_group_bytes"),
        ({"snaplen": 0}, "snaplen"),
        ({"rotate": 5}, "rotate"),
        ({"interface": 3}, "interface"),
    ]
    for kw, word in bad:
        with pytest.raises(nc.ConfigError, match=word):
            open_parquet(p, **kw)
    with pytest.raises(nc.ConfigError, match="path"):
        open_parquet(str(tmp_path) + "/")
    with open_parquet(p) as w:
        with pytest.raises(nc.ConfigError, match="packet 1"):
            w.write([nc.OwnedPacket.make(b"ab", T0), "not a packet"])
        with pytest.raises(nc.ConfigError, match="packets must be"):
            w.write(42)  # type: ignore[arg-type]
        with pytest.raises(nc.ConfigError, match="ifrecv"):
            w.write_stats(ifrecv=-1)
        with pytest.raises(ValueError, match="snaplen"):
            w.publish([b"x" * 300000])
    assert pq.read_table(p).num_rows == 0
    with pytest.raises(nc.ConfigError, match="extension"):
        open_writer(tmp_path / "x.arrow")
    with pytest.raises(FileNotFoundError, match="no/such"):
        open_writer(tmp_path / "no" / "such" / "x.parquet")


_NO_PYARROW = r"""
import sys
sys.modules["pyarrow"] = None  # as if it were not installed
import netring_chan as nc
from netring_chan.testing import MemorySource
with MemorySource([b"\x01" * 60]) as src:
    b = src.next_batch().to_owned()
for what, call in (("to_arrow", b.to_arrow), ("open_writer", lambda: nc.open_writer(sys.argv[1]))):
    try:
        call()
    except nc.ArrowMissingError as e:
        assert isinstance(e, ImportError)
        print(what, e)
    else:
        raise SystemExit(what + ": no error")
"""


def test_without_pyarrow_the_error_names_the_extra(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    r = subprocess.run([sys.executable, "-c", _NO_PYARROW, str(out)], capture_output=True, text=True,
                       timeout=60, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "error"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and all("pip install 'netring_chan[arrow]'" in ln for ln in lines), r.stdout
    assert not out.exists()
    # The command says so as a usage error, before it opens anything (no such interface either).
    cmd = [sys.executable, "-c", "import sys, runpy; sys.modules['pyarrow'] = None; "
           "sys.argv[0] = 'netring-chan'; runpy.run_module('netring_chan', run_name='__main__')",
           "capture", "-i", "no-such-if0", "-w", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "netring_chan[arrow]" in r.stderr and "no-such-if0" not in r.stderr, r.stderr


# -- real captures --------------------------------------------------------------------------------------


@pytest.mark.privileged
def test_capture_service_into_a_dataset(lab: Lab, tmp_path: Path) -> None:
    sent = frames(3000)
    root = tmp_path / "ds"
    # A ring that holds everything sent (4 MiB for ~2.4 MB): no drop on a busy machine.
    cap = nc.Capture(lab.a, block_size=1 << 16, block_count=64, block_timeout_ms=10, protocol=ETH_P_LAB)
    with open_parquet(root / "lab.parquet", partition={"worker": 0}, partition_time="hour",
                      rotate=Rotate(size=500_000), interface=lab.a) as w, nc.CaptureService(cap) as svc:
        lab.send(sent)
        n = 0
        deadline = time.monotonic() + 10
        while n < len(sent) and time.monotonic() < deadline:
            try:
                b = svc.get_batch(timeout=0.5)
            except queue.Empty:
                continue
            n += w.write(b)
        svc.stop()
        n += sum(w.write(b) for b in svc.get_all())
        st = svc.stats()
        w.write_stats(ifrecv=st.kernel_packets, ifdrop=st.kernel_drops, osdrop=st.queue_drops,
                      usrdeliv=st.delivered)
    assert st.kernel_drops == st.queue_drops == 0
    assert n == st.delivered == len(sent) and len(w.paths) > 1
    assert duck(f"SELECT count(*), sum(caplen) FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
                "WHERE worker = 0") == [(st.delivered, sum(map(len, sent)))]
    t = read_dir(root).sort_by("timestamp")
    assert t.column("data").to_pylist() == sent
    assert set(t.column("ifindex").to_pylist()) == {socket_ifindex(lab.a)}


def socket_ifindex(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)


@pytest.mark.privileged
def test_command_capture_to_parquet(lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "cap.parquet"
    env = {**os.environ, "PYTHONWARNINGS": "error", "COLUMNS": "200"}
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, "-m", "netring_chan", "capture",
                             "-i", lab.a, "-w", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("capturing on"), first
        sent = frames(200)
        lab.send(sent)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"wrote {out}" in err and "200 packets" in err, err
    t = pq.read_table(out)
    assert t.column("data").to_pylist() == sent
    assert b'"usrdeliv": 200' in pq.read_metadata(out).metadata[b"netring_chan.stats"]
