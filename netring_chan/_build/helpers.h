/* Hot-path helpers for netring_chan.
 *
 * Everything here knows nothing of Python objects: cffi calls these with the
 * GIL released, and the Python side owns every buffer passed in.
 *
 * The block walker never trusts the kernel (or a synthetic test block): every
 * offset is checked against blk_len and the block size, in 64-bit arithmetic,
 * before anything behind it is read, and headers are read with memcpy so a
 * misaligned header is a reported error, not undefined behaviour.
 */
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <poll.h>
#include <linux/if_packet.h>

#ifndef PACKET_FANOUT_FLAG_IGNORE_OUTGOING
/* Older uapi headers (e.g. Linux 6.1's) lack it; the value is kernel ABI. */
#define PACKET_FANOUT_FLAG_IGNORE_OUTGOING 0x4000
#endif

#define NC_E_SHORT_BLOCK   (-1)
#define NC_E_BLOCK_LEN     (-2)
#define NC_E_TOO_MANY      (-3)
#define NC_E_HDR_BOUNDS    (-4)
#define NC_E_DATA_BOUNDS   (-5)
#define NC_E_NEXT_OFFSET   (-6)
#define NC_E_MISALIGNED    (-7)
#define NC_E_OUT_SPACE     (-8)

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

/* Owned copies. Packet bytes are written as a pickle stream of a list of
 * bytes objects (EMPTY_LIST MARK {SHORT_BINBYTES|BINBYTES len data}* APPENDS
 * STOP): only length-prefixed opcodes, so packet contents can never be read
 * as opcodes, and the stdlib's C unpickler then makes every packet's bytes
 * object at a fraction of the cost of slicing in Python. Metadata goes to a
 * struct-of-arrays area `cols` laid out by nc_cols_layout, read from Python
 * as typed memoryviews. */
#define NC_NCOLS 13
#define NC_STREAM_OVERHEAD(n) (4 + 5 * (uint64_t)(n))
static void nc_cols_layout(uint32_t n, uint64_t *offs)
{
    /* ts_ns, caplen, wire_len, status, rxhash, ifindex, protocol, hatype,
     * vlan_tci, vlan_tpid, pkttype, halen, addr(8n); widest first so every
     * column is naturally aligned. */
    static const uint8_t width[NC_NCOLS] = {8, 4, 4, 4, 4, 4, 2, 2, 2, 2, 1, 1, 8};
    uint64_t o = 0;
    int c;
    for (c = 0; c < NC_NCOLS; c++) {
        offs[c] = o;
        o += (uint64_t)width[c] * n;
    }
    offs[NC_NCOLS] = o;
}

static int64_t nc_copy_out(const uint8_t *blk, const struct nc_pkt *pk, uint32_t n,
                           uint32_t snap_limit, uint8_t *out, uint64_t out_cap,
                           uint8_t *cols)
{
    uint64_t offs[NC_NCOLS + 1];
    uint64_t pos = 0;
    uint32_t i;
    if (out_cap < 4)
        return NC_E_OUT_SPACE;
    nc_cols_layout(n, offs);
    out[pos++] = ']';   /* EMPTY_LIST */
    out[pos++] = '(';   /* MARK */
    for (i = 0; i < n; i++) {
        const struct nc_pkt *p = &pk[i];
        uint32_t len = p->snaplen < snap_limit ? p->snaplen : snap_limit;
        if (pos + 5 + (uint64_t)len + 2 > out_cap)
            return NC_E_OUT_SPACE;
        if (len < 256) {
            out[pos++] = 'C';   /* SHORT_BINBYTES */
            out[pos++] = (uint8_t)len;
        } else {
            out[pos++] = 'B';   /* BINBYTES, little-endian u32 length */
            out[pos++] = (uint8_t)len;
            out[pos++] = (uint8_t)(len >> 8);
            out[pos++] = (uint8_t)(len >> 16);
            out[pos++] = (uint8_t)(len >> 24);
        }
        memcpy(out + pos, blk + p->data_off, len);
        pos += len;
        memcpy(cols + offs[0] + 8 * (uint64_t)i, &p->ts_ns, 8);
        memcpy(cols + offs[1] + 4 * (uint64_t)i, &len, 4);
        memcpy(cols + offs[2] + 4 * (uint64_t)i, &p->wire_len, 4);
        memcpy(cols + offs[3] + 4 * (uint64_t)i, &p->status, 4);
        memcpy(cols + offs[4] + 4 * (uint64_t)i, &p->rxhash, 4);
        memcpy(cols + offs[5] + 4 * (uint64_t)i, &p->ifindex, 4);
        memcpy(cols + offs[6] + 2 * (uint64_t)i, &p->protocol, 2);
        memcpy(cols + offs[7] + 2 * (uint64_t)i, &p->hatype, 2);
        memcpy(cols + offs[8] + 2 * (uint64_t)i, &p->vlan_tci, 2);
        memcpy(cols + offs[9] + 2 * (uint64_t)i, &p->vlan_tpid, 2);
        cols[offs[10] + i] = p->pkttype;
        cols[offs[11] + i] = p->halen;
        memcpy(cols + offs[12] + 8 * (uint64_t)i, p->addr, 8);
    }
    out[pos++] = 'e';   /* APPENDS */
    out[pos++] = '.';   /* STOP */
    return (int64_t)pos;
}

