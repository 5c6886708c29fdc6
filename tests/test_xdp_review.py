"""Hostile-review regressions for XdpSocket: each test failed before the fix it names."""

from __future__ import annotations

import os
import time

import pytest

import netring_chan as nc
from lab import sh
from netring_chan.rings.xdp import program as xdp_program


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_own_program_is_detached_when_registering_the_socket_fails(lab, monkeypatch):
    # XdpSocket made its own XdpProgram, then registering in its XSKMAP failed: the constructor
    # must close that program (detach it) before raising, not leave it attached until GC.
    def refuse(self, queue_id, xsk_fd):
        raise OSError(5, "forced register failure")

    monkeypatch.setattr(xdp_program.XdpProgram, "register", refuse)
    before = _fds()
    with pytest.raises(OSError, match="forced register failure"):
        nc.XdpSocket(lab.a, mode="rx")
    assert "xdp" not in lab.ip("link", "show", lab.a).stdout
    assert _fds() == before


def test_a_queue_allocated_but_not_in_use_is_named_as_out_of_range(lab):
    # A default veth allocates one RX queue per CPU (IFLA_NUM_RX_QUEUES) but uses one; binding to a
    # queue past those in use is EINVAL from bind: the error must name queue_id as out of range.
    active = int(sh("ip", "netns", "exec", lab.ns, "sh", "-c",
                    f"ls /sys/class/net/{lab.a}/queues | grep -c rx-").stdout)
    with pytest.raises(nc.ConfigError, match=rf"queue_id {active} is out of range"):
        nc.XdpSocket(lab.a, queue_id=active, mode="rx")
    assert "xdp" not in lab.ip("link", "show", lab.a).stdout


def test_a_lowered_mtu_is_learnt_from_the_first_frame_the_device_drops(lab):
    # The MTU is read at open. Lowered afterwards, the device drops every longer frame (sendto says
    # EBUSY, the descriptor completes): after the first such drop, longer frames must be refused
    # before queueing again, as the AF_PACKET Injector does, not dropped one by one forever.
    big = b"\xff" * 12 + b"\x88\xb5" + bytes(1186)  # 1200 bytes
    with nc.XdpSocket(lab.a, mode="tx") as s:
        for end in (lab.a, lab.b):  # veth drops what the peer's MTU cannot take
            lab.ip("link", "set", end, "mtu", "1000")
        s.send(big, flush=True)  # still passes the check made with MTU 1500
        assert s.wait_drained(2)
        assert s.stats().tx_busy == 1
        with pytest.raises(ValueError, match="MTU 1000"):
            s.send(big)
        s.send(big[:1014], flush=True)
        assert s.wait_drained(2)


@pytest.mark.parametrize("face", ["run", "arun"])
def test_an_xdp_bridge_whose_interface_is_deleted_raises_instead_of_hanging(lab_factory, face):
    # An AF_XDP socket shows no poll event when its interface goes: the bridge must look at the
    # pending error on a timer (the sources' error_poll_interval), in run() and in arun().
    import asyncio
    import errno
    import threading

    lab = lab_factory(pairs=2)
    with lab.inside():
        br = nc.Bridge(lab.ifaces[0][0], lab.ifaces[1][0], xdp_options={"attach": "skb"})
        errors: list[BaseException] = []

        def go() -> None:
            try:
                br.run() if face == "run" else asyncio.run(br.arun())
            except BaseException as e:  # noqa: BLE001 - handed to the test
                errors.append(e)

        t = threading.Thread(target=go)
        t.start()
        try:
            time.sleep(0.2)
            lab.ip("link", "del", lab.ifaces[0][0])
            t.join(3)
            assert not t.is_alive(), "the bridge kept waiting on a deleted interface"
            assert len(errors) == 1 and isinstance(errors[0], OSError) and errors[0].errno == errno.ENETDOWN
        finally:
            br.stop()
            t.join(5)
            br.close()


def test_a_batch_kept_after_close_does_not_keep_the_queue_bound(lab):
    # The batch reads only the UMEM (the process's own memory): close() must release the socket
    # (rings, fd, queue) at once, so a new socket can bind the queue while the old batch is held.
    f = b"\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02\x88\xb5" + bytes(46)
    s = nc.XdpSocket(lab.a, mode="rx")
    lab.send([f])
    kept = s.next_batch_blocking(2.0)
    assert kept is not None
    s.close()
    t0 = time.monotonic()
    with nc.XdpSocket(lab.a, mode="rx") as again:
        assert time.monotonic() - t0 < 0.5  # not the bind's EBUSY retries
        assert bytes(kept[0].data) == f  # the held batch still reads its frame
        lab.send([f])
        b = again.next_batch_blocking(2.0)
        assert b is not None and bytes(b[0].data) == f
        b.release()
    kept.release()


