"""netring_chan's own XDP program: redirect each frame to the AF_XDP socket
registered for its RX queue, pass it to the stack when there is none.

What the kernel does, and why the code below is shaped so
---------------------------------------------------------
* An AF_XDP socket receives only what an XDP program on its interface
  redirects into an ``XSKMAP`` (``bpf_redirect_map``) at the socket's queue
  index. The program here is five instructions (see :func:`redirect_program`)::

      r2 = *(u32 *)(r1 + offsetof(struct xdp_md, rx_queue_index))
      r1 = map                       ; BPF_LD_IMM64, src = BPF_PSEUDO_MAP_FD
      r3 = XDP_PASS
      call bpf_redirect_map          ; r0 = XDP_REDIRECT, or r3's XDP_PASS
      exit                           ; when no socket sits at that key

  Since Linux 5.3 the low bits of ``bpf_redirect_map``'s flags are the
  action returned when the key is empty, so no lookup is needed first.
  The helper is not GPL-only; the license string is still a GPL-compatible
  one ("Dual MIT/GPL"), which costs nothing.
* The program is loaded once with no log: a log buffer slows the verifier
  down and ``log_level=0`` with a buffer is EINVAL. Only when the load fails
  with EACCES or EINVAL (a rejection; the reason is *only* in the log) is it
  loaded again with ``log_level=1`` and a buffer, so :class:`VerifierError`
  can show the log.
* It is attached with a BPF link (``BPF_LINK_CREATE``, attach type
  ``BPF_XDP``, Linux 5.9), not netlink: a link detaches when its last fd
  is closed, which includes the owning process dying (SIGKILL too), while a
  netlink-attached program stays on the interface until someone removes it.
  While a link holds the interface, any other attach (link or netlink)
  gets EBUSY.
* Native (driver) mode may be refused where generic (SKB) mode works: a
  driver without ``ndo_bpf`` says EOPNOTSUPP; veth says ERANGE when the
  peer's MTU is too large for a page-sized XDP frame (e.g. 9000) and ENOSPC
  when it has fewer RX queues than the peer has TX queues. ``AUTO`` then
  falls back to SKB mode and says why in ``fallback_reason``.
* bpf(2) fds are close-on-exec. A child made by ``fork()`` shares the link
  (and so keeps the program attached until it exits too); it cannot use or
  close the parent's object (``_fork``).
"""

from __future__ import annotations

import enum
import errno
import os
import socket
from typing import Sequence

from ..._lowlevel import ffi, lib
from ..._resource import Resource
from ..._sys import close_fd, ifindex as _ifindex, raise_errno
from ...errors import ConfigError, InterfaceNotFoundError, RingError, VerifierError
from ._ebpf import R1, R2, R3, Insn, assemble, call, exit_insn, ld_map_fd, ldx_mem_w, mov64_imm

__all__ = ["XdpAttach", "XdpProgram", "register_socket", "unregister_socket", "rx_queue_count",
           "redirect_program"]

_LICENSE = b"Dual MIT/GPL"
_PROG_NAME = b"nc_xsk_redirect"
_LOG_SIZE = 1 << 16  # plenty for a few instructions; a longer log is cut, never an error
_WHAT_LOAD = "bpf(BPF_PROG_LOAD, XDP program)"

# Native attach refusals after which AUTO tries SKB mode (see the module docstring).
_NATIVE_REFUSALS = (errno.EOPNOTSUPP, errno.ERANGE, errno.ENOSPC, errno.EINVAL)


class XdpAttach(enum.Enum):
    """How an XDP program is attached to its interface.

    ``SKB``: generic mode (``XDP_FLAGS_SKB_MODE``), works on every interface,
    after the kernel has built the socket buffer. ``NATIVE``: driver mode
    (``XDP_FLAGS_DRV_MODE``), in the driver before any allocation; not every
    driver has it. ``AUTO``: native, falling back to SKB when the driver
    refuses (EOPNOTSUPP; on veth ERANGE for a large peer MTU, ENOSPC for
    too few RX queues; EINVAL).
    """

    SKB = "skb"
    NATIVE = "native"
    AUTO = "auto"


def _attach_mode(attach: object) -> XdpAttach:
    if isinstance(attach, XdpAttach):
        return attach
    if isinstance(attach, str):
        try:
            return XdpAttach(attach.lower())
        except ValueError:
            pass
    choices = ", ".join(repr(m.value) for m in XdpAttach)
    raise ConfigError(f"attach must be an XdpAttach or one of {choices}, got {attach!r}")


