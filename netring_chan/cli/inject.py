"""``inject``: replay a pcap/pcapng file through the Injector (a TX ring).

Three paces: the recorded one (the file Reader hands packets out no earlier
than their timestamps say), a fixed rate (``--rate PPS``: this module spaces
the frames), or as fast as possible (``--rate max``). SIGINT/SIGTERM end the
replay between frames; what was queued is still sent, and the summary says
how far it got.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time

from rich.console import Console

import netring_chan as nc

from .capture import Signals, stopped_by

__all__ = ["run_inject"]

_WAIT = 0.1  # the longest the loop sleeps before it looks at the stop flag
_SEND_TIMEOUT = 10.0  # a ring that frees no slot for this long is stuck: an error


def run_inject(args: argparse.Namespace) -> int:
    rate: float | None = getattr(args, "rate", None)
    recorded = not hasattr(args, "rate")
    err = Console(stderr=True, highlight=False, markup=False)
    con = Console(highlight=False, markup=False)
    reader = nc.open_reader(args.read, pace="recorded" if recorded else "fast", loop=args.loop)
    try:
        inj = nc.Injector(args.interface)
    except BaseException:
        reader.close()
        raise
    sent_bytes = skipped = truncated = 0
    longest = 0
    t0 = time.monotonic()
    with reader, inj, Signals() as flag:
        how = "at the recorded pace" if recorded else ("as fast as possible" if rate is None else f"at {rate:g} pkt/s")
        err.print(f"replaying {args.read} on {args.interface} {how}"
                  + (f", {args.loop} times" if args.loop != 1 else "") + "; Ctrl-C to stop", soft_wrap=True)
        next_t = time.monotonic()
        while flag.signal is None:
            batch = reader.next_batch_blocking(_WAIT)
            if batch is None:
                if reader.at_end:
                    break
                continue
            frames = batch.datas()
            truncated += sum(map(operator.lt, batch.caplens, batch.wire_lens))
            try:
                inj.check_frames(frames)  # the whole batch at once when every frame plainly fits
            except ValueError:
                ok: list[bytes] = []
                for f in frames:  # some frame does not: keep the others, count it
                    try:
                        inj.check_frame(f)
                    except ValueError:
                        skipped += 1  # longer than the interface takes (or shorter than a header)
                        longest = max(longest, len(f))
                        continue
                    ok.append(f)
                frames = ok
            if rate is None:
                inj.send_many(frames, timeout=_SEND_TIMEOUT)  # flushes when done
                sent_bytes += sum(map(len, frames))
                continue
            for f in frames:  # a fixed rate: frame i leaves at t0 + i / rate
                while flag.signal is None:
                    wait = next_t - time.monotonic()
                    if wait <= 0:
                        break
                    inj.flush()
                    time.sleep(min(wait, _WAIT))
                if flag.signal is not None:
                    break
                inj.send(f, timeout=_SEND_TIMEOUT)
                sent_bytes += len(f)
                next_t = max(next_t + 1 / rate, time.monotonic() - 1.0)  # no catch-up burst beyond 1 s
        inj.flush()
        inj.wait_drained(timeout=5.0)
        st = inj.stats()
        max_frame = inj.max_frame
    dt = time.monotonic() - t0
    con.print(f"sent {st.sent} frames ({sent_bytes} bytes) from {args.read} on {args.interface} in {dt:.2f} s "
              f"({st.sent / dt if dt > 0 else 0.0:,.1f} pkt/s){stopped_by(flag.signal)}", soft_wrap=True)
    con.print(f"queued {st.queued}, sent {st.sent}, rejected by the kernel {st.rejected}, "
              f"ring full {st.ring_full} times", soft_wrap=True)
    if skipped:
        con.print(f"skipped {skipped} frames that {args.interface} cannot send (the longest {longest} bytes; "
                  f"the interface takes at most {max_frame})", soft_wrap=True)
    if truncated:
        con.print(f"{truncated} frames were cut short in the file (snaplen) and went out as captured",
                  soft_wrap=True)
    sys.stdout.flush()
    return 0
