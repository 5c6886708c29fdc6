"""Build-only: the cffi extension ``netring_chan._lowlevel`` (API mode).

Layout
------
Every module in this folder but this one is a *binding module*: a handful of
strings, joined by :func:`build_ffi` into one FFI (so one compiled module,
one ``ffi``, one ``lib``):

``INCLUDES``
    ``#include`` lines; all modules' come first in the C source, in order.
``TYPES``
    cdef of types.
``FUNCTIONS``
    cdef of functions and constants (``#define NAME ...``).
``CUSTOMIZATIONS``
    C code compiled after all the includes: fallbacks for what an older
    header lacks, the ``NC_HAS_*`` flags, the C helpers.
``C_STRUCTS`` (optional)
    tags of structs that CUSTOMIZATIONS defines; their definitions are copied
    from the C text into the cdef, so each is written once.

Every TYPES string goes into the cdef before any FUNCTIONS string, so a
module may use types another module declares.

Kernel and libc headers, one module each (:data:`HEADERS`):

- ``libc``: sockets, mmap, eventfd, read/write/close, poll flags.
- ``if_ether``: ``<linux/if_ether.h>``, protocol ids and frame sizes.
- ``if_packet``: ``<linux/if_packet.h>``, AF_PACKET rings and frame headers.
- ``filter``: ``<linux/filter.h>``, classic BPF (sock_filter, sock_fprog).
- ``net_tstamp``: ``<linux/net_tstamp.h>``, SO_TIMESTAMPING flags.
- ``if_xdp``: ``<linux/if_xdp.h>``, AF_XDP sockets and rings.
- ``bpf``: ``<linux/bpf.h>`` and the bpf(2) call: XSKMAP, the XDP program, BPF links.
- ``rtnetlink``: ``<linux/rtnetlink.h>`` layouts, for an interface's RX queue count.

Struct layouts are declared partially (``...;``) so the C compiler fills in
the real offsets from the installed kernel headers, never from hand-written
numbers.

C helpers, one module per concern (:data:`HELPERS`), each the cdef of the C
file of the same name in ``c/``: ``walk`` (RX block walker, struct nc_pkt),
``copyout`` (owned copies; after ``walk``), ``poll`` (ring fd + eventfd),
``txring`` (PACKET_TX_RING slots), ``netdev`` (interface MTU and type),
``pcapfile`` (pcap/pcapng records a batch per call; after ``copyout``),
``xsk`` (AF_XDP rings over a UMEM; after ``walk`` and ``netdev``).
Everything in them knows nothing of Python objects: cffi calls them with the
GIL released, and the Python side owns every buffer passed in.

Feature flags
-------------
Where an installed header may lack a name (too old, or a name since
dropped), the module's CUSTOMIZATIONS supplies it, with the value from the
kernel ABI, under ``#ifndef`` (or, for enumerators and struct layouts, a
check of the header's ``LINUX_VERSION_CODE``), and sets an integer
``NC_HAS_<THING>`` to 0; with the header's own definition it is 1. The cdef
therefore compiles against any header, ``lib.NC_HAS_<THING>`` tells Python
which case it got, and a 0 hints that the running kernel may predate the
feature too. A flag is defined once, in C, as ``static const int
NC_HAS_<THING> = 0;`` or ``= 1;`` on a line of its own; the build declares
every name so defined to the cdef.

Adding a module
---------------
Write ``<name>.py`` here with the four strings (C helpers: the C code in
``c/<name>.h``, read into CUSTOMIZATIONS), declare only what compiles
everywhere, give each optional name a fallback and an ``NC_HAS_*`` flag, and
put the module's name into :data:`HEADERS` or :data:`HELPERS` after the
modules it needs. ``pyproject.toml`` ships ``_build/c/*.h`` already.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
from types import ModuleType

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

HEADERS = ("libc", "if_ether", "if_packet", "filter", "net_tstamp", "if_xdp", "bpf", "rtnetlink")
HELPERS = ("walk", "copyout", "poll", "txring", "netdev", "pcapfile", "xsk")


def load_module(name: str) -> ModuleType:
    """One binding module of this folder, by file: importing the
    ``netring_chan`` package would import the runtime, which needs the
    extension this builds."""
    spec = importlib.util.spec_from_file_location(f"_netring_chan_build.{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def c_struct(source: str, tag: str) -> str:
    """The definition of ``struct <tag>`` in C source, for the cdef."""
    match = re.search(r"^struct %s \{\n.*?^\};\n" % re.escape(tag), source, re.M | re.S)
    if match is None:
        raise LookupError(f"struct {tag} is not defined in the C source")
    return match.group(0)


def feature_flags(source: str) -> list[str]:
    """The cdef of the ``NC_HAS_*`` flags C source defines, each once."""
    names = dict.fromkeys(re.findall(r"^static const int (NC_HAS_\w+) = [01];$", source, re.M))
    return [f"static const int {name};\n" for name in names]


def build_ffi(module_name: str, modules: list[ModuleType], **kwargs: object) -> FFI:
    """One FFI from binding modules: the includes and the customizations
    become the C source, in module order; the types, then the functions,
    the cdef."""
    includes: list[str] = []
    types: list[str] = []
    functions: list[str] = []
    customizations: list[str] = []
    for module in modules:
        includes.append(module.INCLUDES)
        customizations.append(module.CUSTOMIZATIONS)
        types.extend(feature_flags(module.CUSTOMIZATIONS))
        types.extend(c_struct(module.CUSTOMIZATIONS, tag) for tag in getattr(module, "C_STRUCTS", ()))
        types.append(module.TYPES)
        functions.append(module.FUNCTIONS)
    ffi = FFI()
    ffi.cdef("\n".join(types + functions))
    ffi.set_source(module_name, "\n".join(includes + customizations), **kwargs)  # type: ignore[arg-type]
    return ffi


ffibuilder = build_ffi(
    "netring_chan._lowlevel",
    [load_module(name) for name in HEADERS + HELPERS],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