def _interface(interface: object) -> tuple[str, int]:
    """(name, ifindex) of ``interface``, a name or an index, in the calling
    thread's network namespace."""
    if isinstance(interface, bool) or not isinstance(interface, (str, int)):
        raise ConfigError(f"interface must be a name (str) or an index (int), got {interface!r}")
    if isinstance(interface, str):
        return interface, _ifindex(interface)
    if interface <= 0:
        raise ConfigError(f"interface index must be > 0, got {interface!r}")
    try:
        return socket.if_indextoname(interface), interface
    except (OSError, OverflowError):
        raise InterfaceNotFoundError(f"index {interface}") from None


def _check_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an int in [{low}, {high}], got {value!r}")
    return value


def _bpf(cmd: int, attr: object) -> int:
    """bpf(2): the new fd (or 0), or -errno."""
    return int(lib.nc_bpf(cmd, attr, ffi.sizeof("union bpf_attr")))


def _no_bpf() -> RingError:
    return RingError(errno.ENOSYS, "the kernel lacks the bpf(2) system call (CONFIG_BPF_SYSCALL), "
                                   "which the AF_XDP backend needs")


# -- queues ----------------------------------------------------------------

def rx_queue_count(interface: str | int) -> int:
    """How many RX queues ``interface`` (a name or an index) has, as the
    kernel reports it over rtnetlink (``IFLA_NUM_RX_QUEUES``), in the calling
    thread's network namespace. An AF_XDP socket binds to one of them; the
    XSKMAP of :class:`XdpProgram` has one slot per queue. This is the count
    allocated: fewer may be in use (a veth made without ``numrxqueues``
    allocates one per CPU and uses one; ``ethtool -l`` shows those in use),
    and binding past them is refused."""
    name, index = _interface(interface)
    hdr = ffi.sizeof("struct nlmsghdr")
    req = ffi.new("char[]", hdr + ffi.sizeof("struct ifinfomsg"))
    nlh = ffi.cast("struct nlmsghdr *", req)
    nlh.nlmsg_len = len(req)
    nlh.nlmsg_type = lib.RTM_GETLINK
    nlh.nlmsg_flags = lib.NLM_F_REQUEST
    nlh.nlmsg_seq = 1
    ifi = ffi.cast("struct ifinfomsg *", req + hdr)
    ifi.ifi_family = socket.AF_UNSPEC
    ifi.ifi_index = index
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, lib.NETLINK_ROUTE) as s:
        s.settimeout(5.0)
        s.send(ffi.buffer(req)[:])
        reply = s.recv(1 << 16)
    count = _parse_rx_queues(reply, hdr)
    if count is None:
        raise InterfaceNotFoundError(name)
    return count


def _align(n: int, to: int) -> int:
    return (n + to - 1) & ~(to - 1)


def _parse_rx_queues(reply: bytes, hdr: int) -> int | None:
    """IFLA_NUM_RX_QUEUES from one RTM_NEWLINK reply; None if the kernel
    answered with an error (no such interface)."""
    buf = ffi.from_buffer(reply)
    if len(reply) < hdr:
        raise RingError(errno.EPROTO, "rtnetlink: short reply to RTM_GETLINK")
    nlh = ffi.cast("struct nlmsghdr *", buf)
    length = min(int(nlh.nlmsg_len), len(reply))
    if nlh.nlmsg_type == lib.NLMSG_ERROR:
        err = -int(ffi.cast("struct nlmsgerr *", buf + hdr).error)
        if err == errno.ENODEV:
            return None
        raise RingError(err, f"rtnetlink RTM_GETLINK: {os.strerror(err)}")
    if nlh.nlmsg_type != lib.RTM_NEWLINK:
        raise RingError(errno.EPROTO, f"rtnetlink: unexpected reply type {int(nlh.nlmsg_type)}")
    pos = hdr + _align(ffi.sizeof("struct ifinfomsg"), lib.NLMSG_ALIGNTO)
    rta_hdr = ffi.sizeof("struct rtattr")
    while pos + rta_hdr <= length:
        rta = ffi.cast("struct rtattr *", buf + pos)
        rta_len = int(rta.rta_len)
        if rta_len < rta_hdr or pos + rta_len > length:
            break
        if rta.rta_type == lib.IFLA_NUM_RX_QUEUES and rta_len >= rta_hdr + 4:
            return int(ffi.cast("uint32_t *", buf + pos + _align(rta_hdr, lib.RTA_ALIGNTO))[0])
        pos += _align(rta_len, lib.RTA_ALIGNTO)
    return 1  # a kernel too old to say (before 3.8) has one queue for XDP's purposes


