/* Block walker for TPACKET_V3 RX blocks: block status and release, the
 * per-packet metadata walk (struct nc_pkt) and zero-copy data bounds.
 *
 * The block walker never trusts the kernel (or a synthetic test block): every
 * offset is checked against blk_len and the block size, in 64-bit arithmetic,
 * before anything behind it is read, and headers are read with memcpy so a
 * misaligned header is a reported error, not undefined behaviour.
 */
#include <stdint.h>
#include <string.h>
#include <linux/if_packet.h>

#define NC_E_SHORT_BLOCK   (-1)
#define NC_E_BLOCK_LEN     (-2)
#define NC_E_TOO_MANY      (-3)
#define NC_E_HDR_BOUNDS    (-4)
#define NC_E_DATA_BOUNDS   (-5)
#define NC_E_NEXT_OFFSET   (-6)
#define NC_E_MISALIGNED    (-7)

/* Record size the kernel needs at the least for one packet: header, then
 * sockaddr_ll; Python sizes the per-block metadata array with it. */
#define NC_MIN_RECORD (TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) + sizeof(struct sockaddr_ll))

struct nc_pkt {
    uint64_t ts_ns;
    uint32_t hdr_off;
    uint32_t data_off;
    uint32_t snaplen;
    uint32_t wire_len;
    uint32_t status;
    uint32_t rxhash;
    int32_t  ifindex;
    uint16_t protocol;   /* host byte order */
    uint16_t hatype;
    uint16_t vlan_tci;   /* 0 unless TP_STATUS_VLAN_VALID */
    uint16_t vlan_tpid;  /* 0 unless TP_STATUS_VLAN_TPID_VALID */
    uint8_t  pkttype;
    uint8_t  halen;
    uint8_t  addr[8];
};

struct nc_block_info {
    uint32_t block_status;
    uint32_t num_pkts;
    uint32_t offset_to_first_pkt;
    uint32_t blk_len;
    uint64_t seq_num;
    uint64_t ts_first_ns;
    uint64_t ts_last_ns;
    uint32_t bad_index;      /* packet index at which a walk failed */
    uint64_t data_bytes;     /* sum of tp_snaplen: what an owned copy needs */
    uint64_t data_end;       /* end of the furthest packet's data */
};

/* The kernel publishes a block by storing TP_STATUS_USER into block_status
 * after it wrote the block (smp_wmb in prb_close_block); pair that with an
 * acquire load so nothing of the block is read before the status. */
static uint32_t nc_block_status(const void *blk)
{
    const struct tpacket_block_desc *bd = blk;
    return __atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
}

/* Hand a block back: every read of it must happen before the kernel can
 * overwrite it, hence a release store (packet_mmap.rst asks for a barrier). */
