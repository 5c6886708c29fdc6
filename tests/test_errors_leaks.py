"""Bad input gets a clear exception; views never outlive their memory; nothing leaks."""

from __future__ import annotations

import errno
import gc
import mmap
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

import netring_chan as nc
from netring_chan._lowlevel import ffi, lib
from capture_util import collect, fd_count, hwaddr, map_count, ring_mappings, seq_of, tagged
from lab import ETH_P_LAB, Lab

PAGE = mmap.PAGESIZE
SMALL: dict[str, Any] = dict(block_size=4096, block_count=2, block_timeout_ms=2)
LAB_ONLY = f"ether proto {ETH_P_LAB:#x}"
# Well-formed tuples that the kernel's BPF checker refuses (jump past the end).
KERNEL_REJECTS = [(0x15, 5, 5, 0), (0x6, 0, 0, 0)]


def test_unknown_interface(lab: Lab) -> None:
    with pytest.raises(nc.InterfaceNotFoundError, match="nc-nosuch0") as ei:
        nc.Capture("nc-nosuch0")
    assert isinstance(ei.value, OSError) and ei.value.errno == errno.ENODEV
    for bad in ("", "x" * 16, "a/b"):
        with pytest.raises(nc.ConfigError, match="interface must be a name"):
            nc.Capture(bad)


