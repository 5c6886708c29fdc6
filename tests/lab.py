"""A private network world for tests: a netns with a veth pair.

Independent of the library: namespaces through ``ip`` and ``setns`` (ctypes),
frames sent with the stdlib ``socket.AF_PACKET``. Nothing here touches the
host's interfaces; traffic stays between the veth ends the lab created.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import socket
import struct
import subprocess
import uuid
from typing import Iterable, Iterator

CLONE_NEWNET = 0x40000000
ETH_P_LAB = 0x88B5  # IEEE 802 local experimental EtherType 1
_libc = ctypes.CDLL(None, use_errno=True)

REQUIRE_ENV = "NETRING_REQUIRE_PRIVILEGED"


def privilege_problem() -> str | None:
    """Why a veth lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN for netns)"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command (apt-get install iproute2)"
    return None


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the calling thread inside network namespace ``ns`` for a while."""
    with open("/proc/thread-self/ns/net") as orig, open(f"/run/netns/{ns}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(orig.fileno())


def mac(b: int) -> bytes:
    return bytes([0x02, 0x00, 0x00, 0x00, 0x00, b])


def frame(dst: bytes, src: bytes, payload: bytes, ethertype: int = ETH_P_LAB) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


class Lab:
    """Namespace ``ns`` holding veth ends ``a`` and ``b`` (both up, no IPv6)."""

    def __init__(self, pairs: int = 1, mtu: int | None = None, queues: int | None = None) -> None:
        tag = uuid.uuid4().hex[:8]
        self.ns = f"nctest-{tag}"
        self.ifaces: list[tuple[str, str]] = [(f"nc{tag}{i}a", f"nc{tag}{i}b") for i in range(pairs)]
        self.a, self.b = self.ifaces[0]
        sh("ip", "netns", "add", self.ns)
        try:
            for k in ("all", "default"):
                sh("ip", "netns", "exec", self.ns, "sysctl", "-qw", f"net.ipv6.conf.{k}.disable_ipv6=1")
            # queues: RX and TX queues of each veth end (default: the kernel's, one each).
            nq = ("numrxqueues", str(queues), "numtxqueues", str(queues)) if queues else ()
            for n, (a, b) in enumerate(self.ifaces):
                sh("ip", "-n", self.ns, "link", "add", a, "address", mac(2 * n + 1).hex(":"), *nq,
                   "type", "veth", "peer", "name", b, "address", mac(2 * n + 2).hex(":"), *nq)
                for ifc in (a, b):
                    if mtu:
                        sh("ip", "-n", self.ns, "link", "set", ifc, "mtu", str(mtu))
                    sh("ip", "-n", self.ns, "link", "set", ifc, "up")
        except BaseException:
            self.close()
            raise

    def inside(self) -> contextlib.AbstractContextManager[None]:
        return inside(self.ns)

    def sender(self, ifname: str | None = None) -> socket.socket:
        """A stdlib AF_PACKET socket bound to ``ifname`` (default: the b end)."""
        with self.inside():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            s.bind((ifname or self.b, 0))
        return s

    def send(self, frames: Iterable[bytes], ifname: str | None = None) -> int:
        n = 0
        with self.sender(ifname) as s:
            for f in frames:
                s.send(f)
                n += 1
        return n

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "-n", self.ns, *args, check=check)

    def close(self) -> None:
        sh("ip", "netns", "del", self.ns, check=False)
