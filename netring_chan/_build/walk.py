"""Helper ``c/walk.h``: walk a TPACKET_V3 RX block into struct nc_pkt records."""

import pathlib

INCLUDES = ""

# struct nc_pkt and struct nc_block_info are written once, in c/walk.h; the
# build copies their definitions into the cdef.
C_STRUCTS = ("nc_pkt", "nc_block_info")

TYPES = ""

FUNCTIONS = """
#define NC_MIN_RECORD ...
#define NC_E_SHORT_BLOCK ...
#define NC_E_BLOCK_LEN ...
#define NC_E_TOO_MANY ...
#define NC_E_HDR_BOUNDS ...
#define NC_E_DATA_BOUNDS ...
#define NC_E_NEXT_OFFSET ...
#define NC_E_MISALIGNED ...
uint32_t nc_block_status(const void *blk);
void nc_block_release(void *blk);
int nc_walk_block(const uint8_t *blk, uint64_t blk_size, struct nc_pkt *out,
                  uint32_t cap, struct nc_block_info *info);
void nc_data_bounds(const struct nc_pkt *pk, uint32_t n, uint32_t snap_limit,
                    uint32_t *starts, uint32_t *ends);
"""

CUSTOMIZATIONS = (pathlib.Path(__file__).parent / "c" / "walk.h").read_text()