@pytest.mark.parametrize("opts, field", [
    (dict(block_size=3 * PAGE), "block_size"),            # not a power of two
    (dict(block_size=PAGE // 2, frame_size=1024), "block_size"),  # power of two, not a page multiple
    (dict(block_size=0), "block_size"),
    (dict(block_size=-PAGE), "block_size"),
    (dict(block_size="4096"), "block_size"),
    (dict(frame_size=2040 + 1), "frame_size"),          # not TPACKET_ALIGNMENT-aligned
    (dict(frame_size=16), "frame_size"),                 # smaller than one record header
    (dict(block_size=PAGE, frame_size=2 * PAGE), "frame_size"),
    (dict(block_count=0), "block_count"),
    (dict(block_count=True), "block_count"),
    (dict(block_size=1 << 30, block_count=1 << 20), "block_count x block_size"),  # 1 PiB
    (dict(block_timeout_ms=-1), "block_timeout_ms"),
    (dict(snaplen=0), "snaplen"),
    (dict(snaplen=2**32), "snaplen"),  # the kernel's lengths are 32-bit
    (dict(busy_poll_us=-1), "busy_poll_us"),
    (dict(busy_poll_us=2**31), "busy_poll_us"),  # a C int
    (dict(protocol=0x10000), "protocol"),
    (dict(fanout=3), "fanout"),
    (dict(timestamp_source="gps"), "timestamp_source"),
    (dict(no_such_option=1), "no_such_option"),
])
def test_bad_geometry_and_options_name_the_field(lab: Lab, opts: dict[str, Any], field: str) -> None:
    before = fd_count()
    with pytest.raises(nc.ConfigError) as ei:
        nc.Capture(lab.a, **opts)
    assert field in str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert fd_count() == before


def test_config_object_and_options_are_exclusive(lab: Lab) -> None:
    cfg = nc.CaptureConfig(**SMALL)
    with nc.Capture(lab.a, config=cfg) as cap:
        assert cap.config is cfg
    with pytest.raises(nc.ConfigError, match="block_count"):
        nc.Capture(lab.a, config=cfg, block_count=4)


def test_invalid_filters(lab: Lab) -> None:
    before = fd_count()
    with pytest.raises(nc.FilterError, match="udp prot 53"):
        nc.Capture(lab.a, filter="udp prot 53", **SMALL)
    with pytest.raises(nc.FilterError):
        nc.Capture(lab.a, filter=KERNEL_REJECTS, **SMALL)
    with pytest.raises(nc.FilterError, match="bytes"):
        nc.Capture(lab.a, filter=b"\x00" * 8, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(nc.FilterError, match="out of range"):
        nc.Capture(lab.a, filter=[(0x10000, 0, 0, 0)], **SMALL)
    assert fd_count() == before


def test_use_after_close(lab: Lab) -> None:
    cap = nc.Capture(lab.a, filter=LAB_ONLY, **SMALL)
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    lab.send([tagged(dst, src, 1, 64)])
    assert len(collect(cap, 1)) == 1
    cap.close()
    assert cap.closed and "closed" in repr(cap)
    for call in (cap.next_batch, lambda: cap.next_batch_blocking(0.1), cap.fileno,
                 lambda: cap.set_filter(None), lambda: cap.set_filter(LAB_ONLY)):
        with pytest.raises(nc.ClosedError):
            call()
    # Counters are kept after close (read one last time on the way out).
    st = cap.stats()
    assert (st.packets, st.drops) == (1, 0)
    cap.close()
    assert list(cap.packets(count=1)) == []


def test_released_views_raise_and_kept_slices_pin_their_block(lab: Lab) -> None:
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    with nc.Capture(lab.a, filter=LAB_ONLY, block_size=4096, block_count=4, block_timeout_ms=2) as cap:
        first = tagged(dst, src, 0, 200)
        lab.send([first])
        batch = cap.next_batch_blocking(2.0)
        assert batch is not None and len(batch) == 1
        pkt = batch[0]
        data = pkt.data
        kept = data[14:200]  # a slice the user keeps
        assert bytes(kept) == first[14:]
        with batch:
            pass  # leaving the batch releases it
        assert batch.released
        with pytest.raises(nc.ReleasedError):
            pkt.data
        for attr in ("timestamp_ns", "wire_len", "caplen", "direction", "source_address", "status",
                     "protocol", "ifindex", "truncated", "rxhash", "vlan_tci"):
            with pytest.raises(nc.ReleasedError):
                getattr(pkt, attr)
        with pytest.raises(nc.ReleasedError):
            pkt.to_owned()
        with pytest.raises(nc.ReleasedError):
            len(batch)
        with pytest.raises(nc.ReleasedError):
            batch.to_owned()
        with pytest.raises(nc.ReleasedError):
            list(batch)
        with pytest.raises(ValueError):
            data[0]  # the memoryview handed out was released with the batch
        assert "released" in repr(pkt) and "released" in repr(batch)
        batch.release()  # idempotent

        # The slice still reads the same bytes while the ring goes round:
        # its block stays ours, so the kernel freezes on it instead of
        # writing over it.
        lab.send([tagged(dst, src, 1 + i, 1000) for i in range(60)])
        seen = []
        while (b := cap.next_batch_blocking(0.2)) is not None:
            with b:
                seen += [seq_of(bytes(p.data)) for p in b]
        assert bytes(kept) == first[14:]
        assert seen and seen == list(range(1, 1 + len(seen)))
        assert cap.next_batch() is None  # the ring waits on the pinned block
        st = cap.stats()
        assert st.drops > 0 and st.packets == 1 + len(seen) + st.drops

        # Dropping the slice hands the block back and the ring goes on.
        del kept, data
        lab.send([tagged(dst, src, 500 + i, 64) for i in range(3)])
        assert [seq_of(p.data) for p in collect(cap, 3)] == [500, 501, 502]


def test_batch_held_across_close_stays_readable(lab: Lab) -> None:
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    base = fd_count(), ring_mappings()
    cap = nc.Capture(lab.a, filter=LAB_ONLY, **SMALL)
    f = tagged(dst, src, 9, 300)
    lab.send([f])
    batch = cap.next_batch_blocking(2.0)
    assert batch is not None
    view = batch[0].data
    inode = os.fstat(cap.fileno()).st_ino
    ifx = socket.if_nametoindex(lab.a)
    assert _packet_socket(inode) == (ifx,)
    spy = socket.socket(fileno=os.dup(cap.fileno()))  # to read its counters after close
    try:
        cap.close()
        assert bytes(view) == f and bytes(batch[0].data) == f  # still mapped, still ours
        assert ring_mappings() == base[1] + 1
        # The socket lives on for the mapping, still bound to this interface
        # only, and accepts nothing more.
        assert _packet_socket(inode) == (ifx,)
        lab.send([tagged(dst, src, 10 + i, 300) for i in range(5)])
        packets, drops, _ = struct.unpack("III", spy.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12))
        assert (packets, drops) == (0, 0)
    finally:
        spy.close()
    batch.release()
    assert (fd_count(), ring_mappings()) == base
    assert _packet_socket(inode) is None


SOL_PACKET = 263
PACKET_STATISTICS = 6


def _packet_socket(inode: int) -> tuple[int] | None:
    """(ifindex,) our packet socket is bound to, from /proc/net/packet; None if gone."""
    with open("/proc/thread-self/net/packet") as f:
        for line in f.readlines()[1:]:
            sk, refcnt, typ, proto, iface, running, rmem, user, ino = line.split()
            if int(ino) == inode:
                return (int(iface),)
    return None


def test_resource_warning_when_collected_open(lab: Lab) -> None:
    base = fd_count()
    cap = nc.Capture(lab.a, **SMALL)
    with pytest.warns(ResourceWarning, match="unclosed"):
        del cap
        gc.collect()
    assert fd_count() == base


def _cycle_counts() -> tuple[int, int]:
    return fd_count(), ring_mappings()


def test_no_fd_or_mapping_leak_over_200_cycles(lab: Lab) -> None:
    """200 open/close cycles of four kinds, counted after every cycle.

    Each open and close costs the kernel ~3 RCU grace periods
    (synchronize_net in packet_set_ring and packet_release), ~40 ms here, so
    the kinds take turns rather than running 200 times each.
    """
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    # Warm up: first use loads libpcap, creates caches.
    with nc.Capture(lab.a, filter=LAB_ONLY, **SMALL):
        pass
    base, base_maps = _cycle_counts(), map_count()
    for i in range(200):
        kind = i % 4
        if kind == 0:  # plain
            c = nc.Capture(lab.a, **SMALL)
            assert c.fileno() >= 0
            c.close()
        elif kind == 1:  # context manager, with a filter, after a read
            with nc.Capture(lab.a, filter=LAB_ONLY, **SMALL) as c:
                c.next_batch()
        elif kind == 2:  # failure after the socket and the ring exist
            with pytest.raises(nc.FilterError):
                nc.Capture(lab.a, filter=KERNEL_REJECTS, **SMALL)
        else:  # a batch held across close: ring and fd live until it is released
            c = nc.Capture(lab.a, filter=LAB_ONLY, **SMALL)
            lab.send([tagged(dst, src, i, 64)])
            b = c.next_batch_blocking(2.0)
            assert b is not None
            c.close()
            assert ring_mappings() == base[1] + 1
            b.release()
        assert _cycle_counts() == base, f"leak at cycle {i} (kind {kind})"
    # Failure after bind: a fanout group the kernel refuses to let us join.
    with nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.HASH, group_id=77), **SMALL):
        inner = _cycle_counts()
        for _ in range(10):
            with pytest.raises(nc.ConfigError):
                nc.Capture(lab.a, fanout=nc.Fanout(nc.FanoutMode.LB, group_id=77), **SMALL)
        assert _cycle_counts() == inner
    assert _cycle_counts() == base
    # Leaked rings would add 200 mappings; allow the allocator a few arenas.
    assert map_count() <= base_maps + 8


