"""``capture`` and ``stats``: a capture service on one interface, consumed here.

The main thread is the consumer (the sync face, by batch). SIGINT and
SIGTERM call ``svc.stop()`` (safe from a signal handler); the consumer then
takes what is still queued and sees the end, so a file is complete and the
counters are exact when the summary is written. On a terminal a rich
``Live`` status line (or table, for ``stats``) is refreshed a few times a
second from its own thread; when the output is not a terminal there is none.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

import netring_chan as nc
from netring_chan._arrow import pyarrow
from netring_chan.files import file_format

from . import UsageError
from ._files import parse_rotate
from ._summary import describe

__all__ = ["run_capture", "run_stats", "parse_fanout", "XDP_MESSAGE"]

XDP_MESSAGE = ("--backend xdp: the AF_XDP backend is not available in this version of netring_chan "
               f"({nc.__version__}); use --backend afpacket (the default)")
_REFRESH_PER_SECOND = 4
_WAIT = 0.1  # the consumer looks at the clock and the count this often when idle


def parse_fanout(spec: str) -> nc.Fanout:
    """``MODE:GROUP`` (``hash:42``) -> ``nc.Fanout``."""
    mode, sep, group = spec.partition(":")
    modes = {m.name.lower(): m for m in nc.FanoutMode}
    if not sep or mode.lower() not in modes:
        raise UsageError(f"--fanout {spec!r}: expected MODE:GROUP with MODE one of {', '.join(modes)}")
    try:
        gid = int(group, 0)
    except ValueError:
        raise UsageError(f"--fanout {spec!r}: GROUP must be an integer 0..65535") from None
    if not 0 <= gid <= 0xFFFF:
        raise UsageError(f"--fanout {spec!r}: GROUP must be in 0..65535")
    return nc.Fanout(modes[mode.lower()], gid)


class _Meter:
    """What the consumer took, and rates between two looks."""

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.t0 = time.monotonic()
        self._last = (self.t0, 0, 0)

    def add(self, batch: nc.OwnedBatch, n: int | None = None) -> None:
        if n is None or n >= len(batch):
            self.packets += len(batch)
            self.bytes += sum(batch.wire_lens)
        else:
            self.packets += n
            self.bytes += sum(batch.wire_lens[:n])

    def rates(self) -> tuple[float, float]:
        """(packets/s, Mbit/s) since the previous call."""
        now, p, b = time.monotonic(), self.packets, self.bytes
        t, lp, lb = self._last
        dt = now - t
        if dt < 0.05:
            dt = 0.05
        self._last = (now, p, b)
        return (p - lp) / dt, (b - lb) * 8 / dt / 1e6

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.t0


class _StatusLine:
    """The live status line of ``capture``: rich calls ``__rich__`` on each refresh."""

    def __init__(self, svc: nc.CaptureService, meter: _Meter, iface: str) -> None:
        self.svc, self.meter, self.iface = svc, meter, iface

    def __rich__(self) -> Text:
        pps, mbps = self.meter.rates()
        st = self.svc.stats()
        return Text.assemble(
            (f"{self.iface} ", "bold"), f"{self.meter.packets} pkts  ",
            (f"{pps:,.0f} pkt/s  {mbps:,.2f} Mbit/s  ", "cyan"),
            (f"kernel drops {st.kernel_drops}  queue drops {st.queue_drops}",
             "red" if st.kernel_drops or st.queue_drops else "green"),
            f"  queued {st.queued}")


class _StatsTable:
    """The refreshed table of ``stats``."""

    def __init__(self, svc: nc.CaptureService, meter: _Meter, iface: str) -> None:
        self.svc, self.meter, self.iface = svc, meter, iface

    def __rich__(self) -> Table:
        return stats_table(self.svc.stats(), self.meter, self.iface, self.meter.rates())


def stats_table(st: nc.ServiceStats, meter: _Meter, iface: str, rates: tuple[float, float] | None) -> Table:
    t = Table(title=f"{iface}: {meter.elapsed:.1f} s", show_header=True, title_justify="left")
    t.add_column("counter")
    t.add_column("value", justify="right")
    t.add_row("packets", f"{meter.packets}")
    t.add_row("bytes", f"{meter.bytes}")
    if rates is not None:
        t.add_row("packets/s", f"{rates[0]:,.1f}")
        t.add_row("Mbit/s", f"{rates[1]:,.3f}")
    t.add_row("kernel packets", f"{st.kernel_packets}")
    t.add_row("kernel drops", f"{st.kernel_drops}")
    t.add_row("ring freezes", f"{st.kernel_freezes}")
    t.add_row("queue drops", f"{st.queue_drops}")
    t.add_row("queued", f"{st.queued}")
    return t


def identity(st: nc.ServiceStats) -> str:
    ok = "balanced" if st.balanced else "NOT balanced"
    return (f"accounting: kernel packets {st.kernel_packets} = delivered {st.delivered} + kernel drops "
            f"{st.kernel_drops} + queue drops {st.queue_drops} + queued {st.queued} + lost {st.lost} ({ok})")


def stopped_by(signum: int | None) -> str:
    if signum == signal.SIGINT:
        return " (stopped by Ctrl-C)"
    return "" if signum is None else f" (stopped by {signal.Signals(signum).name})"


class Signals:
    """SIGINT/SIGTERM are caught instead of raising: ``signal`` records which
    came, and ``on_signal`` (e.g. a service's ``stop``, safe from a handler)
    runs. Installed only on the main thread; restored on exit."""

    def __init__(self, on_signal: Callable[[], object] | None = None) -> None:
        self.on_signal = on_signal
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signum
        if self.on_signal is not None:
            self.on_signal()

    def __enter__(self) -> Signals:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def _open(args: argparse.Namespace, snaplen: int | None = None, **options: Any) -> nc.Capture:
    prog = None
    if args.filter:
        # Compiled here first, so a bad expression is reported as such
        # (libpcap's message) before anything is opened.
        prog = nc.compile_filter(args.filter, snaplen=snaplen or 262144)
    return nc.Capture(args.interface, filter=prog, snaplen=snaplen, **options)


def _batches(svc: nc.CaptureService, deadline: float | None, tick: Callable[[], None] | None) -> Iterator[nc.OwnedBatch]:
    """Batches until the service stops or ``deadline`` (monotonic) passes;
    then what the stopped service still holds."""
    while True:
        wait = _WAIT
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                break
        try:
            b = svc.get_batch(timeout=wait)
        except queue.Empty:
            b = None
        except nc.ClosedError:
            break
        if tick is not None:
            tick()
        if b is not None:
            yield b
    svc.stop()
    yield from svc.get_all()  # captured before the stop: it belongs to the run


def _console_err() -> Console:
    return Console(stderr=True, highlight=False, markup=False)


def run_capture(args: argparse.Namespace) -> int:
    if args.backend == "xdp":
        raise UsageError(XDP_MESSAGE)
    rotate = None
    if args.rotate:
        if not args.write:
            raise UsageError("--rotate needs -w FILE")
        try:
            # A Rotate now, so a spec it refuses is a usage error before anything is opened.
            rotate = nc.Rotate(**parse_rotate(args.rotate))
        except nc.ConfigError as e:
            raise UsageError(f"--rotate {args.rotate!r}: {e}") from None
        except ValueError as e:
            raise UsageError(str(e)) from None
    if args.write:
        try:
            # A file it cannot write is a usage error before anything opens.
            if file_format(args.write) == "parquet":
                pyarrow()
        except (nc.ConfigError, nc.ArrowMissingError) as e:
            raise UsageError(str(e)) from None
    fanout = parse_fanout(args.fanout) if args.fanout else None
    cap = _open(args, snaplen=args.snaplen, fanout=fanout, promiscuous=args.promisc)
    writer = None
    try:
        if args.write:
            writer = nc.open_writer(args.write, snaplen=args.snaplen, linktype=1, interface=args.interface,
                                    rotate=rotate)
    except BaseException:
        cap.close()
        raise
    err = _console_err()
    svc = nc.CaptureService(cap, name="nc-cli")
    meter = _Meter()
    out = sys.stdout
    limit = args.count
    broken_pipe = False
    deadline = None if args.duration is None else time.monotonic() + args.duration
    show_status = args.status and err.is_terminal
    live = Live(_StatusLine(svc, meter, args.interface), console=err, refresh_per_second=_REFRESH_PER_SECOND,
                transient=True, redirect_stdout=out.isatty(), redirect_stderr=False) if show_status else None
    try:
        with svc, Signals(svc.stop) as stopper:
            err.print(f"capturing on {args.interface}"
                      + (f", writing {args.write}" if args.write else "")
                      + (f", filter {args.filter!r}" if args.filter else "") + "; Ctrl-C to stop", soft_wrap=True)
            if live is not None:
                live.start()
            try:
                for batch in _batches(svc, deadline, None):
                    n = len(batch) if limit is None else min(len(batch), limit - meter.packets)
                    if n <= 0:
                        continue  # past -c: delivered, not shown (the summary says how many)
                    if writer is not None:
                        writer.write(batch if n == len(batch) else batch[:n])
                    elif not broken_pipe:
                        pkts = batch if n == len(batch) else batch[:n]
                        try:
                            sys.stdout.write("".join(describe(p) + "\n" for p in pkts))
                            sys.stdout.flush()
                        except BrokenPipeError:
                            broken_pipe = True  # the reader went away (| head): end quietly
                            svc.stop()
                    meter.add(batch, n)
                    if limit is not None and meter.packets >= limit:
                        svc.stop()
            finally:
                if live is not None:
                    live.stop()
                svc.stop()
        st = svc.stats()
    finally:
        if writer is not None:
            try:
                st_now = svc.stats()
                # pcapng interface statistics (the mapping Writer.write_stats
                # documents): what the kernel accepted, what its ring dropped,
                # what the service's queue dropped, what reached the file.
                writer.write_stats(ifrecv=st_now.kernel_packets, ifdrop=st_now.kernel_drops,
                                   osdrop=st_now.queue_drops, usrdeliv=meter.packets)
            finally:
                writer.close()
    if broken_pipe:
        try:
            sys.stdout = open("/dev/null", "w")  # noqa: SIM115 - no more writes to the closed pipe
        except OSError:
            pass
    how = stopped_by(stopper.signal)
    lines = [f"{meter.packets} packets ({meter.bytes} bytes) captured on {args.interface} "
             f"in {meter.elapsed:.2f} s{how}"]
    extra = st.delivered - meter.packets
    if extra > 0:
        lines.append(f"{extra} more packets arrived before the capture stopped at -c {limit} "
                     f"(not {'written' if writer is not None else 'shown'})")
    lines.append(f"kernel: {st.kernel_packets} packets, {st.kernel_drops} dropped ({st.kernel_freezes} ring "
                 f"freezes); queue: {st.queue_drops} dropped, {st.queued} left queued")
    lines.append(identity(st))
    if writer is not None:
        # With a ring of files (--rotate files=N) names come round again; the
        # oldest may have been removed.
        for p in dict.fromkeys(map(str, writer.paths)):
            if os.path.exists(p):
                lines.append(f"wrote {p}")
    for ln in lines:
        err.print(ln, soft_wrap=True)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    # Only the first 64 bytes of a packet are copied out: this counts, it does not look.
    cap = _open(args, snaplen=64)
    svc = nc.CaptureService(cap, name="nc-stats")
    meter = _Meter()
    con = Console(highlight=False, markup=False)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    live = Live(_StatsTable(svc, meter, args.interface), console=con, refresh_per_second=_REFRESH_PER_SECOND,
                transient=True) if args.status and con.is_terminal else None
    next_line = [time.monotonic() + args.interval]

    def tick() -> None:
        # Not on a terminal: one line per interval.
        now = time.monotonic()
        if live is None and now >= next_line[0]:
            next_line[0] = now + args.interval
            pps, mbps = meter.rates()
            s = svc.stats()
            print(f"{meter.elapsed:8.1f}s packets {meter.packets} bytes {meter.bytes} pkt/s {pps:.1f} "
                  f"Mbit/s {mbps:.3f} kernel-drops {s.kernel_drops} queue-drops {s.queue_drops}", flush=True)

    with svc, Signals(svc.stop) as stopper:
        _console_err().print(f"counting on {args.interface}; Ctrl-C to stop", soft_wrap=True)
        if live is not None:
            live.start()
        try:
            for batch in _batches(svc, deadline, tick):
                meter.add(batch)
        finally:
            if live is not None:
                live.stop()
            svc.stop()
    st = svc.stats()
    con.print(stats_table(st, meter, args.interface, None))
    how = stopped_by(stopper.signal)
    con.print(f"total: {meter.packets} packets, {meter.bytes} bytes in {meter.elapsed:.2f} s{how}", soft_wrap=True)
    con.print(identity(st), soft_wrap=True)
    return 0