# -- the map -----------------------------------------------------------------

def _create_xskmap(entries: int) -> int:
    attr = ffi.new("union bpf_attr *")
    attr.map_type = lib.BPF_MAP_TYPE_XSKMAP
    attr.key_size = 4
    attr.value_size = 4
    attr.max_entries = entries
    fd = _bpf(lib.BPF_MAP_CREATE, attr)
    if fd >= 0:
        return fd
    err = -fd
    if err == errno.ENOSYS:
        raise _no_bpf()
    if err == errno.EINVAL:
        raise RingError(err, "bpf(BPF_MAP_CREATE, XSKMAP): the kernel lacks AF_XDP socket maps "
                             "(CONFIG_XDP_SOCKETS, Linux 4.18)")
    raise_errno(err, "bpf(BPF_MAP_CREATE, XSKMAP)", cap="xdp_program")
    raise AssertionError("unreachable")


def register_socket(map_fd: int, queue_id: int, xsk_fd: int) -> None:
    """Put the AF_XDP socket ``xsk_fd`` into the XSKMAP ``map_fd`` at key
    ``queue_id`` (replacing what was there), so an XDP program redirecting
    by RX queue index sends that queue's frames to it. The socket should be
    bound to the map's interface and queue (the kernel accepts one not bound
    yet; frames redirected to it meanwhile are dropped)."""
    _check_int(map_fd, "map_fd", 0, 2**31 - 1)
    _check_int(queue_id, "queue_id", 0, 2**32 - 1)
    _check_int(xsk_fd, "xsk_fd", 0, 2**31 - 1)
    key = ffi.new("uint32_t *", queue_id)
    value = ffi.new("uint32_t *", xsk_fd)
    attr = ffi.new("union bpf_attr *")
    attr.map_fd = map_fd
    attr.key = int(ffi.cast("uintptr_t", key))
    attr.value = int(ffi.cast("uintptr_t", value))
    attr.flags = 0  # BPF_ANY
    rc = _bpf(lib.BPF_MAP_UPDATE_ELEM, attr)
    if rc >= 0:
        return
    err = -rc
    what = f"bpf(BPF_MAP_UPDATE_ELEM) of queue_id={queue_id}, xsk_fd={xsk_fd} into map_fd={map_fd}"
    if err == errno.E2BIG:
        raise ConfigError(f"{what}: queue_id {queue_id} is beyond the map's last slot")
    if err in (errno.EBADF, errno.ENOTSOCK, errno.EOPNOTSUPP):
        # EBADF: map_fd or xsk_fd is no open fd; ENOTSOCK/EOPNOTSUPP: xsk_fd is
        # no AF_XDP socket.
        raise ConfigError(f"{what}: {os.strerror(err)} (map_fd must be an XSKMAP, "
                          f"xsk_fd an AF_XDP socket)")
    raise_errno(err, what, cap="xdp_program")


def unregister_socket(map_fd: int, queue_id: int) -> None:
    """Remove whatever AF_XDP socket the XSKMAP ``map_fd`` holds at key
    ``queue_id`` (that queue's frames then take the program's fallback);
    nothing happens if the slot is empty."""
    _check_int(map_fd, "map_fd", 0, 2**31 - 1)
    _check_int(queue_id, "queue_id", 0, 2**32 - 1)
    key = ffi.new("uint32_t *", queue_id)
    attr = ffi.new("union bpf_attr *")
    attr.map_fd = map_fd
    attr.key = int(ffi.cast("uintptr_t", key))
    rc = _bpf(lib.BPF_MAP_DELETE_ELEM, attr)
    if rc >= 0 or -rc == errno.ENOENT:
        return
    what = f"bpf(BPF_MAP_DELETE_ELEM) of queue_id={queue_id} from map_fd={map_fd}"
    if -rc in (errno.E2BIG, errno.EINVAL):
        raise ConfigError(f"{what}: queue_id {queue_id} is beyond the map's last slot "
                          "(or map_fd is no XSKMAP)")
    if -rc == errno.EBADF:
        raise ConfigError(f"{what}: map_fd is no open fd")
    raise_errno(-rc, what, cap="xdp_program")


# -- the program ---------------------------------------------------------------

def redirect_program(map_fd: int) -> list[Insn]:
    """The instructions of the redirect program for the XSKMAP ``map_fd``:
    ``return bpf_redirect_map(map, ctx->rx_queue_index, XDP_PASS)``."""
    return [
        ldx_mem_w(R2, R1, ffi.offsetof("struct xdp_md", "rx_queue_index")),
        *ld_map_fd(R1, map_fd),
        mov64_imm(R3, lib.XDP_PASS),
        call(lib.BPF_FUNC_redirect_map),
        exit_insn(),
    ]


