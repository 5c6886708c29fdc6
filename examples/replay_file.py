"""Replay a pcap or pcapng file through the capture service, as a live capture would arrive.

    python3 examples/replay_file.py capture.pcapng [--pace recorded] [--loop 1]

The file is a Source: the service's thread reads it, consumers take packets
exactly as from an interface, and the stream ends by itself at the end of
the file. Statistics blocks written by the capturing program are printed.
"""

from __future__ import annotations

import argparse

import netring_chan as nc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("path")
    p.add_argument("--pace", choices=("fast", "recorded"), default="fast")
    p.add_argument("--loop", type=int, default=1, help="times to play the file (0: for ever)")
    args = p.parse_args(argv)

    reader = nc.open_reader(args.path, pace=args.pace, loop=args.loop)
    n = 0
    with nc.CaptureService(reader) as svc:
        try:
            for pkt in svc:  # ends when the file is read: the reader is at its end
                n += 1
                direction = getattr(pkt.direction, "name", pkt.direction)
                print(f"{pkt.timestamp_ns / 1e9:.9f} if{pkt.ifindex} {direction:<10} "
                      f"{pkt.wire_len:5} {pkt.data[:14].hex()}", flush=True)
        except KeyboardInterrupt:
            print("interrupted")
    for st in reader.interface_stats:
        print("interface statistics:", ", ".join(f"{k}={v}" for k, v in st.items()))
    print(f"replayed {n} packets from {reader.format} file {args.path}"
          f"{' (truncated: ' + reader.problem + ')' if reader.truncated else ''}", flush=True)


if __name__ == "__main__":
    main()
