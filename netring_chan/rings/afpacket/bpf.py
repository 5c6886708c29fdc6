"""Classic BPF filters: tcpdump expressions and raw instruction lists.

Expressions are compiled by the system libpcap, loaded at run time through
cffi's ABI mode, so libpcap is needed only by those who use expressions. The
result is the same program ``tcpdump -dd EXPR`` prints.
"""

from __future__ import annotations

import ctypes.util
import threading
from typing import Any, Iterable, Sequence, Tuple, Union

from cffi import FFI

from ..._lowlevel import ffi, lib
from ...errors import FilterError, LibpcapMissingError

__all__ = ["BpfProgram", "compile_filter", "FilterSpec"]

Instruction = Tuple[int, int, int, int]
FilterSpec = Union[str, "BpfProgram", Sequence[Instruction]]

_PCAP_CDEF = """
typedef struct pcap pcap_t;
struct bpf_insn { unsigned short code; unsigned char jt; unsigned char jf; uint32_t k; };
struct bpf_program { unsigned int bf_len; struct bpf_insn *bf_insns; };
pcap_t *pcap_open_dead(int linktype, int snaplen);
int pcap_compile(pcap_t *p, struct bpf_program *fp, const char *str, int optimize, uint32_t netmask);
void pcap_freecode(struct bpf_program *fp);
char *pcap_geterr(pcap_t *p);
void pcap_close(pcap_t *p);
"""
_PCAP_NAMES = ("libpcap.so.0.8", "libpcap.so.1", "libpcap.so")
_DLT_EN10MB = 1
_NETMASK_UNKNOWN = 0xFFFFFFFF

_pcap_lock = threading.Lock()  # pcap_compile is not thread-safe before 1.8
_pcap: Any = None
_pcap_ffi = FFI()
_pcap_ffi.cdef(_PCAP_CDEF)


def _libpcap() -> Any:
    global _pcap
    if _pcap is None:
        names = list(_PCAP_NAMES)
        found = ctypes.util.find_library("pcap")
        if found:
            names.insert(0, found)
        for name in names:
            try:
                _pcap = _pcap_ffi.dlopen(name)
                break
            except OSError:
                continue
        else:
            raise LibpcapMissingError(
                "tcpdump-style filter expressions need the system libpcap "
                "(Debian/Ubuntu: apt-get install libpcap0.8; Fedora: dnf install libpcap); "
                "or pass raw instructions (the output of tcpdump -dd)"
            )
    return _pcap


class BpfProgram:
    """A validated classic BPF program: a tuple of ``(code, jt, jf, k)``."""

    __slots__ = ("instructions", "expression")

    def __init__(self, instructions: Iterable[Sequence[int]], expression: str | None = None) -> None:
        insns: list[Instruction] = []
        for n, ins in enumerate(instructions):
            try:
                code, jt, jf, k = (int(x) for x in ins)
            except (TypeError, ValueError):
                raise FilterError(f"BPF instruction {n} is not a (code, jt, jf, k) tuple: {ins!r}") from None
            if not (0 <= code <= 0xFFFF and 0 <= jt <= 0xFF and 0 <= jf <= 0xFF and 0 <= k <= 0xFFFFFFFF):
                raise FilterError(f"BPF instruction {n} has a field out of range: {ins!r}")
            insns.append((code, jt, jf, k))
        if not insns:
            raise FilterError("a BPF program needs at least one instruction")
        if len(insns) > lib.BPF_MAXINSNS:
            raise FilterError(f"BPF program has {len(insns)} instructions; the kernel accepts {lib.BPF_MAXINSNS}")
        self.instructions: tuple[Instruction, ...] = tuple(insns)
        self.expression = expression

    def _fprog(self) -> tuple[Any, Any]:
        """A ``struct sock_fprog`` and the array it points to (keep both alive)."""
        arr = ffi.new("struct sock_filter[]", len(self.instructions))
        for i, (code, jt, jf, k) in enumerate(self.instructions):
            arr[i].code, arr[i].jt, arr[i].jf, arr[i].k = code, jt, jf, k
        prog = ffi.new("struct sock_fprog *")
        prog.len = len(self.instructions)
        prog.filter = arr
        return prog, arr

    def __len__(self) -> int:
        return len(self.instructions)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BpfProgram) and other.instructions == self.instructions

    def __hash__(self) -> int:
        return hash(self.instructions)

    def __repr__(self) -> str:
        what = repr(self.expression) if self.expression else f"{len(self)} instructions"
        return f"<BpfProgram {what}>"


def compile_filter(expression: str, *, snaplen: int = 262144, optimize: bool = True) -> BpfProgram:
    """Compile a tcpdump expression for Ethernet with the system libpcap."""
    if not isinstance(expression, str):
        raise FilterError(f"filter expression must be str, not {type(expression).__name__}")
    if not isinstance(snaplen, int) or isinstance(snaplen, bool) or not 0 < snaplen <= 0x7FFFFFFF:
        raise FilterError(f"snaplen must be an int in 1..2147483647, got {snaplen!r}")
    if "\0" in expression:
        # pcap_compile reads a C string: it would compile only the part
        # before the NUL, a wider filter than the one asked for.
        raise FilterError(f"filter expression contains a NUL character: {expression!r}")
    pc = _libpcap()
    with _pcap_lock:
        p = pc.pcap_open_dead(_DLT_EN10MB, snaplen)
        if p == _pcap_ffi.NULL:
            raise FilterError("pcap_open_dead failed")
        try:
            prog: Any = _pcap_ffi.new("struct bpf_program *")
            if pc.pcap_compile(p, prog, expression.encode(), 1 if optimize else 0, _NETMASK_UNKNOWN) != 0:
                raw = _pcap_ffi.string(pc.pcap_geterr(p))
                msg = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                raise FilterError(f"invalid filter expression {expression!r}: {msg}")
            try:
                insns = [(prog.bf_insns[i].code, prog.bf_insns[i].jt, prog.bf_insns[i].jf, prog.bf_insns[i].k)
                         for i in range(prog.bf_len)]
            finally:
                pc.pcap_freecode(prog)
        finally:
            pc.pcap_close(p)
    return BpfProgram(insns, expression)


def as_program(spec: FilterSpec) -> BpfProgram:
    """Accept an expression, a ``BpfProgram`` or raw instructions."""
    if isinstance(spec, BpfProgram):
        return spec
    if isinstance(spec, str):
        return compile_filter(spec)
    if isinstance(spec, (bytes, bytearray)) or not isinstance(spec, Iterable):
        raise FilterError("filter must be an expression (str), a BpfProgram or (code, jt, jf, k) tuples, "
                          f"not {type(spec).__name__}: {spec!r}")
    return BpfProgram(spec)
