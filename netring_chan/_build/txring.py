"""Helper ``c/txring.h``: slots of a PACKET_TX_RING (TPACKET_V2) and their status."""

import pathlib

INCLUDES = ""

# Written once, in c/txring.h; the build copies it into the cdef.
C_STRUCTS = ("nc_txring",)

TYPES = ""

FUNCTIONS = """
#define NC_TX_DATA_OFF ...
#define NC_TX_TS_MASK ...
uint8_t *nc_tx_frame(const struct nc_txring *r, uint32_t i);
uint32_t nc_tx_status(const void *frame);
void nc_tx_set(void *frame, uint32_t status);
void nc_tx_publish(void *frame, const uint8_t *src, uint32_t len);
void nc_tx_publish_many(const struct nc_txring *r, uint32_t from, const uint8_t *src,
                        const uint32_t *lens, uint32_t k);
uint32_t nc_tx_taken(const struct nc_txring *r, uint32_t from, uint32_t n);
uint32_t nc_tx_reap(const struct nc_txring *r, uint32_t from, uint32_t n);
void nc_tx_remove(const struct nc_txring *r, uint32_t w, uint32_t n);
"""

CUSTOMIZATIONS = (pathlib.Path(__file__).parent / "c" / "txring.h").read_text()
