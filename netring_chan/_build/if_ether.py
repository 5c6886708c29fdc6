"""<linux/if_ether.h>: Ethernet protocol ids and frame sizes."""

INCLUDES = """
#include <linux/if_ether.h>
"""

TYPES = """
"""

FUNCTIONS = """
#define ETH_P_ALL ...
#define ETH_P_IP ...
#define ETH_P_8021Q ...
#define ETH_HLEN ...
#define ETH_ZLEN ...
"""

CUSTOMIZATIONS = """
"""