/* One poll on the ring fd and a wake-up eventfd. Returns a bit set
 * (1: fd ready, 2: woken, 4: fd error/hangup) or -errno; -EINTR goes back to
 * Python so that signal handlers run and the retry recomputes the deadline. */
static int nc_poll2(int fd, short events, int wake_fd, int timeout_ms)
{
    struct pollfd p[2];
    int r, res = 0;
    p[0].fd = fd; p[0].events = events; p[0].revents = 0;
    p[1].fd = wake_fd; p[1].events = POLLIN; p[1].revents = 0;
    r = poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (r < 0)
        return -errno;
    if (p[0].revents & events)
        res |= 1;
    if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
        res |= 4;
    if (wake_fd >= 0 && p[1].revents)
        res |= 2;
    return res;
}

/* ---- TX ring (PACKET_TX_RING, TPACKET_V2) ------------------------------
 *
 * Slot i lives at block i / per_block, offset (i % per_block) * frame_size,
 * exactly as the kernel's packet_lookup_frame() finds it. Without
 * PACKET_TX_HAS_OFF the kernel reads the frame at tp_hdrlen -
 * sizeof(struct sockaddr_ll) from the slot start (tpacket_parse_header), which
 * for V2 is TPACKET_ALIGN(sizeof(struct tpacket2_hdr)).
 *
 * The status word is the only synchronisation with the kernel: it reads
 * tp_len and the data after it sees TP_STATUS_SEND_REQUEST (smp_rmb in
 * __packet_get_status), so the publishing store is a release; it hands a slot
 * back with TP_STATUS_AVAILABLE from the skb destructor (smp_wmb), so reads
 * of the status are acquires. A finished slot may carry TP_STATUS_TS_* bits
 * when the socket asked for TX timestamps; they are masked off.
 */
#include <sys/ioctl.h>
#include <net/if.h>
#include <net/if_arp.h>

#ifndef TP_STATUS_TS_SYS_HARDWARE
#define TP_STATUS_TS_SYS_HARDWARE (1U << 30)
#endif
#define NC_TX_DATA_OFF (TPACKET2_HDRLEN - sizeof(struct sockaddr_ll))
#define NC_TX_TS_MASK (TP_STATUS_TS_SOFTWARE | TP_STATUS_TS_SYS_HARDWARE | TP_STATUS_TS_RAW_HARDWARE)

struct nc_txring {
    uint8_t *base;
    uint32_t block_size;
    uint32_t frame_size;
    uint32_t per_block;
    uint32_t count;
};

static uint8_t *nc_tx_frame(const struct nc_txring *r, uint32_t i)
{
    i %= r->count;
    return r->base + (uint64_t)(i / r->per_block) * r->block_size
                   + (uint64_t)(i % r->per_block) * r->frame_size;
}

