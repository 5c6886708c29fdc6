"""Review fixes to the AF_XDP backend: checks that belong in one place."""

from __future__ import annotations

import pytest

import netring_chan as nc


@pytest.mark.unprivileged
def test_config_checks_attach_like_the_program_does():
    # The config is where every option is checked (no interface needed), with the same rule as
    # XdpProgram(attach=): an XdpAttach or its value, in any case.
    with pytest.raises(nc.ConfigError, match="attach must be an XdpAttach.*got 'hard'"):
        nc.XdpConfig(attach="hard")
    with pytest.raises(nc.ConfigError, match="attach"):
        nc.XdpConfig(attach=3)
    assert nc.XdpConfig(attach="SKB").attach is nc.XdpAttach.SKB
    assert nc.XdpConfig(attach=nc.XdpAttach.NATIVE).attach is nc.XdpAttach.NATIVE
    assert nc.XdpConfig().attach is nc.XdpAttach.AUTO


@pytest.mark.unprivileged
def test_rx_walk_never_takes_or_gives_back_a_tx_frame():
    # With mode BOTH the UMEM's first half receives and the rest sends: an RX descriptor pointing
    # into a TX frame is not one of the fill ring's frames. Taken as valid, it would go back to the
    # fill ring, and the kernel would write a received frame into a frame being sent.
    from netring_chan._lowlevel import ffi, lib

    fs, frames = 2048, 4
    umem = ffi.new("uint8_t[]", fs * frames)
    idx = ffi.new("uint32_t[3]")
    descs = ffi.new("struct xdp_desc[4]")
    for k, addr in enumerate([fs + 256, 2 * fs + 256, 3 * fs]):  # one RX frame, then two TX frames
        descs[k].addr = addr
        descs[k].len = 60
    ring = ffi.new("struct nc_xring *")
    ring.producer, ring.consumer, ring.flags, ring.desc, ring.size = idx, idx + 1, idx + 2, descs, 4
    idx[0] = 3
    u = ffi.new("struct nc_umem *")
    u.base, u.size, u.frame_size, u.tx_first, u.tx_count = umem, fs * frames, fs, 2 * fs, 2
    out = ffi.new("struct nc_pkt[4]")
    got = ffi.new("uint64_t[4]")
    info = ffi.new("struct nc_block_info *")
    xi = ffi.new("struct nc_xsk_rx_info *")
    n = lib.nc_xsk_rx(ring, u, 7, ffi.new("uint8_t[8]"), 4, out, got, info, xi)
    assert (n, xi.taken, xi.invalid) == (1, 3, 2)
    assert out[0].data_off == fs + 256
    assert list(got[0:xi.nframes]) == [fs]  # only the RX frame goes back to the fill ring


def test_frames_the_device_drops_cost_one_mtu_lookup_per_flush_not_one_per_frame(lab, monkeypatch):
    # Each kick that meets a dropped frame ends with EBUSY after it; the MTU is looked up again then
    # (a lowered MTU is the usual cause) with a socket and two ioctls. With the peer down every frame
    # is dropped: one lookup per flush is enough, not one per dropped frame.
    f = b"\xff" * 12 + b"\x88\xb5" + bytes(46)
    with nc.XdpSocket(lab.a, mode="tx") as s:
        lookups = []
        real = s._refresh_mtu

        def counted(relearn: bool = False) -> None:
            lookups.append(relearn)
            real(relearn)

        monkeypatch.setattr(s, "_refresh_mtu", counted)
        lab.ip("link", "set", lab.b, "down")
        for _ in range(40):
            s.send(f)
        s.flush()
        assert s.wait_drained(2)
        assert s.stats().tx_busy >= 2  # the drops were seen, one kick each
        assert 1 <= len(lookups) <= 2  # the flush, and at most the drain's own
