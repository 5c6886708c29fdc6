"""<linux/filter.h>: classic BPF programs for SO_ATTACH_FILTER."""

INCLUDES = """
#include <linux/filter.h>
"""

TYPES = """
struct sock_filter {
    uint16_t code;
    uint8_t jt;
    uint8_t jf;
    uint32_t k;
    ...;
};
struct sock_fprog {
    unsigned short len;
    struct sock_filter *filter;
    ...;
};
"""

FUNCTIONS = """
#define BPF_MAXINSNS ...
"""

CUSTOMIZATIONS = """
"""
