"""Helper ``c/copyout.h``: owned copies of a walked batch (the columns layout; the pcap reader's pickle stream)."""

import pathlib

INCLUDES = ""

TYPES = ""

FUNCTIONS = """
#define NC_NCOLS ...
uint64_t NC_STREAM_OVERHEAD(uint32_t n);
void nc_cols_layout(uint32_t n, uint64_t *offs);
"""

CUSTOMIZATIONS = (pathlib.Path(__file__).parent / "c" / "copyout.h").read_text()
