"""<linux/net_tstamp.h>: SO_TIMESTAMPING flags."""

INCLUDES = """
#include <linux/net_tstamp.h>
"""

TYPES = """
"""

FUNCTIONS = """
#define SOF_TIMESTAMPING_SOFTWARE ...
#define SOF_TIMESTAMPING_RAW_HARDWARE ...
#define SOF_TIMESTAMPING_SYS_HARDWARE ...
"""

CUSTOMIZATIONS = """
"""