def test_missing_cap_net_raw_is_a_permission_error_naming_it(lab: Lab) -> None:
    """Without privileges (uid nobody: no capabilities) opening fails with a
    CapabilityError, a PermissionError whose message names CAP_NET_RAW."""
    code = textwrap.dedent("""
        import os, sys
        import netring_chan as nc          # import while still allowed to read it
        os.setgroups([]); os.setgid(65534); os.setuid(65534)
        try:
            nc.Capture(sys.argv[1], block_size=4096, block_count=2)
        except nc.CapabilityError as e:
            print(isinstance(e, PermissionError), e.capability, e.errno, "|", e)
        else:
            print("opened without privileges")
    """)
    r = subprocess.run(["ip", "netns", "exec", lab.ns, sys.executable, "-c", code, lab.a],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    head, msg = r.stdout.strip().split(" | ", 1)
    assert head == f"True CAP_NET_RAW {errno.EPERM}"
    assert "CAP_NET_RAW" in msg and "socket" in msg


class _RingRefuser:
    """``lib`` as afpacket sees it, except that PACKET_RX_RING fails with
    ENOMEM above ``limit`` blocks (the kernel does so only when memory is
    really short, which a test cannot arrange)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.asked: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(lib, name)

    def setsockopt(self, fd: int, level: int, opt: int, val: Any, ln: int) -> int:
        if level == lib.SOL_PACKET and opt == lib.PACKET_RX_RING:
            n = int(ffi.cast("struct tpacket_req3 *", val).tp_block_nr)
            self.asked.append(n)
            if n > self.limit:
                ffi.errno = errno.ENOMEM
                return -1
        return int(lib.setsockopt(fd, level, opt, val, ln))


def test_ring_shrinks_on_enomem_and_says_so(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from netring_chan.rings.afpacket import rx as afpacket
    refuser = _RingRefuser(limit=4)
    monkeypatch.setattr(afpacket, "lib", refuser)
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    with pytest.warns(nc.RingShrunkWarning, match="could not allocate 1?[68] blocks") as rec:
        cap = nc.Capture(lab.a, block_size=4096, block_count=16, block_timeout_ms=2, filter=LAB_ONLY)
    with cap:
        assert refuser.asked == [16, 8, 4] and cap.block_count == 4
        assert [str(w.message).rsplit(" ", 1)[1] for w in rec] == ["8", "4"]  # "retrying with N"
        assert ring_mappings() >= 1
        lab.send([tagged(dst, src, 1, 64)])
        assert [seq_of(p.data) for p in collect(cap, 1)] == [1]
    # Down to one block and still refused: a RingError carrying ENOMEM, nothing leaked.
    refuser.limit = 0
    before = fd_count()
    with pytest.warns(nc.RingShrunkWarning), pytest.raises(nc.RingError) as ei:
        nc.Capture(lab.a, block_size=4096, block_count=2)
    assert ei.value.errno == errno.ENOMEM and fd_count() == before


def test_malformed_ring_block_is_reported_skipped_and_handed_back(lab: Lab) -> None:
    """A block that fails the bounds checks (here: corrupted in place after
    the kernel handed it over) raises MalformedBlockError, is given back to
    the kernel at once, and the capture goes on with the next block."""
    dst, src = hwaddr(lab.a), hwaddr(lab.b)
    with nc.Capture(lab.a, block_size=4096, block_count=4, block_timeout_ms=2, filter=LAB_ONLY) as cap:
        lab.send([tagged(dst, src, 1, 64)])
        blk = cap._mapping.addr  # block 0: the first the kernel fills
        deadline = time.monotonic() + 2
        while not lib.nc_block_status(blk) & lib.TP_STATUS_USER and time.monotonic() < deadline:
            time.sleep(0.005)
        bd = ffi.cast("struct tpacket_block_desc *", blk)
        bd.hdr.bh1.num_pkts = 10**6
        with pytest.raises(nc.MalformedBlockError, match="num_pkts") as ei:
            cap.next_batch()
        # Handed back already, although the exception (and its traceback) lives.
        assert lib.nc_block_status(blk) == lib.TP_STATUS_KERNEL
        assert cap.malformed_blocks == 1 and ei.value is not None
        lab.send([tagged(dst, src, 2, 64)])
        assert [seq_of(p.data) for p in collect(cap, 1)] == [2]
