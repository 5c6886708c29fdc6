"""Classic BPF filters on a live capture: expressions, raw programs, swaps."""

from __future__ import annotations

import threading

import pytest

import netring_chan as nc
from capture_util import collect, hwaddr, ipv4_frame, IPPROTO_TCP, quiet, send_in_order, tagged
from lab import ETH_P_LAB, Lab

# ``tcpdump -dd 'ether proto 0x88b5'``, written out by hand so that this test
# does not depend on libpcap: ldh [12]; jeq #0x88b5; ret #262144; ret #0.
RAW_LAB_ONLY = [(0x28, 0, 0, 12), (0x15, 0, 1, ETH_P_LAB), (0x6, 0, 0, 262144), (0x6, 0, 0, 0)]
OTHER_TYPE = 0x88B6
LAB_ONLY_EXPR = f"ether proto {ETH_P_LAB:#x}"


def _lab_frames(lab: Lab) -> tuple[bytes, bytes]:
    return hwaddr(lab.a), hwaddr(lab.b)


def test_expression_passes_matching_frames_only(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    frames = []
    for i in range(30):
        f = bytearray(tagged(dst, src, i, 64, ETH_P_LAB if i % 3 else OTHER_TYPE))
        f[14] = i % 2  # ether[14] is the first payload byte
        frames.append(bytes(f))
    want = [f for f in frames if f[12:14] == ETH_P_LAB.to_bytes(2, "big") and f[14] == 1]
    with nc.Capture(lab.a, filter=f"ether proto {ETH_P_LAB:#x} and ether[14] == 1",
                    block_size=1 << 16, block_count=4, block_timeout_ms=5) as cap:
        assert cap.filter is not None and cap.filter.expression is not None
        send_in_order(lab, frames)
        got = collect(cap, len(want), keep=lambda p: True)
        got += quiet(cap, 0.1)
    assert 0 < len(want) < len(frames)
    assert [p.data for p in got] == want


def test_udp_port_filter_on_hand_built_ipv4(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    frames = [
        ipv4_frame(dst, src, "10.0.0.1", "10.0.0.2", 40000, 53, b"query"),   # dst port 53
        ipv4_frame(dst, src, "10.0.0.1", "10.0.0.2", 53, 40000, b"answer"),  # src port 53
        ipv4_frame(dst, src, "10.0.0.1", "10.0.0.2", 40000, 54, b"no"),
        ipv4_frame(dst, src, "10.0.0.1", "10.0.0.2", 40000, 53, b"tcp", proto=IPPROTO_TCP),
        tagged(dst, src, 1, 80),
    ]
    with nc.Capture(lab.a, filter="udp port 53", block_size=1 << 16, block_count=4,
                    block_timeout_ms=5) as cap:
        send_in_order(lab, frames)
        got = collect(cap, 2, keep=lambda p: True) + quiet(cap, 0.1)
    assert [p.data for p in got] == frames[:2]


def test_raw_instructions_and_bpf_program(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    frames = [tagged(dst, src, i, 70, ETH_P_LAB if i % 2 else OTHER_TYPE) for i in range(10)]
    for spec in (RAW_LAB_ONLY, nc.BpfProgram(RAW_LAB_ONLY)):
        with nc.Capture(lab.a, filter=spec, block_size=1 << 16, block_count=4, block_timeout_ms=5) as cap:
            send_in_order(lab, frames)
            got = collect(cap, 5, keep=lambda p: True) + quiet(cap, 0.1)
        assert [p.data for p in got] == frames[1::2]
    # libpcap compiles the expression to the same program tcpdump -dd prints.
    assert nc.compile_filter(f"ether proto {ETH_P_LAB:#x}").instructions == tuple(RAW_LAB_ONLY)


def test_swap_filter_on_live_capture_and_remove(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    lab_f = [tagged(dst, src, i, 64, ETH_P_LAB) for i in range(5)]
    other_f = [tagged(dst, src, 100 + i, 64, OTHER_TYPE) for i in range(5)]
    mixed = [f for pair in zip(lab_f, other_f) for f in pair]
    with nc.Capture(lab.a, filter=f"ether proto {ETH_P_LAB:#x}", block_size=1 << 16,
                    block_count=4, block_timeout_ms=5) as cap:
        send_in_order(lab, mixed)
        first = collect(cap, 5, keep=lambda p: True) + quiet(cap, 0.1)
        cap.set_filter(f"ether proto {OTHER_TYPE:#x}")
        send_in_order(lab, mixed)
        second = collect(cap, 5, keep=lambda p: True) + quiet(cap, 0.1)
        cap.set_filter(RAW_LAB_ONLY)  # raw instructions on a live capture
        send_in_order(lab, mixed)
        third = collect(cap, 5, keep=lambda p: True) + quiet(cap, 0.1)
        cap.set_filter(None)
        assert cap.filter is None
        send_in_order(lab, mixed)
        fourth = collect(cap, 10, keep=lambda p: p.protocol in (ETH_P_LAB, OTHER_TYPE))
        cap.set_filter(None)  # removing twice is fine
    assert [p.data for p in first] == lab_f
    assert [p.data for p in second] == other_f
    assert [p.data for p in third] == lab_f
    assert [p.data for p in fourth] == mixed


def test_rejected_filters_keep_the_old_one(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    with nc.Capture(lab.a, filter=f"ether proto {ETH_P_LAB:#x}", block_size=1 << 16,
                    block_count=4, block_timeout_ms=5) as cap:
        with pytest.raises(nc.FilterError, match="no such thing"):
            cap.set_filter("no such thing")
        # Well-formed tuples the kernel's verifier refuses: a jump past the end.
        with pytest.raises(nc.FilterError):
            cap.set_filter([(0x15, 5, 5, 0), (0x6, 0, 0, 0)])
        # A program that does not end in a return.
        with pytest.raises(nc.FilterError):
            cap.set_filter([(0x28, 0, 0, 12)])
        with pytest.raises(nc.FilterError, match="instruction 0"):
            cap.set_filter([(1, 2, 3)])  # type: ignore[list-item]
        with pytest.raises(nc.FilterError):
            cap.set_filter([])
        assert cap.filter is not None and cap.filter.expression == f"ether proto {ETH_P_LAB:#x}"
        frames = [tagged(dst, src, 1, 64, OTHER_TYPE), tagged(dst, src, 2, 64, ETH_P_LAB)]
        send_in_order(lab, frames)
        got = collect(cap, 1, keep=lambda p: True) + quiet(cap, 0.1)
    assert [p.data for p in got] == frames[1:]


def test_setup_order_lets_nothing_unwanted_in(lab_factory: type[Lab]) -> None:
    """Socket with protocol 0, filter attached, then bind: while other frames
    flood this interface and another one, a fresh capture never holds a frame
    its filter rejects or one from the other interface."""
    world = lab_factory(pairs=2)
    (a1, b1), (a2, b2) = world.ifaces
    with world.inside():
        dst1, src1, dst2, src2 = hwaddr(a1), hwaddr(b1), hwaddr(a2), hwaddr(b2)
        stop = threading.Event()

        def flood() -> None:
            with world.sender(b1) as s1, world.sender(b2) as s2:
                other = tagged(dst1, src1, 0, 60, OTHER_TYPE)
                elsewhere = tagged(dst2, src2, 0, 60, ETH_P_LAB)
                while not stop.is_set():
                    for _ in range(50):
                        s1.send(other)
                        s2.send(elsewhere)

        t = threading.Thread(target=flood, name="flood")
        t.start()
        try:
            unwanted = 0
            for _ in range(15):
                with nc.Capture(a1, filter=LAB_ONLY_EXPR, block_size=4096, block_count=2,
                                block_timeout_ms=1) as cap:
                    unwanted += len(quiet(cap, 0.02))
                    unwanted += cap.stats().packets
            # The flood reached the other interface meanwhile (the test is not vacuous).
            with nc.Capture(a2, block_size=1 << 16, block_count=4, block_timeout_ms=1) as seen:
                assert len(quiet(seen, 0.05)) > 0
        finally:
            stop.set()
            t.join()
        assert unwanted == 0
        with nc.Capture(a1, filter=LAB_ONLY_EXPR, block_size=4096, block_count=2, block_timeout_ms=1) as cap:
            want = tagged(dst1, src1, 1, 64)
            world.send([want], b1)
            assert [p.data for p in collect(cap, 1)] == [want]


def test_protocol_option_binds_to_one_ethertype(lab: Lab) -> None:
    dst, src = _lab_frames(lab)
    frames = [tagged(dst, src, i, 64, ETH_P_LAB if i % 2 else OTHER_TYPE) for i in range(6)]
    with nc.Capture(lab.a, protocol=OTHER_TYPE, block_size=1 << 16, block_count=4, block_timeout_ms=5) as cap:
        send_in_order(lab, frames)
        got = collect(cap, 3, keep=lambda p: True) + quiet(cap, 0.1)
    assert [p.data for p in got] == frames[0::2]


def test_missing_libpcap_names_the_package_and_raw_programs_still_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from netring_chan.rings.afpacket import bpf
    monkeypatch.setattr(bpf, "_pcap", None)
    monkeypatch.setattr(bpf, "_PCAP_NAMES", ("libnetring-no-such-pcap.so.0",))
    monkeypatch.setattr(bpf.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(nc.LibpcapMissingError, match="libpcap0.8") as ei:
        nc.compile_filter("udp")
    assert isinstance(ei.value, ImportError) and isinstance(ei.value, nc.FilterError)
    with pytest.raises(nc.LibpcapMissingError):
        nc.CaptureConfig(filter="udp")
    assert nc.CaptureConfig(filter=RAW_LAB_ONLY).filter == nc.BpfProgram(RAW_LAB_ONLY)
    with pytest.raises(nc.FilterError, match="str"):
        nc.compile_filter(42)  # type: ignore[arg-type]
