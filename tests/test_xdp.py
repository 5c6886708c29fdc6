"""XdpSocket on a real kernel: frames in and out byte-exact, the UMEM's safety rules, modes,
statistics, errors and several queues. The veth lab's traffic never leaves its namespace; the
sender and receiver on the far end are stdlib AF_PACKET sockets, independent of the library.

The RX walk's bounds checks are also run without root, on rings faked in Python memory.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import warnings

import pytest

import netring_chan as nc
from inject_helpers import SIZES, Receiver, seq_frame
from lab import ETH_P_LAB, frame, mac, sh
from netring_chan._lowlevel import ffi, lib

N = 300


def rx_frames(n: int, start: int = 0) -> list[bytes]:
    """Frames lab.b -> lab.a, lengths 60..1514, the index inside."""
    return [frame(mac(1), mac(2), i.to_bytes(4, "big") + bytes([i % 251]) * (SIZES[i % len(SIZES)] - 18))
            for i in range(start, start + n)]


def take(sock: nc.XdpSocket, n: int, timeout: float = 5.0) -> list[nc.OwnedPacket]:
    got: list[nc.OwnedPacket] = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        b = sock.next_batch_blocking(0.2)
        if b is not None:
            with b:
                got.extend(b.to_owned())
    return got


# -- receive ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attach", ["skb", "native"])
def test_frames_from_a_stdlib_sender_arrive_byte_exact(lab, attach):
    sent = rx_frames(N)
    t0 = time.time_ns()
    with nc.XdpSocket(lab.a, mode="rx", attach=attach) as s:
        assert s.attach_mode is nc.XdpAttach(attach)
        assert s.bind_mode == "copy"
        lab.send(sent)
        got = take(s, N)
        t1 = time.time_ns()
        assert [p.data for p in got] == sent
        assert {(p.protocol, p.ifindex, p.direction, p.source_address, p.hatype) for p in got} == \
            {(ETH_P_LAB, socket.if_nametoindex(lab.a), nc.Direction.HOST, mac(2), 1)}
        assert all(t0 <= p.timestamp_ns <= t1 for p in got)
        assert all(p.wire_len == len(p.data) for p in got)
        st = s.stats()
        assert isinstance(st, nc.RxStats) and isinstance(st, nc.TxStats)
        assert (st.packets, st.drops, st.lost, st.received) == (N, 0, 0, N)
        assert not st.zerocopy
    assert s.closed and s.stats().packets == N  # the last counters stay readable


def test_views_die_with_their_batch_and_frames_go_back_to_the_fill_ring(lab):
    # 8 RX frames: 5 rounds of 6 frames need every frame back on the fill ring after release.
    with nc.XdpSocket(lab.a, mode="rx", frame_count=8, fill_size=8, rx_size=8) as s:
        kept = []
        for r in range(5):
            sent = rx_frames(6, 6 * r)
            lab.send(sent)
            got: list[bytes] = []
            deadline = time.monotonic() + 3
            while len(got) < 6 and time.monotonic() < deadline:
                b = s.next_batch_blocking(0.2)
                if b is None:
                    continue
                with b:
                    pkts = list(b)
                    got.extend(bytes(p.data) for p in pkts)
                    kept.append((pkts[0], b.to_owned()))
            assert got == sent
        pkt, owned = kept[0]
        with pytest.raises(nc.ReleasedError):
            pkt.data
        assert owned[0].data == rx_frames(1)[0]  # an owned copy outlives everything
        assert s.stats().drops == 0


def test_a_held_batch_keeps_the_umem_readable_after_close(lab):
    before = set(os.listdir("/proc/self/fd"))
    s = nc.XdpSocket(lab.a, mode="rx")
    lab.send(rx_frames(3))
    b = None
    deadline = time.monotonic() + 3
    while b is None and time.monotonic() < deadline:
        b = s.next_batch_blocking(0.2)
    assert b is not None
    view = b[0].data[:20]  # a slice the user keeps: pins the UMEM
    s.close()
    assert bytes(view) == rx_frames(1)[0][:20]
    assert "xdp" not in lab.ip("link", "show", lab.a).stdout  # receiving stopped at close
    b.release()
    assert bytes(view) == rx_frames(1)[0][:20]
    del view, b
    assert set(os.listdir("/proc/self/fd")) <= before  # the socket went with the last view


def test_close_from_another_thread_ends_a_blocking_wait_promptly(lab):
    with nc.XdpSocket(lab.a, mode="rx") as s:
        got: list[object] = []
        t = threading.Thread(target=lambda: got.append(s.next_batch_blocking(None)))
        t.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        s.close()
        t.join(2)
        assert not t.is_alive() and got == [None]
        assert time.monotonic() - t0 < 0.5


def test_a_forked_child_cannot_touch_the_parents_socket(lab):
    with nc.XdpSocket(lab.a, mode="rx") as s:
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child: every use refused, nothing released
            try:
                s.next_batch()
                os.write(w, b"used")
            except nc.ClosedError as e:
                os.write(w, b"refused" if "fork" in str(e) else b"other")
            finally:
                s.close()
                os._exit(0)
        os.close(w)
        assert os.waitpid(pid, 0)[1] == 0
        with os.fdopen(r, "rb") as f:
            assert f.read() == b"refused"
        lab.send(rx_frames(3))  # the parent's socket still works
        assert [p.data for p in take(s, 3)] == rx_frames(3)


def test_fill_ring_starvation_is_counted_as_drops(lab):
    with nc.XdpSocket(lab.a, mode="rx", frame_count=8, fill_size=8, rx_size=8) as s:
        lab.send(rx_frames(20))
        time.sleep(0.2)
        st = s.stats()
        assert st.packets == 20 and st.drops == 12 and st.received == 8, st
        assert st.rx_dropped + st.rx_ring_full == 12
        assert len(take(s, 8)) == 8


def test_a_socket_registered_in_the_callers_own_map(lab):
    # The caller's program and map (here an XdpProgram's, used only through its map fd).
    with nc.XdpProgram(lab.a, attach="skb") as prog:
        with nc.XdpSocket(lab.a, mode="rx", xsk_map_fd=prog.map_fd) as s:
            assert s.program is None and s.attach_mode is None
            lab.send(rx_frames(5))
            assert [p.data for p in take(s, 5)] == rx_frames(5)
            assert s.quiesce() >= 0  # leaves the map: the queue's frames now go to the stack
            lab.send(rx_frames(5, 5))
            time.sleep(0.1)
            assert s.next_batch() is None and s.stats().packets == 5
        assert "xdp" in lab.ip("link", "show", lab.a).stdout  # the caller's program stays


def test_its_own_program_goes_when_the_process_is_killed(lab):
    code = ("import sys, time\nimport netring_chan as nc\n"
            f"s = nc.XdpSocket({lab.a!r}, mode='rx')\n"
            "print(s.attach_mode.value, flush=True)\ntime.sleep(60)\n")
    p = subprocess.Popen(["ip", "netns", "exec", lab.ns, sys.executable, "-c", code], stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert p.stdout is not None
        assert p.stdout.readline().strip() in ("skb", "native")
        assert "xdp" in lab.ip("link", "show", lab.a).stdout
        p.kill()
        p.wait(10)
        p.stdout.close()
        deadline = time.monotonic() + 2
        while "xdp" in lab.ip("link", "show", lab.a).stdout and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "xdp" not in lab.ip("link", "show", lab.a).stdout
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# -- send -------------------------------------------------------------------------------------------


def test_frames_sent_arrive_at_a_stdlib_receiver_byte_exact(lab):
    frames = [seq_frame(i, SIZES[i % len(SIZES)]) for i in range(N)]
    with Receiver(lab.b) as rx, nc.XdpSocket(lab.a, mode="tx", frame_count=64, tx_size=64,
                                               completion_size=64) as s:
        assert s.program is None  # sending needs no XDP program
        assert s.send_many(frames) == N
        assert s.wait_drained(5.0)
        rx.wait_for(N, 5.0)
        assert rx.settle(0.1) == frames
        st = s.stats()
        assert (st.queued, st.sent, st.rejected, st.pending, st.tx_busy, st.bad_completions) == (N, N, 0, 0, 0, 0)


def test_both_directions_on_one_socket(lab):
    with Receiver(lab.b) as rx, nc.XdpSocket(lab.a) as s:
        assert s.capacity == 2048 and s.rx_frames == s.tx_frames == 2048
        out = [seq_frame(i, 60) for i in range(10)]
        s.send_many(out)
        lab.send(rx_frames(10))
        assert [p.data for p in take(s, 10)] == rx_frames(10)
        rx.wait_for(10, 5.0)
        assert rx.settle(0.1) == out


def test_frames_the_interface_cannot_carry_are_refused_before_queueing(lab):
    with nc.XdpSocket(lab.a, mode="tx") as s:
        assert s.max_frame == 1514
        with pytest.raises(ValueError, match="MTU 1500"):
            s.send(bytes(1515))
        with pytest.raises(ValueError, match="shorter than the 14-byte"):
            s.send(bytes(10))
        with pytest.raises(TypeError):
            s.send("text")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="frame 1"):
            s.check_frames([bytes(60), bytes(9000)])
        s.send(bytes(12) + b"\x81\x00" + bytes(1504))  # 802.1Q: 4 bytes more
        assert s.wait_drained(2.0)
        assert s.stats().queued == 1 and s.stats().tx_busy == 0


# -- modes and errors -------------------------------------------------------------------------------


def test_zero_copy_refused_by_veth_falls_back_to_copy_or_fails_when_insisted_on(lab):
    with nc.XdpSocket(lab.a, mode="rx", zerocopy=None) as s:
        assert s.bind_mode == "copy" and s.stats().zerocopy is False
    with pytest.raises(nc.RingError, match="zero-copy") as e:
        nc.XdpSocket(lab.a, mode="rx", zerocopy=True)
    assert e.value.errno == errno.EOPNOTSUPP
    with nc.XdpSocket(lab.a, mode="rx", zerocopy=False, need_wakeup=False) as s:
        lab.send(rx_frames(5))
        assert [p.data for p in take(s, 5)] == rx_frames(5)


def test_busy_poll_options_reach_the_socket(lab):
    with nc.XdpSocket(lab.a, mode="rx", busy_poll_us=20, prefer_busy_poll=True, busy_poll_budget=16) as s:
        def opt(name: int) -> int:
            v = ffi.new("int *")
            ln = ffi.new("socklen_t *", 4)
            assert lib.getsockopt(s.fileno(), lib.SOL_SOCKET, name, v, ln) == 0
            return int(v[0])

        assert opt(lib.SO_BUSY_POLL) == 20
        assert opt(lib.SO_PREFER_BUSY_POLL) == 1  # (SO_BUSY_POLL_BUDGET cannot be read back)


def test_bad_input_is_named(lab):
    with pytest.raises(nc.InterfaceNotFoundError):
        nc.XdpSocket("nosuch0")
    queues = nc.rings.xdp.program.rx_queue_count(lab.a)
    with pytest.raises(nc.ConfigError, match=f"queue_id {queues} is out of range.*has {queues} RX queue"):
        nc.XdpSocket(lab.a, queues)
    with pytest.raises(nc.ConfigError, match="queue_id"):
        nc.XdpSocket(lab.a, -1)
    for opts, what in [({"fill_size": 1000}, "fill_size"), ({"frame_size": 3000}, "frame_size"),
                       ({"mode": "sideways"}, "mode"), ({"attach": "hard"}, "attach"),
                       ({"headroom": 4000}, "headroom"), ({"zerocopy": 1}, "zerocopy"),
                       ({"mode": "rx", "frame_count": 4096, "fill_size": 1024}, "fill ring"),
                       ({"frame_count": 1 << 21}, "4 GiB"), ({"colour": 1}, "colour")]:
        with pytest.raises(nc.ConfigError, match=what):
            nc.XdpSocket(lab.a, **opts)
    with nc.XdpProgram(lab.b, attach="skb") as other:
        with pytest.raises(nc.ConfigError, match=f"program is attached to {lab.b!r}, not to {lab.a!r}"):
            nc.XdpSocket(lab.a, program=other)
    with pytest.raises(nc.ConfigError, match="program= or xsk_map_fd="):
        nc.XdpSocket(lab.a, program=object(), xsk_map_fd=3)  # type: ignore[arg-type]
    with nc.XdpSocket(lab.a, mode="tx") as s:
        with pytest.raises(nc.ConfigError, match="does not receive"):
            s.next_batch()
    with nc.XdpSocket(lab.a, mode="rx") as s:
        with pytest.raises(nc.ConfigError, match="does not send"):
            s.send(bytes(60))
    with pytest.raises(nc.ClosedError):
        s.next_batch()


@pytest.mark.privileged
def test_missing_privileges_name_the_capability():
    # As nobody (no capabilities at all), in this namespace: the socket is refused before
    # anything could be sent.
    code = ("import os\nimport netring_chan as nc\n"
            "os.setgroups([]); os.setresgid(65534, 65534, 65534); os.setresuid(65534, 65534, 65534)\n"
            "try:\n    nc.XdpSocket('lo', mode='tx')\n"
            "except nc.CapabilityError as e:\n    print(type(e).__name__, e.capability, e)\n")
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.startswith("CapabilityError CAP_NET_RAW"), out.stdout + out.stderr
    assert "socket(AF_XDP)" in out.stdout


def _in_lab_without(lab, caps: str, code: str, *limits: str) -> str:
    """Run ``code`` in the lab's netns with ``caps`` dropped from the bounding set; its output."""
    out = subprocess.run(["ip", "netns", "exec", lab.ns, *limits, "setpriv", f"--bounding-set={caps}",
                          sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    return out.stdout + out.stderr


_OPEN = ("import netring_chan as nc\ntry:\n    nc.XdpSocket({ifname!r}, mode={mode!r})\n"
         "except Exception as e:\n    print(type(e).__name__, getattr(e, 'capability', ''), e)\n"
         "else:\n    print('opened')\n")


def test_missing_bpf_capability_names_it(lab):
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    out = _in_lab_without(lab, "-bpf,-sys_admin", _OPEN.format(ifname=lab.a, mode="rx"))
    assert out.startswith("CapabilityError CAP_BPF,CAP_NET_ADMIN"), out
    # Sending needs no program, so no CAP_BPF.
    assert _in_lab_without(lab, "-bpf,-sys_admin", _OPEN.format(ifname=lab.a, mode="tx")).startswith("opened")


def test_a_umem_over_the_memlock_limit_says_so(lab):
    if shutil.which("setpriv") is None or shutil.which("prlimit") is None:
        pytest.skip("needs setpriv and prlimit (util-linux)")
    out = _in_lab_without(lab, "-ipc_lock", _OPEN.format(ifname=lab.a, mode="tx"), "prlimit", "--memlock=65536")
    assert out.startswith("RingError") and "RLIMIT_MEMLOCK" in out and "CAP_IPC_LOCK" in out, out


# -- several queues ---------------------------------------------------------------------------------


def _send_from_cpus(lab, frames_per_cpu: list[list[bytes]]) -> None:
    """Each list sent by a thread pinned to one CPU; XPS maps CPU q to the sender's TX queue q."""
    for q in range(len(frames_per_cpu)):
        sh("ip", "netns", "exec", lab.ns, "sh", "-c",
           f"echo {1 << q:x} > /sys/class/net/{lab.b}/queues/tx-{q}/xps_cpus")

    def send(cpu: int, frames: list[bytes]) -> None:
        os.sched_setaffinity(0, {cpu})
        lab.send(frames)  # enters the lab's netns itself

    threads = [threading.Thread(target=send, args=(c, f)) for c, f in enumerate(frames_per_cpu)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@pytest.mark.parametrize("attach", ["native", "skb"])
def test_one_socket_per_queue_through_one_program_sees_every_frame_once(lab_factory, attach):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to send on two TX queues")
    lab = lab_factory(queues=2)
    with lab.inside():
        with nc.XdpProgram(lab.a, attach=attach) as prog:
            assert prog.queues == 2
            socks = [nc.XdpSocket(lab.a, q, program=prog, mode="rx") for q in range(2)]
            try:
                sent = [rx_frames(200, 0), rx_frames(200, 1000)]
                _send_from_cpus(lab, sent)
                per_queue: list[list[bytes]] = [[], []]
                deadline = time.monotonic() + 3
                while sum(map(len, per_queue)) < 400 and time.monotonic() < deadline:
                    for q, s in enumerate(socks):
                        b = s.next_batch_blocking(0.05)
                        if b is not None:
                            with b:
                                per_queue[q].extend(bytes(p.data) for p in b)
                time.sleep(0.1)
                for q, s in enumerate(socks):
                    while (b := s.next_batch()) is not None:
                        with b:
                            per_queue[q].extend(bytes(p.data) for p in b)
                assert sorted(per_queue[0] + per_queue[1]) == sorted(sent[0] + sent[1])  # each once
                if attach == "native":
                    # veth hands a frame to the peer's RX queue of the sender's TX queue.
                    assert per_queue == sent
                else:
                    # Generic XDP on veth sees no recorded RX queue: everything is queue 0's,
                    # each sender's frames in order.
                    assert per_queue[1] == []
                    for part in sent:
                        assert [f for f in per_queue[0] if f in set(part)] == part
            finally:
                for s in socks:
                    s.close()


def test_a_capture_service_over_one_socket_per_queue(lab_factory):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs to send on two TX queues")
    lab = lab_factory(queues=2)
    with lab.inside():
        with nc.XdpProgram(lab.a, attach="native") as prog:
            socks = [nc.XdpSocket(lab.a, q, program=prog, mode="rx") for q in range(prog.queues)]
            with nc.CaptureService(socks) as svc:  # one thread per queue, one queue of packets
                sent = [rx_frames(150, 0), rx_frames(150, 1000)]
                _send_from_cpus(lab, sent)
                got: list[bytes] = []
                for p in svc.packets(timeout=1.0):
                    got.append(p.data)
                    if len(got) == 300:
                        break
            st = svc.stats()
            assert sorted(got) == sorted(sent[0] + sent[1])
            assert (st.kernel_packets, st.delivered, st.kernel_drops) == (300, 300, 0) and st.balanced
            assert all(s.closed for s in socks)  # the service closed its sources


# -- the RX walk's bounds checks, without root -------------------------------------------------------


@pytest.mark.unprivileged
def test_rx_walk_skips_descriptors_outside_the_umem_or_a_frame():
    fs, frames = 2048, 4
    umem = ffi.new("uint8_t[]", fs * frames)
    for k in range(fs * frames):
        umem[k] = k % 251
    idx = ffi.new("uint32_t[3]")
    descs = ffi.new("struct xdp_desc[8]")
    bad = [(fs + 256, 60, True), (fs * frames + 10, 60, False), (2 * fs + 2000, 100, False),
           (3 * fs + 256, 10, False), (3 * fs + 256, fs - 256, True), (2**63, 2**31, False)]
    for k, (addr, ln, _) in enumerate(bad):
        descs[k].addr = addr
        descs[k].len = ln
    ring = ffi.new("struct nc_xring *")
    ring.producer, ring.consumer, ring.flags = idx, idx + 1, idx + 2
    ring.desc = descs
    ring.size = 8
    idx[0] = len(bad)
    u = ffi.new("struct nc_umem *")
    u.base, u.size, u.frame_size = umem, fs * frames, fs
    u.tx_first = fs * frames  # an RX-only UMEM: every frame receives
    out = ffi.new("struct nc_pkt[8]")
    got_frames = ffi.new("uint64_t[8]")
    info = ffi.new("struct nc_block_info *")
    xi = ffi.new("struct nc_xsk_rx_info *")
    mac_ = ffi.new("uint8_t[8]")
    n = lib.nc_xsk_rx(ring, u, 7, mac_, 8, out, got_frames, info, xi)
    good = [b for b in bad if b[2]]
    assert n == len(good) and xi.taken == len(bad) and xi.invalid == len(bad) - len(good)
    assert idx[1] == len(bad)  # every descriptor consumed, the bad ones too
    # Frames inside the UMEM go back to the fill ring even when their descriptor was bad.
    assert list(got_frames[0:xi.nframes]) == [fs, 2 * fs, 3 * fs, 3 * fs]
    assert [(out[i].data_off, out[i].snaplen, out[i].ifindex) for i in range(n)] == \
        [(a, ln, 7) for a, ln, _ in good]
    assert info.data_end == max(a + ln for a, ln, _ in good)
    assert lib.nc_xsk_rx(ring, u, 7, mac_, 8, out, got_frames, info, xi) == 0 and xi.taken == 0
