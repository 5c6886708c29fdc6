"""Bridge between two veth legs: namespaces A - bridge - B, real ICMP.

A and B get IPv4 addresses (only inside their own namespaces); the bridge
namespace has none and runs the Bridge on its two veth ends. ``ping`` from A
to B only works if the bridge carries ARP and ICMP both ways.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import threading
import time
import uuid
from typing import Iterator

import pytest

from conftest import need_privileges
from inject_helpers import Receiver, seq_frame
from lab import REQUIRE_ENV, inside, sh
import netring_chan as nc
from netring_chan.bridge import Bridge, BridgeDirection, Verdict

IP_A, IP_B = "10.77.0.1", "10.77.0.2"


class World:
    """Namespaces A, BR, B; veth A:a0 <-> BR:a1 and BR:b1 <-> B:b0."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.A, self.BR, self.B = f"ncbrA-{tag}", f"ncbrX-{tag}", f"ncbrB-{tag}"
        self.a0, self.a1, self.b1, self.b0 = f"a0{tag}", f"a1{tag}", f"b1{tag}", f"b0{tag}"
        self.made: list[str] = []
        try:
            for ns in (self.A, self.BR, self.B):
                sh("ip", "netns", "add", ns)
                self.made.append(ns)
                for k in ("all", "default"):
                    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
            sh("ip", "-n", self.BR, "link", "add", self.a1, "type", "veth", "peer", "name", self.a0, "netns", self.A)
            sh("ip", "-n", self.BR, "link", "add", self.b1, "type", "veth", "peer", "name", self.b0, "netns", self.B)
            sh("ip", "-n", self.A, "addr", "add", f"{IP_A}/24", "dev", self.a0)
            sh("ip", "-n", self.B, "addr", "add", f"{IP_B}/24", "dev", self.b0)
            for ns, ifc in ((self.A, self.a0), (self.BR, self.a1), (self.BR, self.b1), (self.B, self.b0)):
                sh("ip", "-n", ns, "link", "set", ifc, "up")
        except BaseException:
            self.close()
            raise

    def ping(self, count: int = 3, wait: float = 1.0) -> bool:
        r = sh("ip", "netns", "exec", self.A, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
               "-W", str(wait), IP_B, check=False)
        return r.returncode == 0

    def close(self) -> None:
        for ns in self.made:
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def world() -> Iterator[World]:
    need_privileges()
    if shutil.which("ping") is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail("bridge tests need ping (apt-get install iputils-ping)")
        pytest.skip("needs ping (apt-get install iputils-ping)")
    w = World()
    try:
        with inside(w.BR):
            yield w
    finally:
        w.close()


class Running:
    """A bridge run() in a thread (inheriting the bridge namespace)."""

    def __init__(self, br: Bridge) -> None:
        self.br = br
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name="bridge")
        self.t.start()

    def _run(self) -> None:
        try:
            self.br.run()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def stop(self, settle: float = 0.1) -> float:
        """Stop after ``settle`` s (the last frames' blocks get handed over); seconds stop took."""
        time.sleep(settle)
        t0 = time.monotonic()
        self.br.stop()
        self.t.join(5)
        assert not self.t.is_alive()
        return time.monotonic() - t0

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.t.is_alive():
            self.stop()


def is_icmp(data: memoryview) -> bool:
    return bytes(data[12:14]) == b"\x08\x00" and data[23] == 1


def test_ping_crosses_the_bridge_and_nothing_loops(world):
    with Bridge(world.a1, world.b1) as br:
        with Running(br) as run:
            assert world.ping(count=3)
            assert run.stop() < 1.0
        assert run.error is None
        st = br.stats()
    for d in (st.a_to_b, st.b_to_a):
        # Echo requests/replies (+ARP) went through, each exactly once: a loop
        # would re-capture the bridge's own frames and counts would explode.
        assert 4 <= d.received <= 20, st
        assert d.forwarded == d.received and d.sent == d.forwarded, st
        assert d.own_frames == 0 and d.dropped == 0 and d.kernel_drops == 0, st


@pytest.mark.parametrize("ignore_outgoing, qdisc_bypass", [(True, False), (False, True), (False, False)])
def test_each_kernel_switch_alone_keeps_own_frames_out(world, ignore_outgoing, qdisc_bypass):
    # Either switch alone is enough: PACKET_IGNORE_OUTGOING drops outgoing
    # frames at the capture; the qdisc-bypass xmit path never runs the taps.
    # With both off the captures see the bridge's own transmissions
    # (PACKET_OUTGOING), each exactly once, and the loop skips them.
    with Bridge(world.a1, world.b1, ignore_outgoing=ignore_outgoing, qdisc_bypass=qdisc_bypass) as br:
        with Running(br) as run:
            assert world.ping(count=3)
            run.stop()
        st = br.stats()
    if ignore_outgoing or qdisc_bypass:
        assert st.a_to_b.own_frames == st.b_to_a.own_frames == 0, st
    else:
        assert st.a_to_b.own_frames == st.b_to_a.forwarded > 0, st
        assert st.b_to_a.own_frames == st.a_to_b.forwarded > 0, st
    assert 4 <= st.a_to_b.received <= 20 and 4 <= st.b_to_a.received <= 20, st


