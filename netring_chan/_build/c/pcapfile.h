/* pcap and pcapng records, written and read a whole batch per call.
 * Comes after copyout.h: a read batch is the pickle stream of the packets'
 * bytes described there and the columns of nc_cols_layout, so it becomes an
 * OwnedBatch as a ring block's copy does.
 *
 * Formats: pcap is the classic libpcap format; pcapng follows
 * draft-ietf-opsawg-pcapng (cited below as "pcapng §N"). Every length read
 * from a file is checked against the bytes actually in `buf` before it is
 * used, and against `max_len` before the caller is asked for more. */
#include <stdint.h>
#include <string.h>

#define NC_FMT_PCAP   0
#define NC_FMT_PCAPNG 1

#define NC_PCAP_REC_HDR  16
#define NC_EPB_FIXED     28   /* type, length, interface, ts high, ts low, caplen, origlen */
#define NC_EPB_OPTS      12   /* epb_flags (4 + 4) and opt_endofopt (4) */
#define NC_PAD4(x) (((uint64_t)(x) + 3) & ~(uint64_t)3)

/* pcapng §4.3 epb_flags: bits 0-1 direction (1 inbound, 2 outbound), bits
 * 2-4 reception type (1 unicast, 2 multicast, 3 broadcast, 4 promiscuous).
 * AF_PACKET pkttype: HOST 0, BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4. */
static uint32_t nc_pkttype_flags(uint8_t t)
{
    switch (t) {
    case 0: return 0x1 | (1u << 2);
    case 1: return 0x1 | (3u << 2);
    case 2: return 0x1 | (2u << 2);
    case 3: return 0x1 | (4u << 2);
    case 4: return 0x2;
    default: return 0;
    }
}

static uint8_t nc_flags_pkttype(uint32_t f)
{
    if ((f & 3) == 2)
        return 4;
    switch ((f >> 2) & 7) {
    case 2: return 2;
    case 3: return 1;
    case 4: return 3;
    default: return 0;
    }
}

static void nc_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* In/out state of one nc_file_write call. */
struct nc_wr {
    uint64_t pos;       /* in/out: bytes used in out */
    uint64_t stop_at;   /* stop before a record once pos >= stop_at (size rotation); first record always */
    uint64_t data_off;  /* in/out: offset in data of packet `done` */
    uint32_t done;      /* in/out: packets of the batch written so far */
    uint32_t pad;
};

/* Lay out packets done.. of a batch as whole records (pcap) or enhanced
 * packet blocks (pcapng, host byte order, if_tsresol 9: nanoseconds) into
 * out, until the batch is done, the next record does not fit out_cap, or
 * pos reached stop_at. `data` is the packets' bytes back to back (caplen[i]
 * each); a packet longer than snaplen is cut to it (its wire length kept).
 * pkttype may be NULL (direction unknown: epb_flags 0). Returns the records
 * written by this call. */
