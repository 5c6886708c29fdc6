"""<linux/if_packet.h>: AF_PACKET addresses, ring requests and frame headers."""

INCLUDES = """
#include <linux/if_packet.h>
"""

TYPES = """
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

"""

FUNCTIONS = """
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
#define TP_STATUS_TS_SYS_HARDWARE ...
"""

CUSTOMIZATIONS = """
#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
/* Older uapi headers (e.g. Linux 6.1's) lack it; the value is kernel ABI. */
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
static const int NC_HAS_PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 0;
#else
static const int NC_HAS_PACKET_FANOUT_FLAG_IGNORE_OUTGOING = 1;
#endif

/* Deprecated (never set by the kernel) and absent from some headers; the TX
 * ring still masks it off a finished slot's status. */
#ifndef TP_STATUS_TS_SYS_HARDWARE
#define TP_STATUS_TS_SYS_HARDWARE (1U << 30)
static const int NC_HAS_TP_STATUS_TS_SYS_HARDWARE = 0;
#else
static const int NC_HAS_TP_STATUS_TS_SYS_HARDWARE = 1;
#endif
"""
