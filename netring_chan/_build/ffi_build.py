"""Build-only: the cffi extension ``netring_chan._lowlevel`` (API mode).

One string of cdefs per kernel header; struct layouts are declared partially
(``...;``) so the C compiler fills in the real offsets from the installed
kernel headers, never from hand-written numbers. The hot-path helpers live in
``helpers.h`` beside this file and are compiled into the same module.
"""

from __future__ import annotations

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

LIBC = """
typedef unsigned int socklen_t;
typedef long off_t;
struct sockaddr { unsigned short sa_family; ...; };
int socket(int domain, int type, int protocol);
int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen);
int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen);
int bind(int fd, const struct sockaddr *addr, socklen_t addrlen);
long sendto(int fd, const void *buf, size_t len, int flags,
            const struct sockaddr *dest_addr, socklen_t addrlen);
void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
int munmap(void *addr, size_t length);
int close(int fd);
int eventfd(unsigned int initval, int flags);
long write(int fd, const void *buf, size_t count);
long read(int fd, void *buf, size_t count);

#define AF_PACKET ...
#define SOCK_RAW ...
#define SOCK_CLOEXEC ...
#define SOL_SOCKET ...
#define SOL_PACKET ...
#define SO_ATTACH_FILTER ...
#define SO_DETACH_FILTER ...
#define SO_LOCK_FILTER ...
#define SO_BUSY_POLL ...
#define SO_PRIORITY ...
#define SO_ERROR ...
#define SO_RCVBUF ...
#define SO_SNDBUF ...
#define MSG_DONTWAIT ...
#define PROT_READ ...
#define PROT_WRITE ...
#define MAP_SHARED ...
#define MAP_LOCKED ...
#define MAP_POPULATE ...
#define EFD_CLOEXEC ...
#define EFD_NONBLOCK ...
#define POLLIN ...
#define POLLOUT ...
#define POLLERR ...
#define SOF_TIMESTAMPING_SOFTWARE ...
#define SOF_TIMESTAMPING_RAW_HARDWARE ...
#define SOF_TIMESTAMPING_SYS_HARDWARE ...
"""

IF_ETHER = """
#define ETH_P_ALL ...
#define ETH_P_IP ...
#define ETH_P_8021Q ...
#define ETH_HLEN ...
#define ETH_ZLEN ...
"""

IF_PACKET = """
struct sockaddr_ll {
    unsigned short sll_family;
    unsigned short sll_protocol;
    int sll_ifindex;
    unsigned short sll_hatype;
    unsigned char sll_pkttype;
    unsigned char sll_halen;
    unsigned char sll_addr[8];
    ...;
};
struct packet_mreq {
    int mr_ifindex;
    unsigned short mr_type;
    unsigned short mr_alen;
    unsigned char mr_address[8];
    ...;
};
struct tpacket_req3 {
    unsigned int tp_block_size;
    unsigned int tp_block_nr;
    unsigned int tp_frame_size;
    unsigned int tp_frame_nr;
    unsigned int tp_retire_blk_tov;
    unsigned int tp_sizeof_priv;
    unsigned int tp_feature_req_word;
    ...;
};
struct tpacket_req {
    unsigned int tp_block_size;
    unsigned int tp_block_nr;
    unsigned int tp_frame_size;
    unsigned int tp_frame_nr;
    ...;
};
struct tpacket_stats_v3 {
    unsigned int tp_packets;
    unsigned int tp_drops;
    unsigned int tp_freeze_q_cnt;
    ...;
};
struct tpacket_hdr_variant1 {
    uint32_t tp_rxhash;
    uint32_t tp_vlan_tci;
    uint16_t tp_vlan_tpid;
    ...;
};
struct tpacket3_hdr {
    uint32_t tp_next_offset;
    uint32_t tp_sec;
    uint32_t tp_nsec;
    uint32_t tp_snaplen;
    uint32_t tp_len;
    uint32_t tp_status;
    uint16_t tp_mac;
    uint16_t tp_net;
    struct tpacket_hdr_variant1 hv1;
    ...;
};
struct tpacket2_hdr {
    uint32_t tp_status;
    uint32_t tp_len;
    uint32_t tp_snaplen;
    uint16_t tp_mac;
    uint16_t tp_net;
    uint32_t tp_sec;
    uint32_t tp_nsec;
    uint16_t tp_vlan_tci;
    uint16_t tp_vlan_tpid;
    ...;
};
struct tpacket_bd_ts { unsigned int ts_sec; unsigned int ts_nsec; ...; };
struct tpacket_hdr_v1 {
    uint32_t block_status;
    uint32_t num_pkts;
    uint32_t offset_to_first_pkt;
    uint32_t blk_len;
    uint64_t seq_num;
    struct tpacket_bd_ts ts_first_pkt;
    struct tpacket_bd_ts ts_last_pkt;
    ...;
};
union tpacket_bd_header_u { struct tpacket_hdr_v1 bh1; ...; };
struct tpacket_block_desc {
    uint32_t version;
    uint32_t offset_to_priv;
    union tpacket_bd_header_u hdr;
    ...;
};

#define PACKET_HOST ...
#define PACKET_BROADCAST ...
#define PACKET_MULTICAST ...
#define PACKET_OTHERHOST ...
#define PACKET_OUTGOING ...
#define PACKET_ADD_MEMBERSHIP ...
#define PACKET_MR_PROMISC ...
#define PACKET_RX_RING ...
#define PACKET_TX_RING ...
#define PACKET_STATISTICS ...
#define PACKET_VERSION ...
#define PACKET_HDRLEN ...
#define PACKET_RESERVE ...
#define PACKET_LOSS ...
#define PACKET_TIMESTAMP ...
#define PACKET_FANOUT ...
#define PACKET_QDISC_BYPASS ...
#define PACKET_IGNORE_OUTGOING ...
#define PACKET_FANOUT_HASH ...
#define PACKET_FANOUT_LB ...
#define PACKET_FANOUT_CPU ...
#define PACKET_FANOUT_ROLLOVER ...
#define PACKET_FANOUT_RND ...
#define PACKET_FANOUT_QM ...
#define PACKET_FANOUT_FLAG_ROLLOVER ...
#define PACKET_FANOUT_FLAG_UNIQUEID ...
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING ...
#define PACKET_FANOUT_FLAG_DEFRAG ...
#define TPACKET_V2 ...
#define TPACKET_V3 ...
#define TPACKET_ALIGNMENT ...
#define TP_STATUS_KERNEL ...
#define TP_STATUS_USER ...
#define TP_STATUS_COPY ...
#define TP_STATUS_LOSING ...
#define TP_STATUS_CSUMNOTREADY ...
#define TP_STATUS_VLAN_VALID ...
#define TP_STATUS_BLK_TMO ...
#define TP_STATUS_VLAN_TPID_VALID ...
#define TP_STATUS_CSUM_VALID ...
#define TP_STATUS_AVAILABLE ...
#define TP_STATUS_SEND_REQUEST ...
#define TP_STATUS_SENDING ...
#define TP_STATUS_WRONG_FORMAT ...
#define TP_STATUS_TS_SOFTWARE ...
#define TP_STATUS_TS_RAW_HARDWARE ...
#define TP_FT_REQ_FILL_RXHASH ...
"""

