/* Comes after walk.h: it reads struct nc_pkt. */
#include <stdint.h>
#include <string.h>

/* Owned copies. The columns: metadata as a struct-of-arrays area `cols`
 * laid out by nc_cols_layout, read from Python as typed memoryviews (a ring
 * block's owned copy is made by netring_chan._fastpath.own with them). The
 * pcap reader's packet bytes are written as a pickle stream of a list of
 * bytes objects (EMPTY_LIST MARK {SHORT_BINBYTES|BINBYTES len data}* APPENDS
 * STOP): only length-prefixed opcodes, so packet contents can never be read
 * as opcodes, and the stdlib's C unpickler then makes every packet's bytes
 * object at a fraction of the cost of slicing in Python. */
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

/* Row i of the columns: packet p's metadata, its captured length len. */
static void nc_put_row(const struct nc_pkt *p, uint32_t i, uint32_t len, uint8_t *cols,
                       const uint64_t *offs)
{
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