static uint32_t nc_file_write(int fmt, uint32_t iface, uint32_t snaplen,
                              const uint8_t *data, const uint64_t *ts,
                              const uint32_t *caplen, const uint32_t *wire_len,
                              const uint8_t *pkttype, uint32_t n,
                              uint8_t *out, uint64_t out_cap, struct nc_wr *st)
{
    uint64_t pos = st->pos, off = st->data_off;
    uint32_t i = st->done, wrote = 0;
    for (; i < n; i++) {
        uint32_t cap = caplen[i] < snaplen ? caplen[i] : snaplen;
        uint32_t wl = wire_len[i] < caplen[i] ? caplen[i] : wire_len[i];
        uint64_t t = ts[i];
        uint64_t rec = fmt == NC_FMT_PCAP ? NC_PCAP_REC_HDR + (uint64_t)cap
                                          : NC_EPB_FIXED + NC_PAD4(cap) + NC_EPB_OPTS + 4;
        uint8_t *p = out + pos;
        if (pos + rec > out_cap || (wrote > 0 && pos >= st->stop_at))
            break;
        if (fmt == NC_FMT_PCAP) {
            nc_put32(p, (uint32_t)(t / 1000000000u));
            nc_put32(p + 4, (uint32_t)(t % 1000000000u));
            nc_put32(p + 8, cap);
            nc_put32(p + 12, wl);
            memcpy(p + 16, data + off, cap);
        } else {
            uint64_t pad = NC_PAD4(cap) - cap;
            uint8_t *o;
            nc_put32(p, 6);
            nc_put32(p + 4, (uint32_t)rec);
            nc_put32(p + 8, iface);
            nc_put32(p + 12, (uint32_t)(t >> 32));
            nc_put32(p + 16, (uint32_t)t);
            nc_put32(p + 20, cap);
            nc_put32(p + 24, wl);
            memcpy(p + 28, data + off, cap);
            o = p + 28 + cap;
            memset(o, 0, pad);
            o += pad;
            nc_put32(o, 2 | (4u << 16));  /* epb_flags: code 2, length 4 (pcapng §4.3.1) */
            nc_put32(o + 4, pkttype ? nc_pkttype_flags(pkttype[i]) : 0);
            nc_put32(o + 8, 0);           /* opt_endofopt */
            nc_put32(o + 12, (uint32_t)rec);
        }
        pos += rec;
        off += caplen[i];
        wrote++;
    }
    st->pos = pos;
    st->data_off = off;
    st->done = i;
    return wrote;
}

/* ---- reading ------------------------------------------------------------ */

/* One interface of a section: the timestamp unit as num/den nanoseconds
 * (if_tsresol), if_tsoffset in ns, the link type. */
struct nc_iface {
    uint64_t num;
    uint64_t den;
    int64_t off_ns;
    uint32_t snaplen;
    uint32_t linktype;
};

struct nc_rd {
    uint64_t pos;       /* in/out: offset in buf of the next record */
    uint64_t need;      /* out (MORE, BIG_OUT): bytes the next record needs, from pos */
    uint64_t ts_limit;  /* in: stop before a packet later than this (recorded pace) */
    uint64_t next_ts;   /* out (LATER): that packet's time */
    uint64_t out_used;  /* out: bytes of the pickle stream */
    uint64_t bad;       /* out (errors): the offending value */
    uint32_t n;         /* out: packets in the batch */
    uint32_t pad;
};

#define NC_RD_FULL      0   /* max_pkts packets, or the next does not fit out */
#define NC_RD_MORE      1   /* the next record is not whole in buf: need bytes */
#define NC_RD_OTHER     2   /* pcapng: a block other than a packet block at pos */
#define NC_RD_LATER     3   /* the next packet is later than ts_limit */
#define NC_RD_BIG_OUT   4   /* the next packet alone needs `need` bytes of out */
#define NC_RD_E_LEN    (-1) /* a length field out of range (bad = the length) */
#define NC_RD_E_IFACE  (-2) /* a packet of an interface not described (bad = its id) */
#define NC_RD_E_TRAIL  (-3) /* pcapng: trailing block length differs (bad = it) */
#define NC_RD_E_CAPLEN (-4) /* captured length larger than its block (bad = it) */

static uint32_t nc_rd32(const uint8_t *p, int swapped)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return swapped ? __builtin_bswap32(v) : v;
}

static uint16_t nc_rd16(const uint8_t *p, int swapped)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return swapped ? __builtin_bswap16(v) : v;
}

static uint64_t nc_scale(uint64_t t, const struct nc_iface *f)
{
    unsigned __int128 v = (unsigned __int128)t * f->num / (f->den ? f->den : 1);
    return (uint64_t)v + (uint64_t)f->off_ns;
}

/* Parse packet records from buf[pos..len) into a batch: the packets' bytes
 * as a pickle stream into out (see copyout.h) and their metadata
 * into cols, laid out by nc_cols_layout for the number of packets found
 * (cols must hold the layout of max_pkts). pcap: ifs[0] describes the file
 * (num/den scale the fraction field to ns). pcapng: enhanced (§4.3), simple
 * (§4.4) and obsolete packet blocks (Appendix A); any other block stops the
 * walk (NC_RD_OTHER) for the caller. max_len bounds every record. Returns a
 * status NC_RD_*; st->n packets are in the batch whatever the status. */