def test_callback_dropping_icmp_breaks_ping(world):
    seen: list[BridgeDirection] = []

    def no_icmp(pkt: nc.Packet, d: BridgeDirection) -> Verdict:
        if is_icmp(pkt.data):
            seen.append(d)
            return Verdict.DROP
        return Verdict.FORWARD

    with Bridge(world.a1, world.b1, no_icmp) as br:
        with Running(br) as run:
            assert not world.ping(count=2, wait=0.5)
            run.stop()
        st = br.stats()
    assert st.a_to_b.dropped >= 2 and st.b_to_a.dropped == 0, st
    assert set(seen) == {BridgeDirection.A_TO_B}  # no reply ever came back
    with Bridge(world.a1, world.b1, lambda p, d: None) as br, Running(br):
        assert world.ping(count=2)  # the same world works with a forwarding callback


def test_callback_rewriting_a_byte_is_seen_on_the_other_side(world):
    def rewrite(pkt: nc.Packet, d: BridgeDirection) -> bytes | None:
        if d is BridgeDirection.A_TO_B and bytes(pkt.data[12:14]) == b"\x88\xb5":
            out = bytearray(pkt.data)
            out[30] ^= 0xFF
            return out
        return None

    sent = [seq_frame(i, 60 + 10 * i, dst=b"\x02\0\0\0\0\x99") for i in range(10)]
    want = []
    for f in sent:
        g = bytearray(f)
        g[30] ^= 0xFF
        want.append(bytes(g))
    with inside(world.B):
        rx = Receiver(world.b0)
    with rx, Bridge(world.a1, world.b1, rewrite) as br, Running(br):
        with inside(world.A):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind((world.a0, 0))
        with s:
            for f in sent:
                s.send(f)
        got = rx.wait_for(10)
        assert world.ping(count=1)  # everything else still forwarded untouched
    assert got == want


def test_stop_from_a_signal_handler_and_run_for(world):
    with Bridge(world.a1, world.b1) as br:
        old = signal.signal(signal.SIGALRM, lambda *a: br.stop())
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t0 = time.monotonic()
            br.run()  # in this (main) thread, until the handler stops it
            assert time.monotonic() - t0 < 1.3
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        t0 = time.monotonic()
        br.run_for(0.2)
        assert 0.2 <= time.monotonic() - t0 < 1.2


def test_callback_error_stops_the_bridge_and_is_reraised(world):
    def boom(pkt: nc.Packet, d: BridgeDirection) -> None:
        raise KeyError("callback failed")

    with Bridge(world.a1, world.b1, boom) as br:
        with Running(br) as run:
            world.ping(count=1, wait=0.3)
            run.t.join(3)
            assert not run.t.is_alive()
        assert isinstance(run.error, KeyError)
        assert br.stats().a_to_b.forwarded == 0


def test_bad_input(world):
    with pytest.raises(nc.ConfigError, match="twice"):
        Bridge(world.a1, world.a1)
    with pytest.raises(nc.InterfaceNotFoundError):
        Bridge(world.a1, "nosuch0")
    with pytest.raises(nc.ConfigError, match="callable"):
        Bridge(world.a1, world.b1, 42)  # type: ignore[arg-type]
    br = Bridge(world.a1, world.b1)
    br.close()
    br.close()
    with pytest.raises(nc.ClosedError):
        br.run()


def ping_args(world: World, count: int, wait: float) -> list[str]:
    return ["ip", "netns", "exec", world.A, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
            "-W", str(wait), IP_B]


def drop_icmp(pkt: nc.Packet, d: BridgeDirection) -> Verdict:
    return Verdict.DROP if is_icmp(pkt.data) else Verdict.FORWARD


def test_asyncio_run_forwards_ping_and_drops_by_callback(world):
    import asyncio

    async def main(br: Bridge) -> tuple[int, int, float]:
        task = asyncio.create_task(br.arun())
        ok = await (await asyncio.create_subprocess_exec(*ping_args(world, 3, 1.0))).wait()
        br.callback = drop_icmp
        dropped = await (await asyncio.create_subprocess_exec(*ping_args(world, 2, 0.5))).wait()
        await asyncio.sleep(0.1)
        t0 = time.monotonic()
        br.stop()
        await asyncio.wait_for(task, 2)
        return ok, dropped, time.monotonic() - t0

    with Bridge(world.a1, world.b1) as br:
        ok, dropped, took = asyncio.run(main(br))
        st = br.stats()
    assert ok == 0 and dropped != 0
    assert took < 1.0
    assert st.a_to_b.dropped >= 2 and st.a_to_b.forwarded >= 4 and st.b_to_a.forwarded >= 4, st