static void nc_block_release(void *blk)
{
    struct tpacket_block_desc *bd = blk;
    __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

static int nc_walk_block(const uint8_t *blk, uint64_t blk_size,
                         struct nc_pkt *out, uint32_t cap,
                         struct nc_block_info *info)
{
    struct tpacket_block_desc bd;
    struct tpacket3_hdr h;
    struct sockaddr_ll sll;
    const uint64_t hdrlen = TPACKET_ALIGN(sizeof(struct tpacket3_hdr));
    uint64_t off, blk_len;
    uint32_t i, n;

    memset(info, 0, sizeof(*info));
    if (blk_size < sizeof(bd))
        return NC_E_SHORT_BLOCK;
    memcpy(&bd, blk, sizeof(bd));
    info->block_status = bd.hdr.bh1.block_status;
    info->num_pkts = n = bd.hdr.bh1.num_pkts;
    info->offset_to_first_pkt = bd.hdr.bh1.offset_to_first_pkt;
    info->blk_len = bd.hdr.bh1.blk_len;
    info->seq_num = bd.hdr.bh1.seq_num;
    info->ts_first_ns = (uint64_t)bd.hdr.bh1.ts_first_pkt.ts_sec * 1000000000ull
                        + bd.hdr.bh1.ts_first_pkt.ts_nsec;
    info->ts_last_ns = (uint64_t)bd.hdr.bh1.ts_last_pkt.ts_sec * 1000000000ull
                       + bd.hdr.bh1.ts_last_pkt.ts_nsec;
    blk_len = bd.hdr.bh1.blk_len;
    if (n == 0)
        return 0;
    if (blk_len > blk_size || blk_len < sizeof(bd))
        return NC_E_BLOCK_LEN;
    if (n > cap)
        return NC_E_TOO_MANY;

    off = bd.hdr.bh1.offset_to_first_pkt;
    for (i = 0; i < n; i++) {
        struct nc_pkt *p = &out[i];
        uint64_t data_off;
        info->bad_index = i;
        if (off < sizeof(bd))
            return NC_E_HDR_BOUNDS;
        if (off & 3)
            return NC_E_MISALIGNED;
        if (off + hdrlen + sizeof(sll) > blk_len)
            return NC_E_HDR_BOUNDS;
        memcpy(&h, blk + off, sizeof(h));
        memcpy(&sll, blk + off + hdrlen, sizeof(sll));
        data_off = off + h.tp_mac;
        if (h.tp_mac < hdrlen + sizeof(sll) || data_off + h.tp_snaplen > blk_len)
            return NC_E_DATA_BOUNDS;
        p->ts_ns = (uint64_t)h.tp_sec * 1000000000ull + h.tp_nsec;
        p->hdr_off = (uint32_t)off;
        p->data_off = (uint32_t)data_off;
        p->snaplen = h.tp_snaplen;
        p->wire_len = h.tp_len;
        /* V3 keeps ownership in the block status; the per-packet USER bit
         * means nothing, so no copy (view or owned) reports it. */
        p->status = h.tp_status & ~(uint32_t)TP_STATUS_USER;
        p->rxhash = h.hv1.tp_rxhash;
        p->vlan_tci = (h.tp_status & TP_STATUS_VLAN_VALID) ? h.hv1.tp_vlan_tci : 0;
        p->vlan_tpid = (h.tp_status & TP_STATUS_VLAN_TPID_VALID) ? h.hv1.tp_vlan_tpid : 0;
        p->ifindex = sll.sll_ifindex;
        p->protocol = (uint16_t)((sll.sll_protocol >> 8) | (sll.sll_protocol << 8));
        p->hatype = sll.sll_hatype;
        p->pkttype = sll.sll_pkttype;
        p->halen = sll.sll_halen > 8 ? 8 : sll.sll_halen;
        memcpy(p->addr, sll.sll_addr, 8);
        info->data_bytes += h.tp_snaplen;
        if (data_off + h.tp_snaplen > info->data_end)
            info->data_end = data_off + h.tp_snaplen;
        if (i + 1 < n) {
            if (h.tp_next_offset == 0)
                return NC_E_NEXT_OFFSET;
            off += h.tp_next_offset;
        }
    }
    info->bad_index = 0;
    /* The block's ts_first_pkt is when the kernel opened it (prb_open_block
     * stamps the clock, possibly on the retire timer well before any packet,
     * or just after the first packet's skb was stamped); report the first
     * packet's time instead, so that first <= last always holds. */
    info->ts_first_ns = out[0].ts_ns;
    info->ts_last_ns = out[n - 1].ts_ns;
    return (int)n;
}

/* Start and end offsets in the block of every packet's data, the snap
 * length applied, for building zero-copy views of a batch in one pass. */
static void nc_data_bounds(const struct nc_pkt *pk, uint32_t n, uint32_t snap_limit,
                           uint32_t *starts, uint32_t *ends)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint32_t len = pk[i].snaplen < snap_limit ? pk[i].snaplen : snap_limit;
        starts[i] = pk[i].data_off;
        ends[i] = pk[i].data_off + len;
    }
}
