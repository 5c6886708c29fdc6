"""Capture an interface into a pcapng file, ending it with the capture's statistics.

    sudo python3 examples/write_pcapng.py eth0 out.pcapng --duration 10 [--count 100] [--filter "udp"]

Each owned batch the service delivers becomes blocks of the file in one C
call. At the end the kernel's packets and drops and the queue's drops are
written as an interface statistics block, so the file itself tells whether
the capture was complete (``capinfos``/our reader show it). Ctrl-C stops
cleanly: the file is closed whole.
"""

from __future__ import annotations

import argparse
import queue
import time

import netring_chan as nc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("interface")
    p.add_argument("path", help="the .pcapng (or .pcap) file to write")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--count", type=int, default=None)
    p.add_argument("--filter", default=None)
    args = p.parse_args(argv)

    n = 0
    end = time.monotonic() + args.duration
    with nc.open_writer(args.path, interface=args.interface) as w:
        with nc.CaptureService(nc.Capture(args.interface, filter=args.filter)) as svc:
            print(f"listening on {args.interface}", flush=True)
            try:
                while (args.count is None or n < args.count) and time.monotonic() < end:
                    try:
                        batch = svc.get_batch(timeout=max(0.0, end - time.monotonic()))
                    except queue.Empty:
                        break
                    n += w.write(batch)
            except KeyboardInterrupt:
                print("interrupted")
            svc.stop()
            st = svc.stats()
            # Packets still queued at stop go to the file too: the counts then add up.
            for batch in svc.get_all():
                n += w.write(batch)
        w.write_stats(ifrecv=st.kernel_packets, ifdrop=st.kernel_drops, osdrop=st.queue_drops,
                      usrdeliv=n)
    print(f"wrote {n} packets to {w.path}; kernel packets {st.kernel_packets}, "
          f"kernel drops {st.kernel_drops}, queue drops {st.queue_drops}", flush=True)


if __name__ == "__main__":
    main()