static uint32_t nc_tx_status(const void *frame)
{
    const struct tpacket2_hdr *h = frame;
    return __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) & ~(uint32_t)NC_TX_TS_MASK;
}

static void nc_tx_set(void *frame, uint32_t status)
{
    struct tpacket2_hdr *h = frame;
    __atomic_store_n(&h->tp_status, status, __ATOMIC_RELEASE);
}

/* Fill a slot the caller owns (src may be NULL when the data is already in
 * place) and hand it to the kernel. */
static void nc_tx_publish(void *frame, const uint8_t *src, uint32_t len)
{
    struct tpacket2_hdr *h = frame;
    if (src != NULL)
        memcpy((uint8_t *)frame + NC_TX_DATA_OFF, src, len);
    h->tp_len = len;
    h->tp_snaplen = len;
    __atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
}

/* Publish k frames packed back to back in src (lengths in lens) into the
 * slots from `from` on: one call, GIL released, for a whole run of free
 * slots the caller has reserved. */
static void nc_tx_publish_many(const struct nc_txring *r, uint32_t from, const uint8_t *src,
                               const uint32_t *lens, uint32_t k)
{
    uint32_t j;
    for (j = 0; j < k; j++) {
        nc_tx_publish(nc_tx_frame(r, from + j), src, lens[j]);
        src += lens[j];
    }
}

/* How many of the n queued slots from `from` the kernel has taken off the
 * ring (now SENDING or already AVAILABLE). It takes them in ring order and
 * stops at the first it cannot send, so this is a prefix. */
static uint32_t nc_tx_taken(const struct nc_txring *r, uint32_t from, uint32_t n)
{
    uint32_t k;
    for (k = 0; k < n; k++) {
        uint32_t st = nc_tx_status(nc_tx_frame(r, from + k));
        if (st == TP_STATUS_SEND_REQUEST || st == TP_STATUS_WRONG_FORMAT)
            break;
    }
    return k;
}

/* How many of the n taken slots from `from` are finished (AVAILABLE again),
 * counted in ring order: a slot is reused only after every older one is. */
static uint32_t nc_tx_reap(const struct nc_txring *r, uint32_t from, uint32_t n)
{
    uint32_t k;
    for (k = 0; k < n; k++)
        if (nc_tx_status(nc_tx_frame(r, from + k)) != TP_STATUS_AVAILABLE)
            break;
    return k;
}

/* The kernel refused slot w (TP_STATUS_WRONG_FORMAT) and, without
 * PACKET_LOSS, stays stopped on it: its ring head does not move past a frame
 * it could not send. Remove w from the queued run [w, w + n) by moving the
 * n - 1 frames behind it one slot down, in order, and freeing the last slot.
 * Only valid while no sendto() runs on the socket (the caller's lock). */
static void nc_tx_remove(const struct nc_txring *r, uint32_t w, uint32_t n)
{
    uint32_t k;
    for (k = 0; k + 1 < n; k++) {
        uint8_t *dst = nc_tx_frame(r, w + k);
        const uint8_t *src = nc_tx_frame(r, w + k + 1);
        uint32_t len = ((const struct tpacket2_hdr *)src)->tp_len;
        nc_tx_publish(dst, src + NC_TX_DATA_OFF, len);
    }
    nc_tx_set(nc_tx_frame(r, w + n - 1), TP_STATUS_AVAILABLE);
}

static int nc_if_ioctl(int fd, const char *name, unsigned long req, struct ifreq *ifr)
{
    memset(ifr, 0, sizeof(*ifr));
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, req, ifr) < 0)
        return -errno;
    return 0;
}

/* MTU of an interface in fd's network namespace, or -errno. */
static int nc_if_mtu(int fd, const char *name)
{
    struct ifreq ifr;
    int rc = nc_if_ioctl(fd, name, SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

/* ARPHRD_* type of an interface, or -errno. */
static int nc_if_hatype(int fd, const char *name)
{
    struct ifreq ifr;
    int rc = nc_if_ioctl(fd, name, SIOCGIFHWADDR, &ifr);
    return rc < 0 ? rc : ifr.ifr_hwaddr.sa_family;
}
