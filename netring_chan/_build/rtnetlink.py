"""<linux/rtnetlink.h>: enough of rtnetlink to ask one interface's
attributes (RTM_GETLINK) over an ``AF_NETLINK`` socket.

Used by ``netring_chan.rings.xdp.program`` for the interface's RX queue
count (IFLA_NUM_RX_QUEUES): a netlink socket answers for the network
namespace of the thread that created it, which is what the rest of the
library binds to (sysfs shows the namespace it was mounted in instead).
The socket itself is the stdlib's; only the layouts come from here.
"""

INCLUDES = """
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
"""

TYPES = """
struct nlmsghdr {
    uint32_t nlmsg_len;
    uint16_t nlmsg_type;
    uint16_t nlmsg_flags;
    uint32_t nlmsg_seq;
    uint32_t nlmsg_pid;
    ...;
};
struct nlmsgerr {
    int error;
    ...;
};
struct ifinfomsg {
    unsigned char ifi_family;
    unsigned short ifi_type;
    int ifi_index;
    unsigned int ifi_flags;
    unsigned int ifi_change;
    ...;
};
struct rtattr {
    unsigned short rta_len;
    unsigned short rta_type;
    ...;
};
"""

FUNCTIONS = """
#define NETLINK_ROUTE ...
#define NLM_F_REQUEST ...
#define NLMSG_ERROR ...
#define NLMSG_DONE ...
#define NLMSG_ALIGNTO ...
#define RTA_ALIGNTO ...
#define RTM_NEWLINK ...
#define RTM_GETLINK ...
#define IFLA_NUM_RX_QUEUES ...
"""

CUSTOMIZATIONS = """
"""