def _load_program(insns: Sequence[Insn], name: bytes = _PROG_NAME) -> int:
    """Load ``insns`` as an XDP program (for links, ``BPF_XDP``): its fd.
    A refusal by the verifier raises :class:`VerifierError` with its log."""
    if not insns:
        raise ConfigError("an XDP program needs at least one instruction")
    if len(insns) > 1_000_000:
        raise ConfigError(f"an XDP program has at most 1000000 instructions, got {len(insns)}")
    code = assemble(insns)
    license_ = ffi.new("char[]", _LICENSE)
    attr = ffi.new("union bpf_attr *")
    attr.prog_type = lib.BPF_PROG_TYPE_XDP
    attr.insn_cnt = len(insns)
    attr.insns = int(ffi.cast("uintptr_t", code))
    attr.license = int(ffi.cast("uintptr_t", license_))
    attr.expected_attach_type = lib.BPF_XDP
    attr.prog_name = name[: lib.BPF_OBJ_NAME_LEN - 1]
    fd = _bpf(lib.BPF_PROG_LOAD, attr)
    if fd >= 0:
        return fd
    err = -fd
    if err == errno.ENOSYS:
        raise _no_bpf()
    if err in (errno.EACCES, errno.EINVAL):
        log = ffi.new("char[]", _LOG_SIZE)
        attr.log_level = 1
        attr.log_size = _LOG_SIZE
        attr.log_buf = int(ffi.cast("uintptr_t", log))
        fd = _bpf(lib.BPF_PROG_LOAD, attr)
        if fd >= 0:  # accepted the second time: nothing to report
            return fd
        text = ffi.string(log).decode("utf-8", "replace").strip()
        if text:
            raise VerifierError(-fd, _WHAT_LOAD, text)
        err = -fd
    raise_errno(err, _WHAT_LOAD, cap="xdp_program")
    raise AssertionError("unreachable")


def _prog_id(prog_fd: int) -> int:
    info = ffi.new("struct bpf_prog_info *")
    attr = ffi.new("union bpf_attr *")
    attr.info.bpf_fd = prog_fd
    attr.info.info_len = ffi.sizeof("struct bpf_prog_info")
    attr.info.info = int(ffi.cast("uintptr_t", info))
    rc = _bpf(lib.BPF_OBJ_GET_INFO_BY_FD, attr)
    if rc < 0:
        raise_errno(-rc, "bpf(BPF_OBJ_GET_INFO_BY_FD)", cap="xdp_program")
    return int(info.id)


def _link(prog_fd: int, ifindex: int, mode: XdpAttach) -> int:
    """``BPF_LINK_CREATE`` of ``prog_fd`` on ``ifindex`` in ``mode``: the link fd, or -errno."""
    attr = ffi.new("union bpf_attr *")
    attr.link_create.prog_fd = prog_fd
    attr.link_create.target_fd = ifindex  # target_ifindex: the same field
    attr.link_create.attach_type = lib.BPF_XDP
    attr.link_create.flags = lib.XDP_FLAGS_SKB_MODE if mode is XdpAttach.SKB else lib.XDP_FLAGS_DRV_MODE
    return _bpf(lib.BPF_LINK_CREATE, attr)


def _link_what(name: str, mode: XdpAttach) -> str:
    return f"bpf(BPF_LINK_CREATE) of the XDP program on {name!r} in {mode.value} mode"


def _link_refusal(err: int, name: str, mode: XdpAttach) -> str | None:
    """What a refused ``BPF_LINK_CREATE`` means, for the message; None when
    the errno says it all (a capability, a vanished interface: ``raise_errno``)."""
    what = _link_what(name, mode)
    if err == errno.EBUSY:
        return (f"{what}: the interface already has an XDP program attached (another link, or one "
                f"attached by netlink: 'ip link set dev {name} xdp off' removes the latter)")
    if err == errno.ERANGE:
        return (f"{what}: the MTU is too large for native XDP on this interface (or its veth peer); "
                "lower it, or use attach='skb'")
    if err == errno.EOPNOTSUPP:
        return f"{what}: the driver has no native XDP; use attach='skb'"
    if err == errno.EINVAL and mode is XdpAttach.SKB:
        return (f"{what}: the kernel refused it (EINVAL); before Linux 5.9 it cannot attach XDP "
                "programs with BPF links")
    return None


