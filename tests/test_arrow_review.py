"""Review of the Arrow/Parquet feature: what a user of DuckDB or pyarrow would
trip on (partition names the readers misread, time partitions that explode
into one file per packet). Needs no root."""

from __future__ import annotations

import enum
import os
import time
from pathlib import Path
from typing import Any

import pytest

import netring_chan as nc
from netring_chan.files import open_parquet

pa = pytest.importorskip("pyarrow")
ds = pytest.importorskip("pyarrow.dataset")
pq = pytest.importorskip("pyarrow.parquet")
duckdb = pytest.importorskip("duckdb")

pytestmark = pytest.mark.unprivileged

T0 = 1_700_000_000_123_456_789
HOUR = 3600 * 10**9


def duck(sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        return con.execute(sql).fetchall()  # type: ignore[no-any-return]
    finally:
        con.close()


@pytest.mark.parametrize("partition", [
    {"worker\n": 1},  # a newline: DuckDB drops the partition column
    {"caplen": 7},  # a column's name: DuckDB reads 7 for every caplen, pyarrow fails
    {"Protocol": 5},  # DuckDB's names are case-insensitive: protocol becomes 5
    {"DATA": 1},
    {"Hour": 1},  # the time partition's key, in another case
    {"worker": 1, "Worker": 2},  # one column for DuckDB
    {"_worker": 1},  # pyarrow.dataset skips a directory starting with '_': no rows at all
    {"worker": 10**400},  # longer than a directory entry's name
    {"worker": 10**5000},  # past Python's int-to-str limit: a ValueError
    {"worker": "a" * 250},  # longer than a directory entry: an OSError, at the first write when time-partitioned
    {"worker": "a%2Fb"},  # readers percent-decode a value: read back as 'a/b'
    {"worker": "a\nb"},  # DuckDB drops the partition column
    {"worker": "__HIVE_DEFAULT_PARTITION__"},  # read back as null
])
def test_partitions_the_readers_would_misread_are_refused(tmp_path: Path, partition: dict[Any, Any]) -> None:
    with pytest.raises(nc.ConfigError, match="partition"):
        open_parquet(tmp_path / "x.parquet", partition=partition)
    assert not any(tmp_path.iterdir())


class W(enum.IntEnum):
    A = 3


def test_accepted_partitions_read_back_as_written(tmp_path: Path) -> None:
    p = nc.OwnedPacket.make(b"\x01" * 60, T0, 60, 0, protocol=0x800)
    with open_parquet(tmp_path / "x.parquet", partition={"host": "edge-1.example", "worker": W.A}) as w:
        w.write([p])
    assert [str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*.parquet")] == \
        ["host=edge-1.example/worker=3/x.parquet"]
    assert duck(f"SELECT host, worker, protocol, caplen FROM read_parquet('{tmp_path}/**/*.parquet', "
                "hive_partitioning=true)") == [("edge-1.example", 3, 0x800, 60)]
    t = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert t.column("host").to_pylist() == ["edge-1.example"] and t.column("worker").to_pylist() == [3]


def test_packets_out_of_order_across_an_hour_make_one_file_per_hour(tmp_path: Path) -> None:
    # Packets from several CPUs reach a block a little out of order: at an
    # hour boundary a batch goes back and forth between the two hours.
    edge = (T0 // HOUR + 1) * HOUR
    pk = [nc.OwnedPacket.make(i.to_bytes(4, "big") * 15, edge + (7 if i % 2 else -7) * (i + 1)) for i in range(400)]
    with open_parquet(tmp_path / "x.parquet", partition_time="hour") as w:
        assert w.write(pk) == 400
    files = sorted(tmp_path.rglob("*.parquet"))
    assert len(files) == 2, len(files)
    t = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert t.num_rows == 400
    for f in files:  # each hour's packets, in the order they came
        part = pq.read_table(f)
        late = {ts >= edge for ts in part.column("timestamp").cast(pa.int64()).to_pylist()}
        assert len(late) == 1
        assert part.column("data").to_pylist() == [p.data for p in pk if (p.timestamp_ns >= edge) in late]


def test_a_time_before_1970_is_in_its_own_hour(tmp_path: Path) -> None:
    # Integer division truncates toward zero: -5 ns went to 1970-01-01 hour 00.
    pk = [nc.OwnedPacket.make(b"\x01" * 60, -5), nc.OwnedPacket.make(b"\x02" * 60, -HOUR),
          nc.OwnedPacket.make(b"\x03" * 60, 0)]
    with open_parquet(tmp_path / "x.parquet", partition_time="hour") as w:
        w.write(pk)
    files = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*.parquet"))
    assert files == ["date=1969-12-31/hour=23/x.parquet", "date=1970-01-01/hour=00/x1.parquet"]
    assert pq.read_table(tmp_path / files[0]).column("data").to_pylist() == [b"\x01" * 60, b"\x02" * 60]


def test_template_fields_in_the_directory_of_a_partitioned_shard(tmp_path: Path) -> None:
    # The partition directories went under the template's directory as
    # written: '{n}' there named every file alike, each rotation truncating
    # the one before; '%Y' made a directory called '%Y'.
    with open_parquet(tmp_path / "run{n}" / "x.parquet", partition={"w": 1}, rotate=nc.Rotate(size=100)) as w:
        for i in range(5):
            w.write([nc.OwnedPacket.make(bytes([i]) * 60, T0 + i)])
    assert [str(Path(p).relative_to(tmp_path)) for p in w.paths] == \
        ["run0/w=1/x.parquet", "run1/w=1/x.parquet", "run2/w=1/x.parquet"]
    t = ds.dataset(str(tmp_path), format="parquet", partitioning="hive").to_table()
    assert sorted(t.column("data").to_pylist()) == [bytes([i]) * 60 for i in range(5)]
    now = 1_700_000_000.0
    with open_parquet(tmp_path / "%Y" / "y.parquet", partition={"w": 1}, partition_time="day",
                      _clock=lambda: now) as w:
        w.write([nc.OwnedPacket.make(b"\x01" * 60, T0)])
    assert [str(Path(p).relative_to(tmp_path)) for p in w.paths] == \
        [time.strftime("%Y", time.localtime(now)) + "/w=1/date=2023-11-14/y.parquet"]


@pytest.mark.parametrize("name", ["_x.parquet", ".x.parquet"])
def test_a_shard_name_dataset_readers_skip_is_refused(tmp_path: Path, name: str) -> None:
    # pyarrow.dataset ignores files whose names start with '.' or '_'.
    for kw in ({"partition": {"worker": 1}}, {"partition_time": "hour"}):
        with pytest.raises(nc.ConfigError, match="name"):
            open_parquet(tmp_path / name, **kw)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_a_file_that_cannot_be_opened_is_not_counted_as_opened(tmp_path: Path) -> None:
    # The name was registered (paths, path, the ring: the oldest file removed)
    # before the file was opened; a failed open left a name of no file.
    edge = (T0 // HOUR + 1) * HOUR
    blocked = tmp_path / "date=2023-11-14" / "hour=23"  # the next hour's directory is a file
    blocked.parent.mkdir()
    blocked.write_bytes(b"")
    with open_parquet(tmp_path / "x.parquet", partition_time="hour", rotate=nc.Rotate(size=1 << 20, files=1)) as w:
        w.write([nc.OwnedPacket.make(b"\x01" * 60, edge - 1)])
        first = w.path
        with pytest.raises(OSError):
            w.write([nc.OwnedPacket.make(b"\x02" * 60, edge + 1)])
        assert w.paths == [first] and w.path == first
        assert os.path.exists(first)  # the ring of one kept it: nothing replaced it
    assert pq.read_table(first).column("data").to_pylist() == [b"\x01" * 60]


def test_write_names_a_bad_interface_as_the_pcap_writer_does(tmp_path: Path) -> None:
    pk = [nc.OwnedPacket.make(b"\x01" * 60, T0)]
    with open_parquet(tmp_path / "x.parquet", interface=["a", "b"]) as w:
        for bad in ("a", 2, -1, True, 1.0):
            with pytest.raises(nc.ConfigError, match="interface"):
                w.write(pk, interface=bad)  # type: ignore[arg-type]
        assert w.write(pk, interface=1) == 1 and w.write(pk) == 1
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 2


@pytest.mark.parametrize("codec", ["bz2", "BZ2"])
def test_an_arrow_codec_parquet_does_not_write_is_refused_by_name(tmp_path: Path, codec: str) -> None:
    # pyarrow's Codec knows bz2, its Parquet writer does not: that must be a
    # ConfigError naming the argument, before a file is made.
    with pytest.raises(nc.ConfigError, match=f"compression.*{codec}"):
        open_parquet(tmp_path / "x.parquet", compression=codec)
    assert os.listdir(tmp_path) == []
    with open_parquet(tmp_path / "y.parquet", compression="NONE") as w:  # Parquet's names in any case
        w.write([nc.OwnedPacket.make(b"ab", T0)])
    assert pq.read_table(tmp_path / "y.parquet").num_rows == 1


@pytest.mark.parametrize("kw, word", [({"linktype": 1 << 16}, "linktype"), ({"linktype": True}, "linktype"),
                                      ({"snaplen": 1 << 27}, "snaplen"), ({"rotate": "1M"}, "rotate")])
@pytest.mark.parametrize("name", ["x.pcap", "x.parquet"])
def test_every_writer_names_a_bad_common_option(tmp_path: Path, name: str, kw: dict[str, Any], word: str) -> None:
    with pytest.raises(nc.ConfigError, match=word):
        nc.open_writer(tmp_path / name, **kw)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("key", ["1worker", "_worker", "wörker"])
def test_a_partition_key_error_says_what_a_key_is(tmp_path: Path, key: str) -> None:
    # It said "not starting with '_'" of a key refused for starting with a digit.
    with pytest.raises(nc.ConfigError, match=f"starting with a letter.*got '{key}'"):
        open_parquet(tmp_path / "x.parquet", partition={key: 1})


def test_published_frames_have_every_column(tmp_path: Path) -> None:
    # publish builds its constant columns without a Python step per frame:
    # each row still carries the values the docstring gives.
    frs = [bytes([i]) * (60 + i) for i in range(50)]
    before = time.time_ns()
    with open_parquet(tmp_path / "x.parquet") as w:
        assert w.publish(frs) == 50
    after = time.time_ns()
    t = pq.read_table(tmp_path / "x.parquet")
    assert t.column("data").to_pylist() == frs
    assert t.column("wire_len").to_pylist() == t.column("caplen").to_pylist() == [len(f) for f in frs]
    ts = t.column("timestamp").cast(pa.int64()).to_pylist()
    assert len(set(ts)) == 1 and before <= ts[0] <= after
    assert set(t.column("direction").to_pylist()) == {int(nc.Direction.OUTGOING)}
    for name in ("ifindex", "protocol", "rxhash"):
        assert t.column(name).to_pylist() == [0] * 50, name
    assert t.column("vlan_tci").null_count == t.column("vlan_tpid").null_count == 50


@pytest.mark.parametrize("name", ["x.pcapng", "x.parquet"])
@pytest.mark.parametrize("packets", [[], "batch"])
def test_a_bad_interface_is_named_even_with_nothing_to_write(tmp_path: Path, name: str, packets: Any) -> None:
    # The pcap writer checked the interface only once it had packets to write.
    if packets == "batch":
        packets = nc.OwnedBatch([], b"", 0)
    with nc.open_writer(tmp_path / name) as w:
        for bad in (5, "x", -1):
            with pytest.raises(nc.ConfigError, match=f"interface must be an index.*got {bad!r}"):
                w.write(packets, interface=bad)


def test_more_than_2_gib_of_bytes_is_named_not_a_bare_array_error() -> None:
    # The check after array("i", ...) could never fire: array() raises first,
    # with "signed integer is greater than maximum".
    from netring_chan._arrow import _binary

    class Huge:
        def __len__(self) -> int:
            return 1 << 31

    with pytest.raises(OverflowError, match="2 GiB"):
        _binary(pa, [Huge()])  # type: ignore[list-item]
