"""Helper ``c/xsk.h``: the AF_XDP ring protocol (fill, RX, TX, completion)
over a UMEM, and the RX walk into struct nc_pkt records (after ``walk``,
``netdev`` and ``if_xdp``). Also the socket options and calls only AF_XDP
uses: busy polling and ``recvfrom`` (the fill-ring wake-up)."""

import pathlib

INCLUDES = ""

# Written once, in c/xsk.h; the build copies them into the cdef.
C_STRUCTS = ("nc_xring", "nc_umem", "nc_xsk_rx_info")

TYPES = ""

FUNCTIONS = """
#define NC_XDP_DESC_SIZE ...
#define SO_PREFER_BUSY_POLL ...
#define SO_BUSY_POLL_BUDGET ...
#define SO_NETNS_COOKIE ...
#define MAP_ANONYMOUS ...
#define MAP_PRIVATE ...
long recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *src, socklen_t *addrlen);
uint32_t nc_xring_needs_wakeup(const struct nc_xring *r);
uint32_t nc_xring_ready(const struct nc_xring *r);
uint32_t nc_xring_free(const struct nc_xring *r);
uint32_t nc_xring_outstanding(const struct nc_xring *r);
uint32_t nc_xsk_fill(struct nc_xring *fq, const uint64_t *addrs, uint32_t n);
uint32_t nc_xsk_rx(struct nc_xring *rx, const struct nc_umem *u, int32_t ifindex,
                   const uint8_t *hwaddr, uint32_t cap, struct nc_pkt *out,
                   uint64_t *frames, struct nc_block_info *info, struct nc_xsk_rx_info *xi);
uint32_t nc_xsk_tx(struct nc_xring *tx, struct nc_umem *u, const uint8_t *src,
                   const uint32_t *lens, uint32_t k);
uint32_t nc_xsk_tx_room(const struct nc_xring *tx, const struct nc_umem *u);
uint32_t nc_xsk_complete(struct nc_xring *cq, struct nc_umem *u);
int nc_if_hwaddr(int fd, const char *name, uint8_t *out);
"""

CUSTOMIZATIONS = """
#include <sys/mman.h>
#ifndef SO_PREFER_BUSY_POLL
#define SO_PREFER_BUSY_POLL 69
#endif
#ifndef SO_BUSY_POLL_BUDGET
#define SO_BUSY_POLL_BUDGET 70
#endif
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
""" + (pathlib.Path(__file__).parent / "c" / "xsk.h").read_text()
