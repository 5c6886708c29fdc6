"""The XDP redirect program (netring_chan.rings.xdp.program) on a real kernel.

What is attached is read back independently, with iproute2 (`ip -j -d link
show`: the XDP mode and the program id the kernel reports), and traffic is
checked with stdlib AF_PACKET sockets. The tests needing no root (argument
checks, the instruction encoding) are marked unprivileged.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from conftest import need_privileges
from lab import ETH_P_LAB, Lab, frame, mac
from netring_chan.errors import (
    ClosedError, ConfigError, InterfaceNotFoundError, RingError, VerifierError,
)
from netring_chan.rings.xdp import _ebpf
from netring_chan.rings.xdp.program import (
    XdpAttach, XdpProgram, _load_program, redirect_program, register_socket, rx_queue_count, unregister_socket,
)

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "error"}

# IFLA_XDP_ATTACHED values iproute2 prints as the "mode" of the "xdp" object.
XDP_ATTACHED_DRV, XDP_ATTACHED_SKB = 1, 2
ATTACHED = {XdpAttach.NATIVE: XDP_ATTACHED_DRV, XdpAttach.SKB: XDP_ATTACHED_SKB}


def xdp_state(lab: Lab, ifname: str) -> dict[str, Any] | None:
    """The "xdp" object `ip -j -d link show` prints for ``ifname`` (None: nothing attached)."""
    info = json.loads(lab.ip("-j", "-d", "link", "show", "dev", ifname).stdout)[0]
    xdp = info.get("xdp")
    return xdp if xdp and xdp.get("mode") else None


def wait_detached(lab: Lab, ifname: str, seconds: float = 3.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + seconds
    while True:
        state = xdp_state(lab, ifname)
        if state is None or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


# -- attaching ------------------------------------------------------------------

@pytest.mark.parametrize("mode", [XdpAttach.SKB, XdpAttach.NATIVE, "skb", "NATIVE"])
def test_attaches_in_the_mode_asked_and_detaches_on_close(lab: Lab, mode: XdpAttach | str) -> None:
    want = mode if isinstance(mode, XdpAttach) else XdpAttach(mode.lower())
    with XdpProgram(lab.a, attach=mode) as prog:
        assert prog.mode is want and prog.fallback_reason is None
        assert prog.interface == lab.a and prog.ifindex == socket.if_nametoindex(lab.a)
        assert min(prog.map_fd, prog.prog_fd, prog.link_fd) >= 0
        state = xdp_state(lab, lab.a)
        assert state is not None, "ip link shows no XDP program"
        assert state["mode"] == ATTACHED[want]
        assert state["prog"]["id"] == prog.prog_id
        assert state["prog"]["name"] == "nc_xsk_redirect"
        assert xdp_state(lab, lab.b) is None  # only the interface asked for
    assert prog.closed and (prog.map_fd, prog.prog_fd, prog.link_fd) == (-1, -1, -1)
    assert xdp_state(lab, lab.a) is None, "the program is still attached after close()"
    prog.close()  # idempotent


def test_interface_by_index(lab: Lab) -> None:
    index = socket.if_nametoindex(lab.b)
    with XdpProgram(index, attach="skb") as prog:
        assert prog.interface == lab.b and prog.ifindex == index
        state = xdp_state(lab, lab.b)
        assert state is not None and state["prog"]["id"] == prog.prog_id


def test_auto_prefers_native(lab: Lab) -> None:
    with XdpProgram(lab.a) as prog:
        assert prog.mode is XdpAttach.NATIVE and prog.fallback_reason is None
        state = xdp_state(lab, lab.a)
        assert state is not None and state["mode"] == XDP_ATTACHED_DRV


def test_auto_falls_back_to_skb_where_native_is_refused(lab_factory: Any) -> None:
    # veth refuses native XDP (ERANGE) when the peer's MTU does not fit a page.
    world: Lab = lab_factory(mtu=9000)
    with world.inside():
        with pytest.raises(RingError) as refused:
            XdpProgram(world.a, attach=XdpAttach.NATIVE)
        assert refused.value.errno == errno.ERANGE
        assert repr(world.a) in str(refused.value) and "MTU" in str(refused.value)
        assert xdp_state(world, world.a) is None  # nothing left behind by the failure
        with XdpProgram(world.a, attach="auto") as prog:
            assert prog.mode is XdpAttach.SKB
            assert prog.fallback_reason is not None and "MTU" in prog.fallback_reason
            state = xdp_state(world, world.a)
            assert state is not None and state["mode"] == XDP_ATTACHED_SKB
            assert state["prog"]["id"] == prog.prog_id
        assert xdp_state(world, world.a) is None


def test_second_program_on_the_interface_is_refused_clearly(lab: Lab) -> None:
    with XdpProgram(lab.a, attach="skb") as first:
        with pytest.raises(RingError) as busy:
            XdpProgram(lab.a, attach="skb")
        assert busy.value.errno == errno.EBUSY and "already has an XDP program" in str(busy.value)
        state = xdp_state(lab, lab.a)
        assert state is not None and state["prog"]["id"] == first.prog_id


def test_gone_after_the_owner_is_killed(lab: Lab) -> None:
    child = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, sys.executable, "-c",
         "import sys, time\n"
         "from netring_chan.rings.xdp.program import XdpProgram\n"
         "p = XdpProgram(sys.argv[1], attach='native')\n"
         "print(p.prog_id, flush=True)\n"
         "time.sleep(60)\n", lab.a],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), child.stderr.read() if child.stderr else line
        state = xdp_state(lab, lab.a)
        assert state is not None and state["prog"]["id"] == int(line)
        child.kill()  # SIGKILL: no close(), no atexit
        assert child.wait(10) == -9
        assert wait_detached(lab, lab.a) is None, "the program outlived its process"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for f in (child.stdout, child.stderr):
            if f is not None:
                f.close()


def test_leaked_program_warns_and_detaches(lab: Lab) -> None:
    prog = XdpProgram(lab.a, attach="skb")
    assert xdp_state(lab, lab.a) is not None
    with pytest.warns(ResourceWarning, match="unclosed <XdpProgram"):
        del prog
        gc.collect()
    assert xdp_state(lab, lab.a) is None


def test_forked_child_cannot_use_or_detach_it(lab: Lab) -> None:
    with XdpProgram(lab.a, attach="skb") as prog:
        r, w = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork() of a threaded process
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                try:
                    prog.register(0, 0)
                except ClosedError as e:
                    code = 0 if prog.closed and "fork()" in str(e) else 2
                prog.close()  # inert: must not detach the parent's program
                os.write(w, b"%d" % code)
            finally:
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            assert f.read() == b"0"
        os.waitpid(pid, 0)
        assert not prog.closed
        state = xdp_state(lab, lab.a)
        assert state is not None and state["prog"]["id"] == prog.prog_id
    assert xdp_state(lab, lab.a) is None


# -- traffic --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["skb", "native"])
def test_pass_keeps_traffic_flowing_without_a_socket(lab: Lab, mode: str) -> None:
    """No socket is registered, so every frame takes the XDP_PASS fallback and
    reaches an AF_PACKET socket on the interface unchanged."""
    frames = [frame(mac(1), mac(2), bytes([i]) * (46 + i)) for i in range(32)]
    with XdpProgram(lab.a, attach=mode) as prog:
        assert prog.mode.value == mode
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_LAB)) as rx:
            rx.bind((lab.a, 0))
            rx.settimeout(2.0)
            assert lab.send(frames) == len(frames)
            got = [rx.recv(2048) for _ in frames]
    assert got == frames


# -- the map --------------------------------------------------------------------

def test_register_checks_queue_and_socket(lab: Lab) -> None:
    with XdpProgram(lab.a, attach="skb", queues=2) as prog:
        assert prog.queues == 2
        for bad in (2, -1, True, "0", 1.0):
            with pytest.raises(ConfigError, match="queue_id") as e:
                prog.register(bad, 3)  # type: ignore[arg-type]
            assert repr(bad) in str(e.value)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            with pytest.raises(ConfigError, match=f"xsk_fd={udp.fileno()}"):
                prog.register(0, udp.fileno())
        with pytest.raises(ConfigError, match="xsk_fd"):
            prog.register(0, -5)
        with socket.socket(44, socket.SOCK_RAW) as xsk:  # AF_XDP (the kernel takes it unbound too)
            prog.register(1, xsk.fileno())
            prog.register(1, xsk.fileno())  # replacing: no error
            prog.unregister(1)
        prog.unregister(1)  # nothing there: no error
        unregister_socket(prog.map_fd, 0)
        with pytest.raises(ConfigError, match="beyond the map"):
            unregister_socket(prog.map_fd, 2)
        spare = os.dup(prog.map_fd)
        os.close(spare)
        with pytest.raises(ConfigError, match=f"map_fd={spare}"):
            unregister_socket(spare, 0)
        with pytest.raises(ConfigError, match="queue_id"):
            prog.unregister(7)
    with pytest.raises(ClosedError):
        prog.register(0, 3)


def test_default_queues_is_the_rx_queue_count(lab: Lab) -> None:
    lab.ip("link", "add", "ncq4", "numrxqueues", "4", "numtxqueues", "4", "type", "veth", "peer", "name", "ncq4p")
    assert rx_queue_count("ncq4") == 4 == rx_queue_count(socket.if_nametoindex("ncq4"))
    shown = json.loads(lab.ip("-j", "-d", "link", "show", lab.a).stdout)[0]["num_rx_queues"]
    assert rx_queue_count(lab.a) == shown
    with XdpProgram("ncq4", attach="skb") as prog:
        assert prog.queues == 4
        with pytest.raises(ConfigError, match=r"\[0, 3\]"):
            prog.register(4, 3)


# -- the verifier and privileges ---------------------------------------------------

@pytest.mark.privileged
def test_verifier_rejection_shows_the_log() -> None:
    need_privileges()
    with pytest.raises(VerifierError) as no_exit:
        _load_program([_ebpf.mov64_imm(_ebpf.R0, 2)])
    assert "last insn is not an exit" in str(no_exit.value) and no_exit.value.log in str(no_exit.value)
    assert no_exit.value.errno in (errno.EINVAL, errno.EACCES)
    with pytest.raises(VerifierError) as oob:
        _load_program([_ebpf.ldx_mem_w(_ebpf.R2, _ebpf.R1, 4096), _ebpf.mov64_imm(_ebpf.R0, 2),
                       _ebpf.exit_insn()])
    assert "invalid bpf_context access" in oob.value.log and "off=4096" in str(oob.value)
    assert isinstance(oob.value, ValueError)
    with pytest.raises(ConfigError, match="at least one instruction"):
        _load_program([])


@pytest.mark.privileged
def test_the_redirect_program_passes_the_verifier() -> None:
    """Loads as an XDP program on its own (no interface): the verifier accepts it."""
    need_privileges()
    from netring_chan.rings.xdp.program import _create_xskmap

    map_fd = _create_xskmap(1)
    try:
        prog_fd = _load_program(redirect_program(map_fd))
        os.close(prog_fd)
    finally:
        os.close(map_fd)


def test_without_capabilities_names_them(lab: Lab) -> None:
    # A real refusal by the kernel: root without CAP_BPF, CAP_NET_ADMIN and
    # CAP_SYS_ADMIN (dropped from the bounding set; uid 0 keeps the
    # interpreter under /root reachable, which uid 65534 could not).
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux)")
    drop = "-bpf,-net_admin,-sys_admin"
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns, "setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}",
         sys.executable, "-c",
         "import sys\n"
         "from netring_chan.rings.xdp.program import XdpProgram\n"
         "try:\n"
         "    XdpProgram(sys.argv[1])\n"
         "except PermissionError as e:\n"
         "    print(type(e).__name__, e)\n", lab.a],
        capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("CapabilityError"), r.stdout + r.stderr
    assert "CAP_BPF" in r.stdout and "CAP_NET_ADMIN" in r.stdout and "setcap cap_bpf,cap_net_admin+ep" in r.stdout
    assert xdp_state(lab, lab.a) is None


# -- bad input, no root needed ----------------------------------------------------------

@pytest.mark.unprivileged
@pytest.mark.parametrize("attach", ["drv", "", None, 1, XdpAttach])
def test_bad_attach_names_argument_and_value(attach: object) -> None:
    with pytest.raises(ConfigError, match="attach") as e:
        XdpProgram("lo", attach=attach)  # type: ignore[arg-type]
    assert repr(attach) in str(e.value) and "'skb'" in str(e.value)


@pytest.mark.unprivileged
@pytest.mark.parametrize("queues", [0, -1, True, 2.0, "4"])
def test_bad_queues_names_argument_and_value(queues: object) -> None:
    with pytest.raises(ConfigError, match="queues") as e:
        XdpProgram("lo", queues=queues)  # type: ignore[arg-type]
    assert repr(queues) in str(e.value)


@pytest.mark.unprivileged
def test_missing_interface() -> None:
    for call in (lambda: XdpProgram("nc-no-such0"), lambda: rx_queue_count("nc-no-such0")):
        with pytest.raises(InterfaceNotFoundError) as e:
            call()
        assert e.value.errno == errno.ENODEV and "'nc-no-such0'" in str(e.value)
    with pytest.raises(InterfaceNotFoundError, match="index 987654"):
        XdpProgram(987654)
    with pytest.raises(InterfaceNotFoundError, match="index 987654"):
        rx_queue_count(987654)
    for bad in (0, -3, True, 1.5, b"lo", None, "", "x" * 16, "a/b"):
        with pytest.raises(ConfigError) as ce:
            XdpProgram(bad)  # type: ignore[arg-type]
        assert repr(bad) in str(ce.value) and "interface" in str(ce.value)


@pytest.mark.unprivileged
def test_rx_queue_count_of_loopback() -> None:
    assert rx_queue_count("lo") == 1


@pytest.mark.unprivileged
@pytest.mark.parametrize("args, name", [((-1, 0, 5), "map_fd"), ((5, -1, 5), "queue_id"),
                                        ((5, 0, True), "xsk_fd"), ((5, 2**32, 5), "queue_id"),
                                        (("5", 0, 5), "map_fd")])
def test_register_socket_checks_arguments(args: tuple[Any, Any, Any], name: str) -> None:
    with pytest.raises(ConfigError, match=name) as e:
        register_socket(*args)
    assert repr(args[["map_fd", "queue_id", "xsk_fd"].index(name)]) in str(e.value)
    if name != "xsk_fd":
        with pytest.raises(ConfigError, match=name):
            unregister_socket(*args[:2])


@pytest.mark.unprivileged
def test_instruction_encoding() -> None:
    """Each helper gives the bytes the eBPF ISA defines (as `llvm-objdump -d`
    prints them for a clang-built XDP program), independent of the header
    names the assembler builds them from."""
    def raw(insns: list[_ebpf.Insn]) -> bytes:
        from netring_chan._lowlevel import ffi

        return bytes(ffi.buffer(_ebpf.assemble(insns)))

    assert raw([_ebpf.ldx_mem_w(_ebpf.R2, _ebpf.R1, 16)]) == bytes.fromhex("6112100000000000")
    assert raw(list(_ebpf.ld_map_fd(_ebpf.R1, 7))) == bytes.fromhex("1811000007000000" "0000000000000000")
    assert raw([_ebpf.mov64_imm(_ebpf.R3, 2)]) == bytes.fromhex("b703000002000000")
    assert raw([_ebpf.mov64_imm(_ebpf.R0, 0xFFFFFFFF)]) == bytes.fromhex("b7000000ffffffff")
    assert raw([_ebpf.call(51)]) == bytes.fromhex("8500000033000000")
    assert raw([_ebpf.exit_insn()]) == bytes.fromhex("9500000000000000")
    with pytest.raises(ValueError, match="32 bits"):
        _ebpf.mov64_imm(_ebpf.R0, 1 << 32)
    prog = redirect_program(9)
    assert [i.code for i in prog] == [0x61, 0x18, 0x00, 0xB7, 0x85, 0x95]
    assert prog[0].off == 16  # offsetof(struct xdp_md, rx_queue_index) in today's ABI
