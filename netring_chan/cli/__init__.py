"""The ``netring-chan`` command (also ``python -m netring_chan``).

Sub-commands: ``capture``, ``inject``, ``stats`` and ``demo`` (the default).
Built on the public API only (``import netring_chan as nc``).

Exit status: 0 when the command did its work, including a capture, stats or
inject run ended by Ctrl-C (that is how they are meant to end) — the file is
complete and the summary written; 1 for an error at run time (no privilege,
no such interface, a failure of the capture); 2 for a usage error (a bad
option, a bad filter expression, a backend this version lacks); 130 for a
demo interrupted by Ctrl-C or SIGTERM (it cleaned up after itself).
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
import sys
from typing import Callable, Sequence, TypeVar

import netring_chan as nc

__all__ = ["main", "build_parser", "explain"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
PROG = "netring-chan"


T = TypeVar("T")


class UsageError(Exception):
    """A command line that cannot work; exit status 2."""


def _checked(convert: Callable[[str], T], not_a: str, ok: Callable[[T], bool], must: str) -> Callable[[str], T]:
    """An argparse type: ``convert`` the text, then ``ok`` the value; the
    messages (``{text}``, ``{v}``) name what was given."""
    def parse(text: str) -> T:
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(not_a.format(text=text)) from None
        if not ok(v):
            raise argparse.ArgumentTypeError(must.format(text=text, v=v))
        return v
    return parse


def _finite_positive(v: float) -> bool:
    return 0 < v < float("inf")  # also false for NaN


_positive_int = _checked(lambda t: int(t, 0), "not an integer: {text!r}", lambda v: v > 0,
                         "must be positive, got {v}")
_loops = _checked(int, "not an integer: {text!r}", lambda v: v >= 0, "must be 0 (for ever) or more, got {v}")
_positive_float = _checked(float, "not a number: {text!r}", _finite_positive,
                           "must be a positive number of seconds, got {text}")
_rate_value = _checked(float, "--rate takes packets per second or 'max', got {text!r}", _finite_positive,
                       "--rate must be positive, got {text}")


def _rate(text: str) -> float | None:
    if text.lower() in ("max", "fast", "0"):
        return None
    return _rate_value(text)


def _on_interface(p: argparse.ArgumentParser, filter_help: str) -> None:
    p.add_argument("-i", "--interface", required=True, metavar="IFACE")
    p.add_argument("-f", "--filter", metavar="FILTER", help=filter_help)


def _duration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--duration", type=_positive_float, metavar="S", help="stop after S seconds")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Linux packet capture and injection (AF_PACKET rings), from the netring_chan library.",
        epilog="Without a sub-command, runs the demo. Capture and injection need CAP_NET_RAW (root, "
               "or setcap cap_net_raw+ep on the interpreter); the demo needs root.")
    p.add_argument("--version", action="version", version=f"%(prog)s {nc.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("capture", help="print one line per packet, or write a pcap/pcapng file",
                       description="Capture on an interface: one line per packet (time, direction, "
                                   "addresses, protocol, length), or write a file (-w). On a terminal, "
                                   "a live status line. Ctrl-C ends cleanly with a summary.")
    _on_interface(c, "tcpdump filter expression (needs libpcap)")
    c.add_argument("-w", "--write", metavar="FILE",
                   help="write packets to FILE (.pcap, .pcapng or .parquet) instead of printing")
    c.add_argument("-c", "--count", type=_positive_int, metavar="COUNT", help="stop after COUNT packets")
    _duration(c)
    c.add_argument("--snaplen", type=_positive_int, default=262144, metavar="N",
                   help="keep at most N bytes of each packet (default 262144)")
    c.add_argument("--fanout", metavar="MODE:GROUP",
                   help="join fanout group GROUP (0-65535) with MODE: "
                        + ", ".join(m.name.lower() for m in nc.FanoutMode))
    c.add_argument("--rotate", metavar="SPEC",
                   help="with -w: start a new file by size=N[k|M|G] and/or seconds=N[s|m|h], "
                        "keeping files=N of them, e.g. size=100M,files=5")
    c.add_argument("--promisc", action="store_true", help="promiscuous mode while capturing")
    c.add_argument("--backend", choices=("afpacket", "xdp"), default="afpacket",
                   help="kernel backend (default afpacket; AF_XDP is not in this version)")
    _status_option(c, "status line on stderr", "stderr")

    s = sub.add_parser("stats", help="counters only (packets, rates, drops), refreshed",
                       description="Count the packets on an interface: packets, bytes, rates, kernel and "
                                   "queue drops; refreshed in place on a terminal, one line per interval "
                                   "otherwise. Ctrl-C ends with the totals.")
    _on_interface(s, "count only what matches (tcpdump syntax)")
    s.add_argument("--interval", type=_positive_float, default=1.0, metavar="S",
                   help="seconds between lines when not on a terminal (default 1)")
    _duration(s)
    _status_option(s, "table", "stdout")

    j = sub.add_parser("inject", help="replay a pcap/pcapng file through the TX ring",
                       description="Send the frames of a pcap/pcapng file on an interface: at the recorded "
                                   "pace (default), at a fixed rate (--rate PPS) or as fast as possible "
                                   "(--rate max).")
    j.add_argument("-i", "--interface", required=True, metavar="IFACE")
    j.add_argument("-r", "--read", required=True, metavar="FILE", help="the file to replay")
    j.add_argument("--rate", type=_rate, default=argparse.SUPPRESS, metavar="PPS",
                   help="packets per second, or 'max' (default: the recorded pace)")
    j.add_argument("--loop", type=_loops, default=1, metavar="N", help="replay the file N times (0: until Ctrl-C)")

    d = sub.add_parser("demo", help="a self-contained demo in a private network namespace (root)",
                       description="As root: make a private network namespace with a veth pair, send a "
                                   "few thousand frames with the Injector, receive them with a sync, an "
                                   "asyncio and a trio consumer side by side, write a pcapng, print what "
                                   "each received, then remove everything it made.")
    d.add_argument("--frames", type=_positive_int, default=3000, metavar="N", help="frames to send (default 3000)")
    d.add_argument("--hold", type=_positive_float, default=0.0, metavar="S",
                   help="wait S seconds before sending (time to look at the namespace)")
    return p


def _status_option(p: argparse.ArgumentParser, what: str, where: str) -> None:
    p.add_argument("--no-status", dest="status", action="store_false",
                   help=f"no {what} refreshed in place (there is none anyway when {where} is not a terminal)")


# -- errors that speak to a person --------------------------------------------------


def _interfaces() -> str:
    try:
        names = [n for _, n in socket.if_nameindex()]
    except OSError:
        return "(could not list them)"
    return ", ".join(names) if names else "(none)"


def explain(e: BaseException) -> tuple[int, str]:
    """The exit status and the message for an exception that ends the command."""
    if isinstance(e, nc.ServiceError) and e.__cause__ is not None:
        status, msg = explain(e.__cause__)
        return status, msg
    if isinstance(e, nc.CapabilityError):
        python = os.path.realpath(sys.executable)
        cap = e.capability
        return EXIT_ERROR, (
            f"{str(e.strerror or e).split('; it needs')[0]}\n"
            f"This needs the {cap} capability, which this process does not have. Either run it as root:\n"
            f"    sudo {PROG} {' '.join(sys.argv[1:])}\n"
            f"or grant {cap} to the Python interpreter once (every script it runs gets it):\n"
            f"    sudo setcap {cap.lower()}+ep {python}")
    if isinstance(e, nc.InterfaceNotFoundError):
        return EXIT_ERROR, (f"no network interface named {e.interface!r} here. "
                            f"The interfaces that exist: {_interfaces()}")
    if isinstance(e, nc.FileFormatError):
        return EXIT_ERROR, f"not a pcap/pcapng file I can read: {e}"
    if isinstance(e, nc.LibpcapMissingError):
        return EXIT_ERROR, str(e)
    if isinstance(e, nc.FilterError):
        return EXIT_USAGE, f"bad filter: {e}"
    if isinstance(e, (UsageError, nc.ConfigError)):
        return EXIT_USAGE, str(e)
    if isinstance(e, nc.ServiceError):
        return EXIT_ERROR, f"the capture failed: {e}"
    if isinstance(e, OSError):
        return EXIT_ERROR, f"{e.filename + ': ' if isinstance(e.filename, str) else ''}{e.strerror or e}"
    return EXIT_ERROR, f"{type(e).__name__}: {e}"


def fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# Each sub-command's module is imported only when it runs (the demo imports trio).
_COMMANDS = {"capture": (".capture", "run_capture"), "stats": (".capture", "run_stats"),
             "inject": (".inject", "run_inject"), "demo": (".demo", "run_demo")}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    command = args.command or "demo"
    if command == "demo" and args.command is None:
        args = build_parser().parse_args(["demo"])
    module, function = _COMMANDS[command]
    run: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module, __name__), function)
    try:
        return run(args)
    except KeyboardInterrupt:
        # Ctrl-C before the command had set up its own handling (while opening).
        fail("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every error ends as a message, not a traceback
        status, message = explain(e)
        fail(message)
        if os.environ.get("NETRING_CLI_DEBUG"):
            raise
        return status
