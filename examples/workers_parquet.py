"""Capture with fanout worker processes, each writing its own Parquet shards.

    sudo python3 examples/workers_parquet.py eth0 dataset/ --workers 2 --duration 10 [--count 1000]

Each worker process has its own ring in one PACKET_FANOUT group (hash: a
flow stays in one worker) and writes what it captures into
``dataset/worker=<k>/date=YYYY-MM-DD/hour=HH/*.parquet``. Afterwards the
whole directory reads as one table (pyarrow here; DuckDB, Spark, Polars
too). Needs the ``arrow`` extra. Ctrl-C stops every worker cleanly.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import netring_chan as nc


def write_shards(ctx: nc.WorkerContext, root: str) -> int:
    """Runs in each worker: its packets, as Parquet shards under ``root``."""
    with nc.open_parquet(os.path.join(root, "capture.parquet"), partition={"worker": ctx.index},
                         partition_time="hour", rotate=nc.Rotate(seconds=60)) as w:
        for batch in ctx.batches():
            w.write(batch)
    return w.packets


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("interface")
    p.add_argument("directory", help="the dataset directory (made if missing)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--count", type=int, default=None, help="stop once the workers have this many packets")
    p.add_argument("--filter", default=None, help="tcpdump filter expression (needs libpcap)")
    args = p.parse_args(argv)

    capture: dict[str, Any] = {"filter": args.filter} if args.filter else {}
    with nc.WorkerPool(write_shards, args.interface, args.workers, args=(args.directory,),
                       capture=capture) as pool:
        print(f"listening on {args.interface} with {args.workers} workers", flush=True)
        end = time.monotonic() + args.duration
        try:
            while time.monotonic() < end:
                if args.count is not None and pool.stats().capture.delivered >= args.count:
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            print("interrupted")
    st = pool.stats()
    written = pool.results()
    print(f"workers wrote {written} packets ({sum(written)} in all); kernel packets "
          f"{st.capture.kernel_packets}, kernel drops {st.capture.kernel_drops}", flush=True)

    import pyarrow.dataset as ds

    if os.path.isdir(args.directory):
        table = ds.dataset(args.directory, format="parquet", partitioning="hive").to_table()
        rows = table.num_rows
    else:
        rows = 0
    print(f"the dataset holds {rows} rows", flush=True)


if __name__ == "__main__":
    main()
