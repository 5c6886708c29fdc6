"""Capture one queue of an interface through an AF_XDP socket.

    sudo python3 examples/capture_xdp.py eth0 --queue 0 --duration 10 [--count 100] [--attach skb]

The socket loads its own XDP program, which redirects the queue's frames to
it (they no longer reach the kernel's stack) and passes every other queue's
on; the program leaves when the socket closes. The capture service and its
faces run over the socket exactly as over an AF_PACKET ``Capture``.
"""

from __future__ import annotations

import argparse
import queue
import time

import netring_chan as nc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("interface")
    p.add_argument("--queue", type=int, default=0, help="the RX queue to take (default 0)")
    p.add_argument("--attach", choices=["auto", "native", "skb"], default="auto",
                   help="XDP mode: driver (native), generic (skb), or native else skb (default)")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--count", type=int, default=None)
    args = p.parse_args(argv)

    n = 0
    end = time.monotonic() + args.duration
    with nc.XdpSocket(args.interface, args.queue, attach=args.attach, mode="rx") as xs:
        with nc.CaptureService(xs) as svc:
            print(f"listening on {args.interface} queue {args.queue} "
                  f"({xs.attach_mode.value} mode, {xs.bind_mode})", flush=True)
            try:
                while args.count is None or n < args.count:
                    try:
                        pkt = svc.get(timeout=max(0.0, end - time.monotonic()))
                    except queue.Empty:
                        break
                    n += 1
                    print(f"{pkt.timestamp:.6f} {pkt.wire_len:5} {pkt.data[:14].hex()}", flush=True)
            except KeyboardInterrupt:
                print("interrupted")
            svc.stop()
            st = xs.stats()
    print(f"captured {n} packets; socket packets {st.packets}, drops {st.drops}", flush=True)


if __name__ == "__main__":
    main()
