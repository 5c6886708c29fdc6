/* TX ring (PACKET_TX_RING, TPACKET_V2).
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
 * when the socket asked for TX timestamps; they are masked off
 * (TP_STATUS_TS_SYS_HARDWARE has a fallback in if_packet.py).
 */
#include <stdint.h>
#include <string.h>
#include <linux/if_packet.h>

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
