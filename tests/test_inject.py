"""Injector (PACKET_TX_RING) against the real kernel.

Every test sends from ``lab.a`` with the library and checks what arrives on
``lab.b`` with a stdlib AF_PACKET socket (``Receiver``), byte for byte: the
injector's own counters are checked against that, never taken on trust.
"""

from __future__ import annotations

import gc
import re
import socket
import threading
import time

import pytest

from inject_helpers import SIZES, Receiver, loss_report, seq_frame, softnet_drops
from lab import sh
import netring_chan as nc
from netring_chan import Injector, RingFullError
from netring_chan.rings.afpacket.tx import DATA_OFF


def tc(lab, *args: str) -> str:
    return sh("ip", "netns", "exec", lab.ns, "tc", *args).stdout


def tc_sent_packets(lab, kind: str, ident: str) -> int:
    """Packets counted by a qdisc or class (``tc -s``)."""
    out = tc(lab, "-s", kind, "show", "dev", lab.a)
    m = re.search(re.escape(ident) + r".*?\n\s*Sent \d+ bytes (\d+) pkt", out)
    assert m, out
    return int(m.group(1))


def test_frames_of_many_sizes_arrive_byte_exact_and_in_order(lab):
    frames = [seq_frame(i, SIZES[i % len(SIZES)]) for i in range(3 * len(SIZES))]
    sn = softnet_drops()
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=64) as inj:
        for f in frames[:20]:
            inj.send(f)
        assert inj.stats().queued == 20 and inj.stats().sent == 0  # nothing goes before a flush
        assert rx.settle(0.1) == []
        assert inj.flush() == 20
        for f in frames[20:40]:  # zero-copy path
            with inj.allocate(len(f)) as slot:
                slot.data[:] = f
                slot.send()
        inj.send_many(frames[40:])
        assert inj.wait_drained(2.0)
        got = rx.wait_for(len(frames))
        st = inj.stats()
    assert got == frames, loss_report(lab, got, frames, sn)
    assert rx.settle(0.1) == frames  # nothing extra, nothing twice
    assert (st.queued, st.sent, st.rejected, st.pending) == (len(frames), len(frames), 0, 0)


def test_ring_geometry_and_tpacket_v2(lab):
    with Injector(lab.a, frame_size=2048, frame_count=5) as inj:
        # Two 2048-byte slots per 4 KiB block: 5 rounds up to 3 blocks.
        assert (inj.per_block, inj.block_count, inj.frame_count) == (2, 3, 6)
        s = socket.socket(fileno=socket.dup(inj.fileno()))
        try:
            assert s.getsockopt(263, 10) == 1  # SOL_PACKET, PACKET_VERSION == TPACKET_V2
        finally:
            s.close()
        assert DATA_OFF == 32  # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)


def test_burst_larger_than_ring_completes_with_backpressure(lab):
    # A rate-limited qdisc keeps skbs (and so ring slots) alive for a while,
    # so the 16-slot ring really fills and send() has to wait for the kernel.
    tc(lab, "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "20mbit", "burst", "5kb", "limit", "4mb")
    frames = [seq_frame(i, SIZES[i % len(SIZES)]) for i in range(400)]
    sn = softnet_drops()
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=16) as inj:
        assert inj.send_many(frames) == 400
        assert inj.wait_drained(10.0)
        st = inj.stats()
        got = rx.wait_for(400)
    assert got == frames, loss_report(lab, got, frames, sn)
    assert st.ring_full > 0, st  # it did wait for slots
    assert (st.queued, st.sent, st.rejected) == (400, 400, 0)


