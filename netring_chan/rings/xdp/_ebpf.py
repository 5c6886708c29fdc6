"""A tiny eBPF assembler: the instructions the XDP redirect program needs.

Each instruction is one ``struct bpf_insn`` (8 bytes: opcode, destination
and source register nibbles, a signed 16-bit offset, a signed 32-bit
immediate), kept here as an :class:`Insn` tuple and packed into a cffi
array by :func:`assemble`. Every opcode is built by OR-ing the named fields
of ``<linux/bpf_common.h>`` / ``<linux/bpf.h>`` exported by the extension
(class | size | mode for loads, class | operation | source for ALU and jumps),
never from a hand-written byte.

The one subtle instruction is the 64-bit immediate load
(``BPF_LD | BPF_DW | BPF_IMM``): it takes two slots, the low 32 bits in the
first's ``imm``, the high in the second's (whose opcode is 0). With
``src_reg = BPF_PSEUDO_MAP_FD`` the immediate is a map *fd*, which the
verifier replaces with the map's kernel address at load time.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ..._lowlevel import ffi, lib

__all__ = [
    "Insn", "R0", "R1", "R2", "R3", "R4", "R5", "R10",
    "mov64_imm", "ldx_mem_w", "ld_map_fd", "call", "exit_insn",
    "assemble",
]

# Registers: r0 return value, r1-r5 arguments (r1 = context on entry),
# r6-r9 callee-saved, r10 read-only frame pointer.
R0, R1, R2, R3, R4, R5 = 0, 1, 2, 3, 4, 5
R10 = 10


class Insn(NamedTuple):
    """One ``struct bpf_insn``: ``code`` (opcode), ``dst``/``src`` registers,
    ``off`` (signed 16 bits), ``imm`` (signed 32 bits)."""

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0


def _s32(value: int) -> int:
    """``value`` as the signed 32-bit immediate the kernel reads (a u32 like
    0xffffffff is the same bits as -1)."""
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"immediate {value} does not fit in 32 bits")
    return value - (1 << 32) if value >= (1 << 31) else value


def mov64_imm(dst: int, imm: int) -> Insn:
    """``dst = imm`` (64-bit, the immediate sign-extended)."""
    return Insn(lib.BPF_ALU64 | lib.BPF_MOV | lib.BPF_K, dst, 0, 0, _s32(imm))


def ldx_mem_w(dst: int, src: int, off: int) -> Insn:
    """``dst = *(u32 *)(src + off)``."""
    return Insn(lib.BPF_LDX | lib.BPF_W | lib.BPF_MEM, dst, src, off)


def ld_map_fd(dst: int, map_fd: int) -> tuple[Insn, Insn]:
    """``dst = map`` (the two-slot 64-bit immediate load of a map fd)."""
    return (Insn(lib.BPF_LD | lib.BPF_DW | lib.BPF_IMM, dst, lib.BPF_PSEUDO_MAP_FD, 0, map_fd),
            Insn(0, 0, 0, 0, 0))


def call(helper: int) -> Insn:
    """``r0 = helper(r1, ..., r5)``: a call of the kernel helper numbered ``helper``
    (``BPF_FUNC_*``)."""
    return Insn(lib.BPF_JMP | lib.BPF_CALL, 0, 0, 0, helper)


def exit_insn() -> Insn:
    """``return r0``."""
    return Insn(lib.BPF_JMP | lib.BPF_EXIT)


def assemble(insns: Sequence[Insn]) -> object:
    """The instructions as a ``struct bpf_insn[]`` cffi array (owned by the
    returned object), ready for ``BPF_PROG_LOAD``."""
    out = ffi.new("struct bpf_insn[]", len(insns))
    for slot, insn in zip(out, insns):
        slot.code, slot.dst_reg, slot.src_reg, slot.off, slot.imm = insn
    return out
