"""Helper ``c/netdev.h``: interface MTU and hardware type by ioctl."""

import pathlib

INCLUDES = ""

TYPES = ""

FUNCTIONS = """
#define SIOCGIFMTU ...
#define SIOCGIFHWADDR ...
#define ARPHRD_ETHER ...
#define ARPHRD_LOOPBACK ...
#define IFNAMSIZ ...
int nc_if_mtu(int fd, const char *name);
int nc_if_hatype(int fd, const char *name);
"""

CUSTOMIZATIONS = (pathlib.Path(__file__).parent / "c" / "netdev.h").read_text()