def _raise_link_error(err: int, name: str, mode: XdpAttach) -> None:
    refusal = _link_refusal(err, name, mode)
    if refusal is not None:
        raise RingError(err, refusal)
    raise_errno(err, _link_what(name, mode), interface=name, cap="xdp")


class XdpProgram(Resource):
    """netring_chan's own XDP program on one interface: an XSKMAP with one
    slot per RX queue, and a program redirecting each frame to the AF_XDP
    socket registered for its RX queue, or passing it to the stack
    (``XDP_PASS``) when no socket is registered there.

    Loaded with bpf(2) (a verifier refusal raises ``VerifierError`` with
    the log), attached with a BPF link, so it leaves the interface when
    ``close()`` closes the link, or when the process dies.

    ``interface``: a name or an index, in the calling thread's network
    namespace. ``attach``: an ``XdpAttach`` or its value (``"skb"``,
    ``"native"``, ``"auto"``). ``queues``: the XSKMAP's slots, default
    ``rx_queue_count(interface)``.

    Attributes: ``interface`` (name), ``ifindex``, ``mode`` (``SKB`` or
    ``NATIVE``: what is in effect), ``fallback_reason`` (why ``AUTO`` fell
    back to SKB, else None), ``queues``, ``map_fd``, ``prog_fd``,
    ``link_fd``, ``prog_id`` (the kernel's id, as ``ip link`` and
    ``bpftool`` show it). Closing detaches the link first, then closes the
    program and map fds; a context manager; a ``ResourceWarning`` (then a
    close) if garbage-collected open; inert in a child made by ``fork()``.
    """

    def __init__(self, interface: str | int, *, attach: XdpAttach | str = XdpAttach.AUTO,
                 queues: int | None = None) -> None:
        self.map_fd = -1
        self.prog_fd = -1
        self.link_fd = -1
        wanted = _attach_mode(attach)
        if queues is not None:
            _check_int(queues, "queues", 1, 2**31 - 1)
        self.interface, self.ifindex = _interface(interface)
        self.queues: int = queues if queues is not None else rx_queue_count(self.ifindex)
        self.fallback_reason: str | None = None
        try:
            self.map_fd = _create_xskmap(self.queues)
            self.prog_fd = _load_program(redirect_program(self.map_fd))
            self.prog_id = _prog_id(self.prog_fd)
            self.mode: XdpAttach = XdpAttach.NATIVE if wanted is XdpAttach.AUTO else wanted
            fd = _link(self.prog_fd, self.ifindex, self.mode)
            if fd < 0 and wanted is XdpAttach.AUTO and -fd in _NATIVE_REFUSALS:
                self.fallback_reason = (_link_refusal(-fd, self.interface, XdpAttach.NATIVE)
                                        or f"{_link_what(self.interface, XdpAttach.NATIVE)}: {os.strerror(-fd)}")
                self.mode = XdpAttach.SKB
                fd = _link(self.prog_fd, self.ifindex, self.mode)
            if fd < 0:
                _raise_link_error(-fd, self.interface, self.mode)
            self.link_fd = fd
        except BaseException:
            self._release()
            raise
        self._opened()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.mode.value}, prog id {self.prog_id}"
        return f"<XdpProgram on {self.interface!r} ({state})>"

    def _check_queue(self, queue_id: object) -> int:
        self._check_usable(repr(self))
        if isinstance(queue_id, bool) or not isinstance(queue_id, int) or not 0 <= queue_id < self.queues:
            raise ConfigError(f"queue_id must be an int in [0, {self.queues - 1}] "
                              f"({self.interface!r} has {self.queues} RX queue(s) in the map), "
                              f"got {queue_id!r}")
        return queue_id

    def register(self, queue_id: int, xsk_fd: int) -> None:
        """Send the frames of RX queue ``queue_id`` to the AF_XDP socket
        ``xsk_fd`` (bound to this interface and queue), replacing any socket
        registered there before."""
        register_socket(self.map_fd, self._check_queue(queue_id), xsk_fd)

    def unregister(self, queue_id: int) -> None:
        """Stop redirecting RX queue ``queue_id`` (its frames go to the stack
        again); nothing happens if no socket was registered there."""
        unregister_socket(self.map_fd, self._check_queue(queue_id))

    def _release(self) -> None:
        # The link first: closing it detaches the program from the interface.
        for attr in ("link_fd", "prog_fd", "map_fd"):
            fd = getattr(self, attr)
            setattr(self, attr, -1)
            close_fd(fd)

    def close(self) -> None:
        """Detach the program (close the link) and close its fds; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release()