FILTER = """
struct sock_filter {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
    ...;
};
struct sock_fprog {
    unsigned short len;
    struct sock_filter *filter;
    ...;
};
#define BPF_MAXINSNS ...
"""

HELPERS = """
struct nc_pkt {
    uint64_t ts_ns;
    uint32_t hdr_off;
    uint32_t data_off;
    uint32_t snaplen;
    uint32_t wire_len;
    uint32_t status;
    uint32_t rxhash;
    int32_t ifindex;
    uint16_t protocol;
    uint16_t hatype;
    uint16_t vlan_tci;
    uint16_t vlan_tpid;
    uint8_t pkttype;
    uint8_t halen;
    uint8_t addr[8];
};
struct nc_block_info {
    uint32_t block_status;
    uint32_t num_pkts;
    uint32_t offset_to_first_pkt;
    uint32_t blk_len;
    uint64_t seq_num;
    uint64_t ts_first_ns;
    uint64_t ts_last_ns;
    uint32_t bad_index;
    uint64_t data_bytes;
    uint64_t data_end;
};
#define NC_NCOLS ...
uint64_t NC_STREAM_OVERHEAD(uint32_t n);
#define NC_MIN_RECORD ...
#define NC_E_SHORT_BLOCK ...
#define NC_E_BLOCK_LEN ...
#define NC_E_TOO_MANY ...
#define NC_E_HDR_BOUNDS ...
#define NC_E_DATA_BOUNDS ...
#define NC_E_NEXT_OFFSET ...
#define NC_E_MISALIGNED ...
#define NC_E_OUT_SPACE ...
uint32_t nc_block_status(const void *blk);
void nc_block_release(void *blk);
int nc_walk_block(const uint8_t *blk, uint64_t blk_size, struct nc_pkt *out,
                  uint32_t cap, struct nc_block_info *info);
void nc_data_bounds(const struct nc_pkt *pk, uint32_t n, uint32_t snap_limit,
                    uint32_t *starts, uint32_t *ends);
void nc_cols_layout(uint32_t n, uint64_t *offs);
int64_t nc_copy_out(const uint8_t *blk, const struct nc_pkt *pk, uint32_t n,
                    uint32_t snap_limit, uint8_t *out, uint64_t out_cap,
                    uint8_t *cols);
int nc_poll2(int fd, short events, int wake_fd, int timeout_ms);
"""

TX_HELPERS = """
struct nc_txring {
    uint8_t *base;
    uint32_t block_size;
    uint32_t frame_size;
    uint32_t per_block;
    uint32_t count;
};
#define NC_TX_DATA_OFF ...
#define NC_TX_TS_MASK ...
#define TP_STATUS_TS_SYS_HARDWARE ...
#define SIOCGIFMTU ...
#define SIOCGIFHWADDR ...
#define ARPHRD_ETHER ...
#define ARPHRD_LOOPBACK ...
#define IFNAMSIZ ...
uint8_t *nc_tx_frame(const struct nc_txring *r, uint32_t i);
uint32_t nc_tx_status(const void *frame);
void nc_tx_set(void *frame, uint32_t status);
void nc_tx_publish(void *frame, const uint8_t *src, uint32_t len);
void nc_tx_publish_many(const struct nc_txring *r, uint32_t from, const uint8_t *src,
                        const uint32_t *lens, uint32_t k);
uint32_t nc_tx_taken(const struct nc_txring *r, uint32_t from, uint32_t n);
uint32_t nc_tx_reap(const struct nc_txring *r, uint32_t from, uint32_t n);
void nc_tx_remove(const struct nc_txring *r, uint32_t w, uint32_t n);
int nc_if_mtu(int fd, const char *name);
int nc_if_hatype(int fd, const char *name);
"""

INCLUDES = """
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <poll.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/filter.h>
#include <linux/net_tstamp.h>
"""

ffibuilder = FFI()
ffibuilder.cdef(LIBC + IF_ETHER + IF_PACKET + FILTER + HELPERS + TX_HELPERS)
ffibuilder.set_source(
    "netring_chan._lowlevel",
    INCLUDES + (HERE / "helpers.h").read_text(),
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
