"""Forward frames between two interfaces through a Python callback.

    sudo python3 examples/bridge.py veth-a veth-b --duration 10 [--drop-ethertype 0x88b6]

Every frame received on one side is shown to ``verdict`` (a zero-copy view,
valid during the call) and forwarded to the other side, dropped, or replaced
by the bytes it returns. The bridge never re-captures what it sent and puts
back 802.1Q tags the kernel stripped. Its counters add up per direction:
received == forwarded + dropped + too large + ring full + lost.
"""

from __future__ import annotations

import argparse
import signal

import netring_chan as nc


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--drop-ethertype", type=lambda s: int(s, 0), default=None,
                   help="drop frames of this EtherType (e.g. 0x88b6), forward the rest")
    args = p.parse_args(argv)
    drop = None if args.drop_ethertype is None else args.drop_ethertype.to_bytes(2, "big")

    def verdict(pkt: nc.Packet, direction: nc.BridgeDirection) -> nc.Verdict:
        if drop is not None and bytes(pkt.data[12:14]) == drop:
            return nc.Verdict.DROP
        return nc.Verdict.FORWARD

    with nc.Bridge(args.a, args.b, verdict) as br:
        signal.signal(signal.SIGTERM, lambda *_: br.stop())
        print(f"bridging {args.a} <-> {args.b}", flush=True)
        try:
            br.run_for(args.duration)
        except KeyboardInterrupt:
            pass
        st = br.stats()
    for name, d in (("a->b", st.a_to_b), ("b->a", st.b_to_a)):
        print(f"{name}: received {d.received}, forwarded {d.forwarded}, dropped {d.dropped}, "
              f"balanced {d.balanced}", flush=True)


if __name__ == "__main__":
    main()
