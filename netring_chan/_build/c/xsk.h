/* AF_XDP rings (Documentation/networking/af_xdp.rst): the single-producer /
 * single-consumer protocol of the fill, RX, TX and completion rings over the
 * UMEM, and the walk that turns RX descriptors into struct nc_pkt records.
 *
 * Each ring is a producer index, a consumer index, a flags word and an
 * array of descriptors (xdp_desc for RX/TX, u64 addresses for fill and
 * completion), shared with the kernel. A consumer reads the producer index
 * with an acquire load (nothing of a descriptor is read before the index
 * that publishes it) and hands entries back with a release store of its
 * consumer index (every read of them happened before); a producer writes
 * descriptors, then publishes them with a release store of the producer
 * index, and reads the consumer index with an acquire load before reusing
 * entries. This is what libxdp's xsk.h does with smp_load_acquire /
 * smp_store_release (the kernel pairs them, xsk_queue.h).
 *
 * The UMEM is never trusted: a descriptor whose address and length do not
 * lie inside one of the UMEM's RX frames is counted and skipped, never read.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <linux/if_packet.h>

struct nc_xring {
    uint32_t *producer;
    uint32_t *consumer;
    uint32_t *flags;
    void *desc;
    uint32_t size;      /* a power of two */
    uint32_t cached;    /* our own index: producer (fill, TX) or consumer (RX, completion) */
};

/* The frames of a UMEM one socket uses, and the free TX frames. */
struct nc_umem {
    uint8_t *base;
    uint64_t size;
    uint32_t frame_size;   /* a power of two (aligned chunk mode) */
    uint64_t tx_first;     /* TX frames: [tx_first, tx_first + tx_count * frame_size) */
    uint32_t tx_count;
    uint64_t *tx_free;     /* stack of free TX frame addresses */
    uint32_t tx_nfree;
    uint8_t *tx_state;     /* 1 while a TX frame is with the kernel */
    uint64_t bad_completions;
};

struct nc_xsk_rx_info {
    uint32_t taken;        /* descriptors consumed from the RX ring */
    uint32_t invalid;      /* of them, outside the UMEM / a frame: skipped */
    uint32_t nframes;      /* frames to hand back when the batch goes */
};

#define NC_XDP_DESC_SIZE ((uint32_t)sizeof(struct xdp_desc))

static uint32_t nc_xring_needs_wakeup(const struct nc_xring *r)
{
    return __atomic_load_n(r->flags, __ATOMIC_RELAXED) & XDP_RING_NEED_WAKEUP;
}

/* Entries waiting to be consumed (RX, completion). */
static uint32_t nc_xring_ready(const struct nc_xring *r)
{
    return __atomic_load_n(r->producer, __ATOMIC_ACQUIRE) - r->cached;
}

/* Free entries of a ring we produce into (fill, TX). */
static uint32_t nc_xring_free(const struct nc_xring *r)
{
    return r->size - (r->cached - __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE));
}

/* Entries we produced that the kernel has not consumed yet (TX). */
static uint32_t nc_xring_outstanding(const struct nc_xring *r)
{
    return r->cached - __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
}

/* Put up to n frame addresses on the fill ring; returns how many. */
static uint32_t nc_xsk_fill(struct nc_xring *fq, const uint64_t *addrs, uint32_t n)
{
    uint32_t i, room = nc_xring_free(fq);
    uint64_t *d = fq->desc;
    if (n > room)
        n = room;
    for (i = 0; i < n; i++)
        d[(fq->cached + i) & (fq->size - 1)] = addrs[i];
    if (n) {
        fq->cached += n;
        __atomic_store_n(fq->producer, fq->cached, __ATOMIC_RELEASE);
    }
    return n;
}

/* Take up to cap descriptors off the RX ring into records (data_off is the
 * address in the UMEM; the caller's batch is based at the UMEM start).
 * Every frame taken, valid or not, is listed in frames[] (its chunk start)
 * so it can go back to the fill ring; the records are the valid ones only.
 * Returns the number of records; info says how many were taken and skipped.
 * hwaddr: the interface's MAC, to tell frames to this host from the rest. */
