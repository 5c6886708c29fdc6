"""<linux/bpf.h> and the bpf(2) system call: enough to load an XDP program,
create an XSKMAP, fill it and attach the program with a BPF link.

Used by ``netring_chan.rings.xdp.program``. ``union bpf_attr`` is declared
only for BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_MAP_*_ELEM, BPF_OBJ_GET_INFO_BY_FD
and BPF_LINK_CREATE (the kernel takes a shorter attr and treats the rest as
zero). The instruction encoding (classes, sizes, modes, operations, sources
of <linux/bpf_common.h> and the eBPF additions of <linux/bpf.h>) is declared
by name, so the assembler builds each opcode from the header's fields;
``struct xdp_md`` gives the program its context offsets. Most names here
are enumerators, which ``#ifdef`` cannot see, so what an older header lacks
is told by its version; CUSTOMIZATIONS then supplies the kernel ABI value and
the NC_HAS_* flag is 0:

- NC_HAS_BPF_H: the header exists: struct bpf_insn, the commands.
- NC_HAS_BPF_XSKMAP: BPF_MAP_TYPE_XSKMAP, xdp_md.rx_queue_index,
  BPF_FUNC_redirect_map and the rest of the 4.18 names.
- NC_HAS_BPF_LINK_CREATE: BPF_LINK_CREATE and attr.link_create (Linux 5.7);
  before that the header's union is renamed aside and a reduced one used.
- NC_HAS_BPF_XDP: the BPF_XDP attach type for links (Linux 5.9).
- NC_HAS_XDP_FLAGS_MODES: XDP_FLAGS_SKB_MODE/DRV_MODE in <linux/if_link.h>.
- NC_HAS_SYS_BPF: libc knows the syscall number; if 0, nc_bpf() fails with
  -ENOSYS.
"""

INCLUDES = """
#include <errno.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/types.h>
#include <linux/version.h>
#include <linux/if_link.h>
#include <linux/bpf_common.h>
#if __has_include(<linux/bpf.h>)
#define NC_BPF_H_LEVEL LINUX_VERSION_CODE
#else
#define NC_BPF_H_LEVEL 0
#endif
#if NC_BPF_H_LEVEL < KERNEL_VERSION(5, 7, 0)
#define bpf_attr nc_old_bpf_attr
#endif
#if NC_BPF_H_LEVEL < KERNEL_VERSION(4, 18, 0)
#define xdp_md nc_old_xdp_md
#endif
#if NC_BPF_H_LEVEL > 0
#include <linux/bpf.h>
#endif
#undef bpf_attr
#undef xdp_md
"""

TYPES = """
struct bpf_insn {
    uint8_t code;
    uint8_t dst_reg:4;
    uint8_t src_reg:4;
    int16_t off;
    int32_t imm;
};
/* attr.link_create: a member of unnamed struct type, named for cffi. */
typedef struct {
    uint32_t prog_fd;
    uint32_t target_fd;
    uint32_t attach_type;
    uint32_t flags;
    ...;
} nc_bpf_link_create_t;
/* attr.info: BPF_OBJ_GET_INFO_BY_FD. */
typedef struct {
    uint32_t bpf_fd;
    uint32_t info_len;
    uint64_t info;
    ...;
} nc_bpf_info_t;
struct bpf_prog_info {
    uint32_t type;
    uint32_t id;
    ...;
};
/* The XDP program's context (what r1 points to). */
struct xdp_md {
    uint32_t data;
    uint32_t data_end;
    uint32_t data_meta;
    uint32_t ingress_ifindex;
    uint32_t rx_queue_index;
    ...;
};
union bpf_attr {
    struct {    /* BPF_MAP_CREATE */
        uint32_t map_type;
        uint32_t key_size;
        uint32_t value_size;
        uint32_t max_entries;
        uint32_t map_flags;
    };
    struct {    /* BPF_MAP_*_ELEM */
        uint32_t map_fd;
        uint64_t key;
        uint64_t value;
        uint64_t flags;
    };
    struct {    /* BPF_PROG_LOAD */
        uint32_t prog_type;
        uint32_t insn_cnt;
        uint64_t insns;
        uint64_t license;
        uint32_t log_level;
        uint32_t log_size;
        uint64_t log_buf;
        uint32_t kern_version;
        uint32_t prog_flags;
        char prog_name[16];     /* BPF_OBJ_NAME_LEN */
        uint32_t prog_ifindex;
        uint32_t expected_attach_type;
    };
    nc_bpf_link_create_t link_create;
    nc_bpf_info_t info;
    ...;
};
"""