def test_try_send_reports_a_full_ring(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=4) as inj:
        tc(lab, "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "1mbit", "burst", "2kb", "limit", "1mb")
        frames = [seq_frame(i, 1000) for i in range(12)]
        results = [inj.try_send(f) for f in frames]
        # Each try flushes when the ring is full; with the qdisc holding the
        # skbs at 1 Mbit/s slots cannot all come back at once.
        assert results[:4] == [True] * 4
        assert False in results
        with pytest.raises(RingFullError):
            while True:
                inj.send(seq_frame(100, 1000), timeout=0)
        accepted = [f for f, ok in zip(frames, results) if ok]
        assert inj.wait_drained(10.0)
        st = inj.stats()
        got = rx.wait_for(st.queued)
    assert got[:len(accepted)] == accepted
    assert st.ring_full >= results.count(False)
    assert st.queued == st.sent == len(got)


def test_discarded_slot_is_reused_and_not_sent(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=8) as inj:
        with inj.allocate(100) as slot:
            first = slot.index
            slot.data[:] = seq_frame(666, 100)  # never sent
        with pytest.raises(nc.ClosedError):
            slot.data
        with inj.allocate(100) as slot:
            assert slot.index == first
            slot.data[:] = seq_frame(1, 100)
            view = slot.data
            slot.send(length=80)  # only the first 80 bytes
        with pytest.raises(ValueError):
            view[0]  # released with the slot
        with pytest.raises(RuntimeError, match="open TX slot"):
            with inj.allocate(100):
                inj.allocate(100)
        with pytest.raises(ZeroDivisionError):
            with inj.allocate(64) as slot:
                slot.data[:] = seq_frame(667, 64)
                1 / 0  # an error inside the block discards the slot
        inj.send(seq_frame(2, 60))
        assert inj.wait_drained(2.0)
        got = rx.settle(0.2)
        st = inj.stats()
    assert got == [seq_frame(1, 100)[:80], seq_frame(2, 60)]
    assert (st.queued, st.sent) == (2, 2)


def test_rejected_frame_is_counted_and_its_slot_reused(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=4) as inj:
        inj.send(seq_frame(0, 200), flush=True)
        # The MTU shrinks under the open injector: its cached limit still
        # lets a 1514-byte frame through, the kernel refuses it
        # (TP_STATUS_WRONG_FORMAT) and stops on that slot.
        lab.ip("link", "set", lab.a, "mtu", "1000")
        with inj.allocate(1514) as slot:
            bad_slot = slot.index
            slot.data[:] = seq_frame(99, 1514)
            slot.send()
        inj.flush()
        st = inj.stats()
        assert (st.rejected, st.pending) == (1, 0), st
        with inj.allocate(200) as slot:  # the refused slot is handed out again
            assert slot.index == bad_slot
            slot.data[:] = seq_frame(1, 200)
            slot.send()
        # A refusal in the middle of a queue: the frames behind it still go.
        inj.send(seq_frame(2, 300))
        # Shrink again, by less than a VLAN tag: the kernel's first size check
        # (MTU + 14 + 4) passes, its untagged check (MTU + 14) refuses.
        lab.ip("link", "set", lab.a, "mtu", "998")
        inj.send(seq_frame(98, 1014))
        inj.send(seq_frame(3, 400))
        inj.send_many([seq_frame(i, 500) for i in range(4, 10)])  # more than the ring
        assert inj.wait_drained(2.0)
        got = rx.settle(0.2)
        st = inj.stats()
        # The injector re-read the MTU: the same frame is now refused up front.
        with pytest.raises(ValueError, match="MTU 998"):
            inj.send(seq_frame(99, 1514))
    want = [seq_frame(0, 200), seq_frame(1, 200), seq_frame(2, 300), seq_frame(3, 400)]
    want += [seq_frame(i, 500) for i in range(4, 10)]
    assert got == want
    assert (st.queued, st.sent, st.rejected, st.pending) == (12, 10, 2, 0)


def test_bad_input_is_refused_and_nothing_half_sent(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_size=1024, frame_count=4) as inj:
        assert inj.max_frame == 1024 - 32
        for bad, what in [(b"", "empty"), (b"\x01" * 13, "shorter"), (seq_frame(1, 993), "slot")]:
            with pytest.raises(ValueError, match=what):
                inj.send(bad)
        with pytest.raises(ValueError):
            inj.allocate(0)
        with pytest.raises(ValueError):
            inj.allocate(2000)
        with pytest.raises(TypeError):
            inj.send("not bytes")  # type: ignore[arg-type]
        with inj.allocate(100) as slot:
            with pytest.raises(ValueError):
                slot.send(length=101)
            slot.data[:] = seq_frame(5, 100)
            slot.send()
        assert inj.stats().queued == 1
        inj.send(seq_frame(6, 60))
        assert inj.wait_drained(2.0)
        assert rx.settle(0.2) == [seq_frame(5, 100), seq_frame(6, 60)]
    with Injector(lab.a) as inj:
        assert inj.max_frame == 1514
        with pytest.raises(ValueError, match="MTU 1500"):
            inj.send(seq_frame(1, 1515))
        tag = b"\x81\x00\x00\x05"  # 802.1Q, VID 5: 4 more bytes allowed
        tagged = seq_frame(1, 1518)
        tagged = tagged[:12] + tag + tagged[16:]
        inj.send(tagged, flush=True)
        with pytest.raises(ValueError, match=r"802\.1Q"):
            inj.send(tagged + b"x")
        assert inj.wait_drained(2.0)
        assert inj.stats().sent == 1 and inj.stats().rejected == 0


@pytest.mark.parametrize("opts, match", [
    ({"frame_size": 1000}, "multiple of 16"),
    ({"frame_size": 64}, "at least"),
    ({"frame_count": 0}, "frame_count"),
    ({"priority": -1}, "priority"),
    ({"qdisc_bypass": 1}, "qdisc_bypass"),
    ({"drain_timeout": -1}, "drain_timeout"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_options(lab, opts, match):
    with pytest.raises(nc.ConfigError, match=match):
        Injector(lab.a, **opts)


def test_unknown_interface(lab):
    with pytest.raises(nc.InterfaceNotFoundError):
        Injector("nosuch0")


def test_use_after_close_and_idempotent_close(lab):
    inj = Injector(lab.a)
    slot = inj.allocate(64)
    inj.close()
    inj.close()
    assert inj.closed
    for call in (lambda: inj.send(seq_frame(1, 60)), lambda: inj.allocate(60), inj.flush,
                 inj.fileno, lambda: inj.wait_drained(0.1), lambda: slot.send()):
        with pytest.raises(nc.ClosedError):
            call()
    assert isinstance(inj.stats(), nc.InjectorStats)


def test_close_drains_what_was_queued(lab):
    frames = [seq_frame(i, 300) for i in range(30)]
    with Receiver(lab.b) as rx:
        inj = Injector(lab.a, frame_count=32)
        for f in frames:
            inj.send(f)  # never flushed by hand
        inj.close()
        assert rx.wait_for(30) == frames
        assert inj.stats().sent == 30


def test_close_wakes_a_blocked_sender(lab):
    tc(lab, "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "100kbit", "burst", "2kb", "limit", "1mb")
    inj = Injector(lab.a, frame_count=2, drain_timeout=0.2)
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            while True:
                inj.send(seq_frame(1, 1400))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()  # blocked on the full ring
    t0 = time.monotonic()
    inj.close()
    t.join(2)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert len(errors) == 1 and isinstance(errors[0], nc.ClosedError)


def test_priority_reaches_the_qdisc_and_bypass_skips_it(lab):
    # HTB puts a frame whose skb->priority equals one of its class ids
    # straight into that class; everything else goes to the default 1:2.
    tc(lab, "qdisc", "add", "dev", lab.a, "root", "handle", "1:", "htb", "default", "2")
    for c in ("1:1", "1:2"):
        tc(lab, "class", "add", "dev", lab.a, "parent", "1:", "classid", c, "htb", "rate", "1gbit")
    with Receiver(lab.b) as rx:
        with Injector(lab.a, priority=0x10001) as inj:  # SO_PRIORITY = class 1:1
            inj.send_many(seq_frame(i, 100) for i in range(7))
            assert inj.wait_drained(2.0)
        with Injector(lab.a) as inj:
            inj.send_many(seq_frame(i, 100) for i in range(7, 10))
            assert inj.wait_drained(2.0)
        assert tc_sent_packets(lab, "class", "class htb 1:1 ") == 7
        assert tc_sent_packets(lab, "class", "class htb 1:2 ") == 3
        before = tc_sent_packets(lab, "qdisc", "qdisc htb 1:")
        with Injector(lab.a, qdisc_bypass=True) as inj:
            inj.send_many(seq_frame(i, 100) for i in range(10, 15))
            assert inj.wait_drained(2.0)
        assert tc_sent_packets(lab, "qdisc", "qdisc htb 1:") == before
        assert rx.wait_for(15) == [seq_frame(i, 100) for i in range(15)]


def test_unclosed_injector_warns(lab):
    inj = Injector(lab.a)
    with pytest.warns(ResourceWarning):
        del inj
        gc.collect()


@pytest.mark.parametrize("face", ["sync", "asyncio", "trio"])
def test_example_script_sends_what_it_says(lab, face):
    import os
    import pathlib
    import subprocess
    import sys

    script = pathlib.Path(__file__).resolve().parent.parent / "examples" / "inject.py"
    with Receiver(lab.b) as rx:
        proc = subprocess.run(
            ["ip", "netns", "exec", lab.ns, sys.executable, str(script), lab.a,
             "--count", "300", "--size", "100", "--face", face],
            capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "error"})
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        got = rx.wait_for(300)
    assert proc.stdout.strip() == "queued 300, sent 300, rejected 0, ring full 0"
    assert [int.from_bytes(f[14:18], "big") for f in got] == list(range(300))
    assert all(len(f) == 100 and f[:6] == b"\xff" * 6 for f in got)


def test_concurrent_senders_lose_nothing(lab):
    per, threads = 150, 4
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=16) as inj:
        def producer(k: int) -> None:
            for i in range(per):
                if i % 3 == 0:
                    with inj.allocate(100) as slot:  # other producers wait for the open slot
                        slot.data[:] = seq_frame(k * 1000 + i, 100)
                        slot.send()
                else:
                    inj.send(seq_frame(k * 1000 + i, 100 + k))
        ts = [threading.Thread(target=producer, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(20)
        assert inj.wait_drained(5.0)
        got = rx.wait_for(per * threads)
        st = inj.stats()
    assert len(got) == per * threads and st.sent == st.queued == per * threads
    seqs = [int.from_bytes(f[14:18], "big") for f in got]
    for k in range(threads):  # each producer's frames arrive in its order
        assert [s for s in seqs if s // 1000 == k] == [k * 1000 + i for i in range(per)]


def test_interface_down_raises_ring_error_and_close_still_works(lab):
    with Injector(lab.a) as inj:
        inj.send(seq_frame(1, 60))
        lab.ip("link", "set", lab.a, "down")
        with pytest.raises(nc.RingError) as ei:
            inj.flush()
        assert ei.value.errno == 100  # ENETDOWN
        assert inj.stats().pending == 1  # still queued, not half-sent
        lab.ip("link", "set", lab.a, "up")
        with Receiver(lab.b) as rx:
            inj.flush()
            assert inj.wait_drained(2.0)
            assert rx.wait_for(1) == [seq_frame(1, 60)]


def test_signals_during_backpressure_waits_do_not_surface(lab):
    import signal

    tc(lab, "qdisc", "add", "dev", lab.a, "root", "tbf", "rate", "5mbit", "burst", "3kb", "limit", "1mb")
    frames = [seq_frame(i, 1000) for i in range(100)]  # ~160 ms at 5 Mbit/s through a 4-slot ring
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
        with Receiver(lab.b) as rx, Injector(lab.a, frame_count=4) as inj:
            inj.send_many(frames)
            assert inj.wait_drained(5.0)
            signal.setitimer(signal.ITIMER_REAL, 0)
            got = rx.wait_for(100)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) > 10  # the waits really were interrupted, and resumed
    assert got == frames