static uint32_t nc_xsk_rx(struct nc_xring *rx, const struct nc_umem *u, int32_t ifindex,
                          const uint8_t *hwaddr, uint32_t cap, struct nc_pkt *out,
                          uint64_t *frames, struct nc_block_info *info, struct nc_xsk_rx_info *xi)
{
    uint32_t i, n, k = 0, avail = nc_xring_ready(rx);
    const struct xdp_desc *d = rx->desc;
    struct timespec ts;
    uint64_t ts_ns;
    uint64_t mask = (uint64_t)u->frame_size - 1;
    uint64_t rx_end = u->tx_first;  /* RX frames: [0, tx_first); the rest are TX frames */

    memset(info, 0, sizeof(*info));
    memset(xi, 0, sizeof(*xi));
    n = avail < cap ? avail : cap;
    if (n == 0)
        return 0;
    /* The kernel stamps nothing: one user-space stamp for the batch. */
    clock_gettime(CLOCK_REALTIME, &ts);
    ts_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    for (i = 0; i < n; i++) {
        struct xdp_desc desc = d[(rx->cached + i) & (rx->size - 1)];
        uint64_t addr = desc.addr, len = desc.len;
        struct nc_pkt *p;
        const uint8_t *f;
        if (addr >= rx_end) {
            xi->invalid++;     /* not one of the fill ring's frames: nothing to give back */
            continue;
        }
        frames[xi->nframes++] = addr & ~mask;
        if (len < 14 || (addr & mask) + len > u->frame_size || addr + len > rx_end
                || addr + len > 0xFFFFFFFFull) {
            xi->invalid++;
            continue;
        }
        p = &out[k++];
        f = u->base + addr;
        memset(p, 0, sizeof(*p));
        p->ts_ns = ts_ns;
        p->data_off = (uint32_t)addr;
        p->hdr_off = (uint32_t)(addr & ~mask);
        p->snaplen = (uint32_t)len;
        p->wire_len = (uint32_t)len;
        p->ifindex = ifindex;
        p->protocol = (uint16_t)((f[12] << 8) | f[13]);
        p->hatype = ARPHRD_ETHER;
        if (f[0] & 1)
            p->pkttype = memcmp(f, "\xff\xff\xff\xff\xff\xff", 6) == 0 ? PACKET_BROADCAST : PACKET_MULTICAST;
        else
            p->pkttype = memcmp(f, hwaddr, 6) == 0 ? PACKET_HOST : PACKET_OTHERHOST;
        p->halen = 6;
        memcpy(p->addr, f + 6, 6);
        info->data_bytes += len;
        if (addr + len > info->data_end)
            info->data_end = addr + len;
    }
    rx->cached += n;
    /* Every descriptor was copied out above: the entries may be reused. */
    __atomic_store_n(rx->consumer, rx->cached, __ATOMIC_RELEASE);
    xi->taken = n;
    info->num_pkts = k;
    info->ts_first_ns = info->ts_last_ns = ts_ns;
    return k;
}

/* Queue k frames packed back to back in src (lengths in lens) on the TX
 * ring, each copied into a free TX frame; the caller checked the lengths
 * and that k fits (nc_xsk_tx_room). Returns k. */
static uint32_t nc_xsk_tx(struct nc_xring *tx, struct nc_umem *u, const uint8_t *src,
                          const uint32_t *lens, uint32_t k)
{
    uint32_t j;
    struct xdp_desc *d = tx->desc;
    for (j = 0; j < k; j++) {
        uint64_t addr = u->tx_free[--u->tx_nfree];
        struct xdp_desc *e = &d[(tx->cached + j) & (tx->size - 1)];
        memcpy(u->base + addr, src, lens[j]);
        src += lens[j];
        u->tx_state[(addr - u->tx_first) / u->frame_size] = 1;
        e->addr = addr;
        e->len = lens[j];
        e->options = 0;
    }
    if (k) {
        tx->cached += k;
        __atomic_store_n(tx->producer, tx->cached, __ATOMIC_RELEASE);
    }
    return k;
}

/* How many frames can be queued now: free TX frames and TX ring entries. */
static uint32_t nc_xsk_tx_room(const struct nc_xring *tx, const struct nc_umem *u)
{
    uint32_t r = nc_xring_free(tx);
    return r < u->tx_nfree ? r : u->tx_nfree;
}

/* Reap the completion ring: every completed TX frame goes back on the free
 * stack. An address that is not one of our frames with the kernel is
 * counted (bad_completions) and ignored. Returns the frames freed. */
static uint32_t nc_xsk_complete(struct nc_xring *cq, struct nc_umem *u)
{
    uint32_t i, freed = 0, n = nc_xring_ready(cq);
    const uint64_t *d = cq->desc;
    uint64_t mask = (uint64_t)u->frame_size - 1;
    for (i = 0; i < n; i++) {
        uint64_t addr = d[(cq->cached + i) & (cq->size - 1)] & ~mask;
        uint64_t idx;
        if (addr < u->tx_first || addr >= u->tx_first + (uint64_t)u->tx_count * u->frame_size) {
            u->bad_completions++;
            continue;
        }
        idx = (addr - u->tx_first) / u->frame_size;
        if (!u->tx_state[idx]) {
            u->bad_completions++;
            continue;
        }
        u->tx_state[idx] = 0;
        u->tx_free[u->tx_nfree++] = addr;
        freed++;
    }
    if (n) {
        cq->cached += n;
        __atomic_store_n(cq->consumer, cq->cached, __ATOMIC_RELEASE);
    }
    return freed;
}

/* Hardware address of an interface (6 bytes into out), or -errno. */
static int nc_if_hwaddr(int fd, const char *name, uint8_t *out)
{
    struct ifreq ifr;
    int rc = nc_if_ioctl(fd, name, SIOCGIFHWADDR, &ifr);
    if (rc < 0)
        return rc;
    memcpy(out, ifr.ifr_hwaddr.sa_data, 6);
    return 0;
}