static int nc_file_read(int fmt, int swapped, const struct nc_iface *ifs, uint32_t nifs,
                        const uint8_t *buf, uint64_t len, uint32_t max_pkts, uint64_t max_len,
                        uint8_t *out, uint64_t out_cap, uint8_t *cols, struct nc_rd *st)
{
    uint64_t offs[NC_NCOLS + 1], fin[NC_NCOLS + 1];
    static const uint8_t width[NC_NCOLS] = {8, 4, 4, 4, 4, 4, 2, 2, 2, 2, 1, 1, 8};
    uint64_t pos = st->pos, o = 2;
    uint32_t n = 0;
    int rc = NC_RD_FULL;
    int c;
    nc_cols_layout(max_pkts, offs);
    out[0] = ']';   /* EMPTY_LIST */
    out[1] = '(';   /* MARK */
    while (n < max_pkts) {
        const uint8_t *p = buf + pos, *d;
        uint64_t left = len - pos, t;
        uint32_t cap, wl, ifid = 0, flags = 0, lt;
        uint16_t proto = 0;
        uint8_t halen = 0, addr[8] = {0};
        if (fmt == NC_FMT_PCAP) {
            if (left < NC_PCAP_REC_HDR) { st->need = NC_PCAP_REC_HDR; rc = NC_RD_MORE; break; }
            cap = nc_rd32(p + 8, swapped);
            wl = nc_rd32(p + 12, swapped);
            if (cap > max_len) { st->bad = cap; rc = NC_RD_E_LEN; break; }
            if (left < NC_PCAP_REC_HDR + (uint64_t)cap) {
                st->need = NC_PCAP_REC_HDR + (uint64_t)cap; rc = NC_RD_MORE; break;
            }
            t = (uint64_t)nc_rd32(p, swapped) * 1000000000u
                + nc_scale(nc_rd32(p + 4, swapped), &ifs[0]);
            d = p + NC_PCAP_REC_HDR;
            st->need = NC_PCAP_REC_HDR + (uint64_t)cap;
        } else {
            uint32_t type, blen, trail;
            if (left < 8) { st->need = 8; rc = NC_RD_MORE; break; }
            type = nc_rd32(p, swapped);
            blen = nc_rd32(p + 4, swapped);
            if (type != 6 && type != 3 && type != 2) { rc = NC_RD_OTHER; break; }
            /* pcapng §3.1: a block is at least 12 bytes and a multiple of 4 */
            if (blen < 12 || (blen & 3) || blen > max_len) { st->bad = blen; rc = NC_RD_E_LEN; break; }
            if (left < blen) { st->need = blen; rc = NC_RD_MORE; break; }
            trail = nc_rd32(p + blen - 4, swapped);
            if (trail != blen) { st->bad = trail; rc = NC_RD_E_TRAIL; break; }
            if (type == 3) {  /* simple packet block §4.4: interface 0, no timestamp */
                if (blen < 16 || nifs == 0) { st->bad = nifs ? blen : 0; rc = nifs ? NC_RD_E_LEN : NC_RD_E_IFACE; break; }
                wl = nc_rd32(p + 8, swapped);
                cap = wl;
                if (ifs[0].snaplen && cap > ifs[0].snaplen)
                    cap = ifs[0].snaplen;
                if (cap > blen - 16)
                    cap = blen - 16;
                t = 0;
                d = p + 12;
            } else {
                uint64_t hdr = 28, optoff;
                uint32_t tsh, tsl;
                if (type == 6) {
                    if (blen < 32) { st->bad = blen; rc = NC_RD_E_LEN; break; }
                    ifid = nc_rd32(p + 8, swapped);
                } else {  /* obsolete packet block (Appendix A): 16-bit interface, drops */
                    if (blen < 32) { st->bad = blen; rc = NC_RD_E_LEN; break; }
                    ifid = nc_rd16(p + 8, swapped);
                }
                tsh = nc_rd32(p + 12, swapped);
                tsl = nc_rd32(p + 16, swapped);
                cap = nc_rd32(p + 20, swapped);
                wl = nc_rd32(p + 24, swapped);
                if (ifid >= nifs) { st->bad = ifid; rc = NC_RD_E_IFACE; break; }
                if ((uint64_t)hdr + cap + 4 > blen) { st->bad = cap; rc = NC_RD_E_CAPLEN; break; }
                t = nc_scale(((uint64_t)tsh << 32) | tsl, &ifs[ifid]);
                d = p + hdr;
                /* options (§3.5): code, length, value padded to 32 bits */
                optoff = hdr + NC_PAD4(cap);
                while (optoff + 4 <= (uint64_t)blen - 4) {
                    uint16_t code = nc_rd16(p + optoff, swapped);
                    uint16_t olen = nc_rd16(p + optoff + 2, swapped);
                    if (code == 0 || optoff + 4 + NC_PAD4(olen) > (uint64_t)blen - 4)
                        break;
                    if (code == 2 && olen == 4 && type == 6)
                        flags = nc_rd32(p + optoff + 4, swapped);
                    optoff += 4 + NC_PAD4(olen);
                }
            }
            st->need = blen;
        }
        if (st->ts_limit != UINT64_MAX && t > st->ts_limit) {
            st->next_ts = t;
            rc = NC_RD_LATER;
            break;
        }
        if (o + 5 + (uint64_t)cap + 2 > out_cap) {
            if (n == 0) { st->need = 7 + (uint64_t)cap; rc = NC_RD_BIG_OUT; }
            break;
        }
        if (cap < 256) {
            out[o++] = 'C';   /* SHORT_BINBYTES */
            out[o++] = (uint8_t)cap;
        } else {
            out[o++] = 'B';   /* BINBYTES, little-endian u32 length */
            out[o++] = (uint8_t)cap;
            out[o++] = (uint8_t)(cap >> 8);
            out[o++] = (uint8_t)(cap >> 16);
            out[o++] = (uint8_t)(cap >> 24);
        }
        memcpy(out + o, d, cap);
        o += cap;
        lt = fmt == NC_FMT_PCAP ? ifs[0].linktype : ifs[ifid].linktype;
        if (lt == 1 && cap >= 14) {  /* Ethernet: EtherType and source address, as AF_PACKET gives */
            proto = (uint16_t)((d[12] << 8) | d[13]);
            halen = 6;
            memcpy(addr, d + 6, 6);
        }
        {
            uint32_t zero = 0;
            uint16_t lt16 = (uint16_t)lt, z16 = 0;
            int32_t ifi = (int32_t)ifid;
            memcpy(cols + offs[0] + 8 * (uint64_t)n, &t, 8);
            memcpy(cols + offs[1] + 4 * (uint64_t)n, &cap, 4);
            memcpy(cols + offs[2] + 4 * (uint64_t)n, &wl, 4);
            memcpy(cols + offs[3] + 4 * (uint64_t)n, &zero, 4);
            memcpy(cols + offs[4] + 4 * (uint64_t)n, &zero, 4);
            memcpy(cols + offs[5] + 4 * (uint64_t)n, &ifi, 4);
            memcpy(cols + offs[6] + 2 * (uint64_t)n, &proto, 2);
            memcpy(cols + offs[7] + 2 * (uint64_t)n, &lt16, 2);
            memcpy(cols + offs[8] + 2 * (uint64_t)n, &z16, 2);
            memcpy(cols + offs[9] + 2 * (uint64_t)n, &z16, 2);
            cols[offs[10] + n] = nc_flags_pkttype(flags);
            cols[offs[11] + n] = halen;
            memcpy(cols + offs[12] + 8 * (uint64_t)n, addr, 8);
        }
        pos += st->need;
        n++;
    }
    out[o++] = 'e';   /* APPENDS */
    out[o++] = '.';   /* STOP */
    /* Columns to the layout for n packets: each moves down (widest first). */
    nc_cols_layout(n, fin);
    for (c = 0; c < NC_NCOLS; c++)
        if (fin[c] != offs[c])
            memmove(cols + fin[c], cols + offs[c], (uint64_t)width[c] * n);
    st->pos = pos;
    st->out_used = o;
    st->n = n;
    return rc;
}
