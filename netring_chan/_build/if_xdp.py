"""<linux/if_xdp.h>: AF_XDP sockets, UMEM registration and ring layout.

Used by ``netring_chan.rings.xdp.socket``. The structs are declared as today's kernel ABI;
where the installed header is older (or absent), CUSTOMIZATIONS supplies
that ABI itself and the matching NC_HAS_* flag is 0:

- NC_HAS_AF_XDP: <sys/socket.h> names AF_XDP and SOL_XDP (glibc 2.28).
- NC_HAS_IF_XDP_H: the header exists (Linux 4.18): sockaddr_xdp, xdp_desc,
  the socket options and mmap page offsets.
- NC_HAS_XDP_OPTIONS: XDP_OPTIONS, struct xdp_options (Linux 5.3).
- NC_HAS_XDP_NEED_WAKEUP: XDP_USE_NEED_WAKEUP, XDP_RING_NEED_WAKEUP and the
  ``flags`` words of xdp_ring_offset and xdp_umem_reg (Linux 5.4).
- NC_HAS_XDP_RING_STATISTICS: the last three xdp_statistics counters
  (Linux 5.9; no macro marks them, hence the header version).

A struct that grew is told by the header's version: before the include its
short form is renamed aside (nc_old_*), and CUSTOMIZATIONS defines the full
one under the real name.
"""

INCLUDES = """
#include <sys/socket.h>
#include <linux/types.h>
#include <linux/version.h>
#if __has_include(<linux/if_xdp.h>)
#define NC_IF_XDP_H_LEVEL LINUX_VERSION_CODE
#else
#define NC_IF_XDP_H_LEVEL 0
#endif
#if NC_IF_XDP_H_LEVEL < KERNEL_VERSION(5, 4, 0)
#define xdp_ring_offset nc_old_xdp_ring_offset
#define xdp_mmap_offsets nc_old_xdp_mmap_offsets
#define xdp_umem_reg nc_old_xdp_umem_reg
#endif
#if NC_IF_XDP_H_LEVEL < KERNEL_VERSION(5, 9, 0)
#define xdp_statistics nc_old_xdp_statistics
#endif
#if NC_IF_XDP_H_LEVEL > 0
#include <linux/if_xdp.h>
#endif
#undef xdp_ring_offset
#undef xdp_mmap_offsets
#undef xdp_umem_reg
#undef xdp_statistics
"""

TYPES = """
struct sockaddr_xdp {
    uint16_t sxdp_family;
    uint16_t sxdp_flags;
    uint32_t sxdp_ifindex;
    uint32_t sxdp_queue_id;
    uint32_t sxdp_shared_umem_fd;
    ...;
};
struct xdp_ring_offset {
    uint64_t producer;
    uint64_t consumer;
    uint64_t desc;
    uint64_t flags;
    ...;
};
struct xdp_mmap_offsets {
    struct xdp_ring_offset rx;
    struct xdp_ring_offset tx;
    struct xdp_ring_offset fr;
    struct xdp_ring_offset cr;
    ...;
};
struct xdp_umem_reg {
    uint64_t addr;
    uint64_t len;
    uint32_t chunk_size;
    uint32_t headroom;
    uint32_t flags;
    ...;
};
struct xdp_statistics {
    uint64_t rx_dropped;
    uint64_t rx_invalid_descs;
    uint64_t tx_invalid_descs;
    uint64_t rx_ring_full;
    uint64_t rx_fill_ring_empty_descs;
    uint64_t tx_ring_empty_descs;
    ...;
};
struct xdp_options {
    uint32_t flags;
    ...;
};
struct xdp_desc {
    uint64_t addr;
    uint32_t len;
    uint32_t options;
    ...;
};
"""

FUNCTIONS = """
#define AF_XDP ...
#define SOL_XDP ...
#define XDP_SHARED_UMEM ...
#define XDP_COPY ...
#define XDP_ZEROCOPY ...
#define XDP_USE_NEED_WAKEUP ...
#define XDP_RING_NEED_WAKEUP ...
#define XDP_MMAP_OFFSETS ...
#define XDP_RX_RING ...
#define XDP_TX_RING ...
#define XDP_UMEM_REG ...
#define XDP_UMEM_FILL_RING ...
#define XDP_UMEM_COMPLETION_RING ...
#define XDP_STATISTICS ...
#define XDP_OPTIONS ...
#define XDP_OPTIONS_ZEROCOPY ...
#define XDP_PGOFF_RX_RING ...
#define XDP_PGOFF_TX_RING ...
#define XDP_UMEM_PGOFF_FILL_RING ...
#define XDP_UMEM_PGOFF_COMPLETION_RING ...
"""

CUSTOMIZATIONS = """
#if defined(AF_XDP) && defined(SOL_XDP)
static const int NC_HAS_AF_XDP = 1;
#else
static const int NC_HAS_AF_XDP = 0;
#endif
#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

#if NC_IF_XDP_H_LEVEL > 0
static const int NC_HAS_IF_XDP_H = 1;
#else
static const int NC_HAS_IF_XDP_H = 0;
struct sockaddr_xdp { __u16 sxdp_family, sxdp_flags; __u32 sxdp_ifindex, sxdp_queue_id, sxdp_shared_umem_fd; };
struct xdp_desc { __u64 addr; __u32 len, options; };
#define XDP_SHARED_UMEM (1 << 0)
#define XDP_COPY (1 << 1)
#define XDP_ZEROCOPY (1 << 2)
#define XDP_MMAP_OFFSETS 1
#define XDP_RX_RING 2
#define XDP_TX_RING 3
#define XDP_UMEM_REG 4
#define XDP_UMEM_FILL_RING 5
#define XDP_UMEM_COMPLETION_RING 6
#define XDP_STATISTICS 7
#define XDP_PGOFF_RX_RING 0
#define XDP_PGOFF_TX_RING 0x80000000
#define XDP_UMEM_PGOFF_FILL_RING 0x100000000ULL
#define XDP_UMEM_PGOFF_COMPLETION_RING 0x180000000ULL
#endif

#ifdef XDP_OPTIONS
static const int NC_HAS_XDP_OPTIONS = 1;
#else
static const int NC_HAS_XDP_OPTIONS = 0;
struct xdp_options { __u32 flags; };
#define XDP_OPTIONS 8
#define XDP_OPTIONS_ZEROCOPY (1 << 0)
#endif

#if NC_IF_XDP_H_LEVEL >= KERNEL_VERSION(5, 4, 0)
static const int NC_HAS_XDP_NEED_WAKEUP = 1;
#else
static const int NC_HAS_XDP_NEED_WAKEUP = 0;
struct xdp_ring_offset { __u64 producer, consumer, desc, flags; };
struct xdp_mmap_offsets { struct xdp_ring_offset rx, tx, fr, cr; };
struct xdp_umem_reg { __u64 addr, len; __u32 chunk_size, headroom, flags; };
#endif
#ifndef XDP_USE_NEED_WAKEUP
#define XDP_USE_NEED_WAKEUP (1 << 3)
#endif
#ifndef XDP_RING_NEED_WAKEUP
#define XDP_RING_NEED_WAKEUP (1 << 0)
#endif

#if NC_IF_XDP_H_LEVEL >= KERNEL_VERSION(5, 9, 0)
static const int NC_HAS_XDP_RING_STATISTICS = 1;
#else
static const int NC_HAS_XDP_RING_STATISTICS = 0;
struct xdp_statistics {
    __u64 rx_dropped, rx_invalid_descs, tx_invalid_descs;
    __u64 rx_ring_full, rx_fill_ring_empty_descs, tx_ring_empty_descs;
};
#endif
"""