FUNCTIONS = """
#define BPF_MAP_CREATE ...
#define BPF_MAP_UPDATE_ELEM ...
#define BPF_MAP_DELETE_ELEM ...
#define BPF_PROG_LOAD ...
#define BPF_OBJ_GET_INFO_BY_FD ...
#define BPF_LINK_CREATE ...
#define BPF_MAP_TYPE_XSKMAP ...
#define BPF_FUNC_redirect_map ...
#define BPF_PSEUDO_MAP_FD ...
#define BPF_OBJ_NAME_LEN ...
#define BPF_LD ...
#define BPF_LDX ...
#define BPF_ALU64 ...
#define BPF_JMP ...
#define BPF_W ...
#define BPF_DW ...
#define BPF_IMM ...
#define BPF_MEM ...
#define BPF_MOV ...
#define BPF_CALL ...
#define BPF_EXIT ...
#define BPF_K ...
#define BPF_X ...
#define BPF_PROG_TYPE_XDP ...
#define BPF_XDP ...
#define XDP_ABORTED ...
#define XDP_DROP ...
#define XDP_PASS ...
#define XDP_REDIRECT ...
#define XDP_FLAGS_SKB_MODE ...
#define XDP_FLAGS_DRV_MODE ...
int nc_bpf(int cmd, union bpf_attr *attr, unsigned int size);
"""

CUSTOMIZATIONS = """
#if NC_BPF_H_LEVEL > 0
static const int NC_HAS_BPF_H = 1;
#else
static const int NC_HAS_BPF_H = 0;
struct bpf_insn { __u8 code; __u8 dst_reg:4, src_reg:4; __s16 off; __s32 imm; };
#endif

#if NC_BPF_H_LEVEL >= KERNEL_VERSION(4, 18, 0)
static const int NC_HAS_BPF_XSKMAP = 1;
#else
static const int NC_HAS_BPF_XSKMAP = 0;
#define BPF_MAP_CREATE 0
#define BPF_MAP_UPDATE_ELEM 2
#define BPF_MAP_DELETE_ELEM 3
#define BPF_PROG_LOAD 5
#define BPF_OBJ_GET_INFO_BY_FD 15
#define BPF_MAP_TYPE_XSKMAP 17
#define BPF_FUNC_redirect_map 51
#define BPF_PROG_TYPE_XDP 6
#define XDP_ABORTED 0
#define XDP_DROP 1
#define XDP_PASS 2
#define XDP_REDIRECT 4
struct xdp_md { __u32 data, data_end, data_meta, ingress_ifindex, rx_queue_index; };
struct bpf_prog_info { __u32 type, id; };
#endif

/* eBPF's additions to the classic encoding, and names of <linux/bpf.h>
   defines (these #ifndef can see). */
#ifndef BPF_ALU64
#define BPF_ALU64 0x07
#endif
#ifndef BPF_DW
#define BPF_DW 0x18
#endif
#ifndef BPF_MOV
#define BPF_MOV 0xb0
#endif
#ifndef BPF_CALL
#define BPF_CALL 0x80
#endif
#ifndef BPF_EXIT
#define BPF_EXIT 0x90
#endif
#ifndef BPF_PSEUDO_MAP_FD
#define BPF_PSEUDO_MAP_FD 1
#endif
#ifndef BPF_OBJ_NAME_LEN
#define BPF_OBJ_NAME_LEN 16U
#endif

#if NC_BPF_H_LEVEL >= KERNEL_VERSION(5, 7, 0)
static const int NC_HAS_BPF_LINK_CREATE = 1;
#else
static const int NC_HAS_BPF_LINK_CREATE = 0;
#define BPF_LINK_CREATE 28
union bpf_attr {
    struct { __u32 map_type, key_size, value_size, max_entries, map_flags; };
    struct { __u32 map_fd; __aligned_u64 key, value; __u64 flags; };
    struct {
        __u32 prog_type, insn_cnt;
        __aligned_u64 insns, license;
        __u32 log_level, log_size;
        __aligned_u64 log_buf;
        __u32 kern_version, prog_flags;
        char prog_name[16];
        __u32 prog_ifindex, expected_attach_type;
    };
    struct { __u32 bpf_fd, info_len; __aligned_u64 info; } info;
    struct { __u32 prog_fd, target_fd, attach_type, flags; } link_create;
};
#endif
typedef __typeof__(((union bpf_attr *)0)->link_create) nc_bpf_link_create_t;
typedef __typeof__(((union bpf_attr *)0)->info) nc_bpf_info_t;

#if NC_BPF_H_LEVEL >= KERNEL_VERSION(5, 9, 0)
static const int NC_HAS_BPF_XDP = 1;
#else
static const int NC_HAS_BPF_XDP = 0;
#define BPF_XDP 37
#endif

#if defined(XDP_FLAGS_SKB_MODE) && defined(XDP_FLAGS_DRV_MODE)
static const int NC_HAS_XDP_FLAGS_MODES = 1;
#else
static const int NC_HAS_XDP_FLAGS_MODES = 0;
#define XDP_FLAGS_SKB_MODE (1U << 1)
#define XDP_FLAGS_DRV_MODE (1U << 2)
#endif

#if !defined(SYS_bpf) && defined(__NR_bpf)
#define SYS_bpf __NR_bpf
#endif
#ifdef SYS_bpf
static const int NC_HAS_SYS_BPF = 1;
#else
static const int NC_HAS_SYS_BPF = 0;
#endif

/* bpf(2); glibc has no wrapper. The new fd or 0, or -errno. */
static int nc_bpf(int cmd, union bpf_attr *attr, unsigned int size)
{
#ifdef SYS_bpf
    long r = syscall(SYS_bpf, cmd, attr, size);
    return r < 0 ? -errno : (int)r;
#else
    (void)cmd; (void)attr; (void)size;
    return -ENOSYS;
#endif
}
"""