@pytest.mark.unprivileged
def test_ring_indexes_wrap_around_2_to_the_32():
    # Producer and consumer are free-running u32s: every count is a wrapping difference and every
    # slot the index masked by size - 1, across the 2**32 boundary too.
    from netring_chan._lowlevel import ffi, lib

    idx = ffi.new("uint32_t[3]")
    addrs = ffi.new("uint64_t[4]")
    fq = ffi.new("struct nc_xring *")
    fq.producer, fq.consumer, fq.flags, fq.desc, fq.size = idx, idx + 1, idx + 2, addrs, 4
    fq.cached = idx[0] = idx[1] = 0xFFFFFFFE
    assert lib.nc_xring_free(fq) == 4
    assert lib.nc_xsk_fill(fq, ffi.new("uint64_t[]", [10, 11, 12, 13, 14]), 5) == 4  # 4 fit
    assert idx[0] == 2 and list(addrs) == [12, 13, 10, 11]
    assert lib.nc_xring_free(fq) == 0 and lib.nc_xring_outstanding(fq) == 4
    idx[1] = 1  # the kernel took three, across the wrap
    assert lib.nc_xring_free(fq) == 3 and lib.nc_xring_outstanding(fq) == 1

    fs = 2048
    umem = ffi.new("uint8_t[]", fs * 4)
    u = ffi.new("struct nc_umem *")
    u.base, u.size, u.frame_size = umem, fs * 4, fs
    u.tx_first = fs * 4  # an RX-only UMEM: every frame receives
    ridx = ffi.new("uint32_t[3]")
    descs = ffi.new("struct xdp_desc[4]")
    for k in range(4):
        descs[k].addr, descs[k].len = k * fs + 256, 60
    rx = ffi.new("struct nc_xring *")
    rx.producer, rx.consumer, rx.flags, rx.desc, rx.size = ridx, ridx + 1, ridx + 2, descs, 4
    rx.cached = ridx[1] = 0xFFFFFFFF
    ridx[0] = 1  # two descriptors ready: slots 3 and 0
    assert lib.nc_xring_ready(rx) == 2
    out = ffi.new("struct nc_pkt[4]")
    frames = ffi.new("uint64_t[4]")
    info = ffi.new("struct nc_block_info *")
    xi = ffi.new("struct nc_xsk_rx_info *")
    assert lib.nc_xsk_rx(rx, u, 1, ffi.new("uint8_t[8]"), 4, out, frames, info, xi) == 2
    assert [out[0].data_off, out[1].data_off] == [3 * fs + 256, 256]
    assert list(frames[0:xi.nframes]) == [3 * fs, 0] and ridx[1] == 1 and lib.nc_xring_ready(rx) == 0


def test_the_mtu_is_never_learnt_from_another_namespaces_interface_of_that_name(lab_factory):
    # A flush from a thread in another network namespace must not take the MTU of a different
    # interface that happens to have the same name there (the ioctl goes by name).
    import threading

    from lab import inside

    lab, other = lab_factory(), lab_factory()
    other.ip("link", "set", other.a, "down")
    other.ip("link", "set", other.a, "name", lab.a, "mtu", "600")
    lab.ip("link", "set", lab.b, "mtu", "1000")  # the peer drops a 1200-byte frame: EBUSY
    big = b"\xff" * 12 + b"\x88\xb5" + bytes(1186)
    with lab.inside():
        s = nc.XdpSocket(lab.a, mode="tx")
    try:
        def flush_from_other() -> None:
            with inside(other.ns):
                s.send(big, flush=True)
                s.wait_drained(2)

        t = threading.Thread(target=flush_from_other)
        t.start()
        t.join(5)
        assert s.stats().tx_busy == 1
        assert s.max_frame == 1514  # lab.a's MTU is still 1500
        s.send(big[:1000], flush=True)
    finally:
        s.close()


@pytest.mark.parametrize("mode", ["rx", "tx"])
def test_an_xdp_bridge_refuses_a_one_way_socket_when_made(lab_factory, mode):
    # Each XdpSocket of a bridge receives and sends: a one-way mode in xdp_options must be a
    # ConfigError naming it when the bridge is made, not a failure of the first forward.
    lab = lab_factory(pairs=2)
    with lab.inside():
        before = _fds()
        with pytest.raises(nc.ConfigError, match=rf"xdp_options.*mode.*{mode}"):
            nc.Bridge(lab.ifaces[0][0], lab.ifaces[1][0], xdp_options={"mode": mode, "attach": "skb"})
        assert _fds() == before
        assert "xdp" not in lab.ip("link", "show", lab.ifaces[0][0]).stdout


def test_every_wait_after_the_interface_is_deleted_raises(lab):
    # The pending error (ENETDOWN) is read and cleared by the first wait; the socket is unbound
    # for good, so a later wait must raise too, not wait out its timeout (forever for None).
    import errno

    with nc.XdpSocket(lab.a, mode="rx") as s:
        lab.ip("link", "del", lab.a)
        for _ in range(2):
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                s.next_batch_blocking(2.0)
            assert e.value.errno == errno.ENETDOWN and time.monotonic() - t0 < 1.0