def test_trio_run_forwards_ping_and_drops_by_callback(world):
    import trio

    async def main(br: Bridge) -> tuple[int, int, float]:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(br.arun)
            ok = (await trio.run_process(ping_args(world, 3, 1.0), check=False)).returncode
            br.callback = drop_icmp
            dropped = (await trio.run_process(ping_args(world, 2, 0.5), check=False)).returncode
            await trio.sleep(0.1)
            t0 = time.monotonic()
            br.stop()
        return ok, dropped, time.monotonic() - t0

    with Bridge(world.a1, world.b1) as br:
        ok, dropped, took = trio.run(main, br)
        st = br.stats()
    assert ok == 0 and dropped != 0
    assert took < 1.0
    assert st.a_to_b.dropped >= 2 and st.a_to_b.forwarded >= 4 and st.b_to_a.forwarded >= 4, st


def test_close_from_the_callback_stops_and_closes(world):
    br: Bridge

    def closer(pkt: nc.Packet, d: BridgeDirection) -> None:
        br.close()

    br = Bridge(world.a1, world.b1, closer)
    with Running(br) as run:
        world.ping(count=1, wait=0.3)
        run.t.join(3)
        assert not run.t.is_alive() and run.error is None
    assert br.closed


def test_vlan_tag_survives_the_bridge_and_oversized_rewrites_are_counted(world):
    # The kernel strips an 802.1Q tag into metadata on receive; the bridge
    # must put it back. Verified with a capture in B, which reports the tag.
    seen_tci: list[int | None] = []

    def grow(pkt: nc.Packet, d: BridgeDirection) -> bytes | None:
        seen_tci.append(pkt.vlan_tci)
        if bytes(pkt.data[12:14]) == b"\x88\xb5" and pkt.data[17] == 7:  # seq 7
            return bytes(pkt.data) + bytes(2000)  # no longer fits the MTU
        return None

    plain = seq_frame(3, 100, dst=b"\x02\0\0\0\0\x99")
    tagged_body = seq_frame(5, 100, dst=b"\x02\0\0\0\0\x99")
    tagged = tagged_body[:12] + b"\x81\x00\x00\x2a" + tagged_body[12:]  # VID 42
    too_big = seq_frame(7, 100, dst=b"\x02\0\0\0\0\x99")
    with inside(world.B):
        cap = nc.Capture(world.b0, block_size=1 << 16, block_count=4, block_timeout_ms=5)
    with cap, Bridge(world.a1, world.b1, grow) as br, Running(br) as run:
        with inside(world.A):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind((world.a0, 0))
        with s:
            for f in (plain, tagged, too_big):
                s.send(f)
        got = []
        end = time.monotonic() + 3
        while len(got) < 2 and time.monotonic() < end:
            batch = cap.next_batch_blocking(0.2)
            if batch is not None:
                with batch:
                    got += [(bytes(p.data), p.vlan_tci) for p in batch if p.protocol in (0x88B5, 0x8100)]
        run.stop()
        st = br.stats()
    assert got == [(plain, None), (tagged_body, 42)]
    assert 42 in seen_tci  # the bridge got it stripped, so it had to put it back
    assert st.a_to_b.too_large == 1 and st.a_to_b.forwarded == 2, st


@pytest.mark.parametrize("attach", ["skb", "native"])
def test_ping_crosses_an_xdp_bridge(world, attach):
    """The same bridge over one XdpSocket per interface (RX through its XDP program, TX
    through its TX ring): ARP and ICMP cross both ways, and the bridge never sees its own
    frames (XDP hooks only what arrives)."""
    with Bridge(world.a1, world.b1, xdp_options={"attach": attach}) as br, Running(br) as run:
        assert world.ping(count=3)
        run.stop()
        assert run.error is None
        st = br.stats()
        for d in (st.a_to_b, st.b_to_a):
            assert d.balanced and d.received >= 3 and d.forwarded == d.received, d
            assert d.own_frames == 0 and d.kernel_drops == 0
    assert br.closed


@pytest.mark.unprivileged
@pytest.mark.parametrize("name", ["capture_options", "injector_options", "xdp_options"])
@pytest.mark.parametrize("bad", [0, "", [], [("block_count", 4)], {1: 2}])
def test_options_that_are_not_keyword_dicts_are_named(name: str, bad: object) -> None:
    # Refused before any socket opens (so no root is needed), and a falsy
    # non-dict is not silently taken for "no options".
    with pytest.raises(nc.ConfigError, match=f"{name} must be a dict of keyword arguments or None, got"):
        Bridge("nc-a0", "nc-b0", **{name: bad})  # type: ignore[arg-type]
