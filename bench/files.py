"""pcap/pcapng file speed, each figure beside its peer from the same run.

    python3 bench/files.py [--packets N] [--size BYTES] [--repeat K] [--dir /dev/shm]

Write: owned batches (as a CaptureService delivers them, 1024 packets each)
into a pcapng file on tmpfs with ``Writer.write`` (one C call per batch),
against ``tcpdump -r in.pcap -w out.pcap`` moving the same packets (tcpdump
reads them from a file, as no network is involved; it writes pcap, not
pcapng). Read: ``open_reader`` of that pcapng file, each packet's bytes and
timestamp reaching Python (by batch: ``datas()`` + ``timestamps_ns``; and per
``OwnedPacket``), against dpkt's ``pcapng.Reader`` and scapy's
``PcapNgReader`` (scapy on a tenth of the file: it is slow). Parquet (when
pyarrow is installed): the same batches into a Parquet file (zstd, row
groups of 128k rows; and without compression) with ``ParquetWriter.write``, against the pcapng
``Writer.write`` of the same run; and ``OwnedBatch.to_arrow`` against
building the same record batch with ``pa.array`` from each column's values.
Rates are packets/s and MB/s of packet bytes; ratios are ours / theirs,
median of ``--repeat`` rounds. Needs no root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import netring_chan as nc
from netring_chan.testing import MemorySource


def make_batches(n: int, size: int) -> list[nc.OwnedBatch]:
    # Random payloads: nothing for Parquet's compression to gain (its worst case).
    head = b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02\x88\xb5"
    out: list[nc.OwnedBatch] = []
    src = MemorySource(block_size=1 << 22, packets_per_block=1024, max_blocks=1 << 20)
    try:
        left = n
        while left:
            k = min(left, 1024)
            src.push([head + os.urandom(size - 14) for _ in range(k)])
            left -= k
            b = src.next_batch()
            assert b is not None
            with b:
                out.append(b.to_owned())
    finally:
        src.close()
    return out


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=500_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ncfiles-", dir=a.dir)
    try:
        run(a, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(a: argparse.Namespace, work: str) -> None:
    batches = make_batches(a.packets, a.size)
    n, mb = a.packets, a.packets * a.size / 1e6
    ng, pc = os.path.join(work, "ours.pcapng"), os.path.join(work, "in.pcap")
    with nc.open_writer(pc) as w:  # tcpdump's input: the same packets
        for b in batches:
            w.write(b)
    small = os.path.join(work, "small.pcapng")
    with nc.open_writer(small) as w:
        for b in batches[:max(1, len(batches) // 10)]:
            w.write(b)
    n_small = sum(len(b) for b in batches[:max(1, len(batches) // 10)])

    def write_ours() -> int:
        with nc.open_writer(ng) as w:
            return sum(w.write(b) for b in batches)

    def write_tcpdump() -> int:
        out = os.path.join(work, "tcpdump.pcap")
        subprocess.run(["tcpdump", "-r", pc, "-w", out], check=True, capture_output=True)
        return n

    pqf = os.path.join(work, "ours.parquet")

    def write_parquet() -> int:
        with nc.open_writer(pqf) as w:
            return sum(w.write(b) for b in batches)

    def write_parquet_plain() -> int:
        with nc.open_parquet(pqf, compression="none") as w:
            return sum(w.write(b) for b in batches)

    def to_arrow() -> int:
        return sum(b.to_arrow().num_rows for b in batches)

    def to_arrow_naive() -> int:
        import pyarrow as pa
        k = 0
        for b in batches:
            ps = list(b)
            cols = [pa.array([p.timestamp_ns for p in ps], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                    pa.array(b.wire_lens, pa.uint32()), pa.array(b.caplens, pa.uint32()),
                    pa.array([p.pkttype for p in ps], pa.uint8()), pa.array([p.ifindex for p in ps], pa.int32()),
                    pa.array([p.protocol for p in ps], pa.uint16()), pa.array([p.vlan_tci for p in ps], pa.uint16()),
                    pa.array([p.vlan_tpid for p in ps], pa.uint16()), pa.array([p.rxhash for p in ps], pa.uint32()),
                    pa.array(b.datas(), pa.binary())]
            k += pa.RecordBatch.from_arrays(cols, schema=b.to_arrow().schema).num_rows
        return k

    def read_bulk() -> int:
        k = 0
        with nc.open_reader(ng) as r:
            while (b := r.next_batch()) is not None:
                for d, t in zip(b.datas(), b.timestamps_ns):
                    k += len(d)
        assert k == n * a.size
        return n

    def read_packets() -> int:
        k = 0
        with nc.open_reader(ng) as r:
            while (b := r.next_batch()) is not None:
                for p in b:
                    k += len(p.data)
                    p.timestamp_ns
        assert k == n * a.size
        return n

    def read_dpkt() -> int:
        import dpkt
        k = 0
        with open(ng, "rb") as f:
            for ts, buf in dpkt.pcapng.Reader(f):
                k += len(buf)
        assert k == n * a.size
        return n

    def read_scapy() -> int:
        from scapy.utils import PcapNgReader
        k = 0
        with PcapNgReader(small) as r:
            for p in r:
                k += len(bytes(p))
                p.time
        return n_small

    rows: dict[str, list[float]] = {}
    peers = {"write pcapng (Writer.write per batch)": ("tcpdump -r | -w (pcap)", write_ours, write_tcpdump),
             "read, by batch (datas + timestamps_ns)": ("dpkt pcapng.Reader", read_bulk, read_dpkt),
             "read, per OwnedPacket": ("dpkt pcapng.Reader", read_packets, read_dpkt),
             "read, by batch, vs scapy": ("scapy PcapNgReader", read_bulk, read_scapy)}
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        print("pyarrow is not installed: no Parquet rows (pip install 'netring_chan[arrow]')")
    else:
        peers["write Parquet (ParquetWriter.write)"] = ("pcapng Writer.write", write_parquet, write_ours)
        peers["write Parquet, compression none"] = ("pcapng Writer.write", write_parquet_plain, write_ours)
        peers["OwnedBatch.to_arrow"] = ("pa.array per column", to_arrow, to_arrow_naive)
    have_tcpdump = shutil.which("tcpdump") is not None
    for _ in range(a.repeat):
        for name, (peer, ours, theirs) in peers.items():
            if theirs is write_tcpdump and not have_tcpdump:
                continue
            dt, k = timed(ours)
            pdt, pk = timed(theirs)
            rows.setdefault(name, []).append(k / dt)
            rows.setdefault(name + "|peer", []).append(pk / pdt)
    print(f"{n} packets of {a.size} bytes ({mb:.1f} MB of packet bytes) on {a.dir or 'the default tmp'}; "
          f"median of {a.repeat}; commit {_commit()}")
    print(f"{'':42} {'ours Mpps':>10} {'MB/s':>8}   {'peer':24} {'Mpps':>8} {'MB/s':>8}  ratio [min..max]")
    if os.path.exists(pqf):
        write_parquet()  # the default (zstd) file, for its size
        print(f"file sizes: pcapng {os.path.getsize(ng) / 1e6:.1f} MB, Parquet (zstd) {os.path.getsize(pqf) / 1e6:.1f} MB")
    for name, (peer, _, _) in peers.items():
        if name not in rows:
            continue
        o, p = rows[name], rows[name + "|peer"]
        ratios = [x / y for x, y in zip(o, p)]
        om, pm = statistics.median(o), statistics.median(p)
        print(f"{name:42} {om / 1e6:10.3f} {om * a.size / 1e6:8.1f}   {peer:24} {pm / 1e6:8.3f} "
              f"{pm * a.size / 1e6:8.1f}  {statistics.median(ratios):.2f}x [{min(ratios):.2f}..{max(ratios):.2f}]")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())
