/* Interface facts by ioctl on any socket of the right network namespace. */
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <net/if_arp.h>

static int nc_if_ioctl(int fd, const char *name, unsigned long req, struct ifreq *ifr)
{
    memset(ifr, 0, sizeof(*ifr));
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, req, ifr) < 0)
        return -errno;
    return 0;
}

/* MTU of an interface in fd's network namespace, or -errno. */
static int nc_if_mtu(int fd, const char *name)
{
    struct ifreq ifr;
    int rc = nc_if_ioctl(fd, name, SIOCGIFMTU, &ifr);
    return rc < 0 ? rc : ifr.ifr_mtu;
}

/* ARPHRD_* type of an interface, or -errno. */
static int nc_if_hatype(int fd, const char *name)
{
    struct ifreq ifr;
    int rc = nc_if_ioctl(fd, name, SIOCGIFHWADDR, &ifr);
    return rc < 0 ? rc : ifr.ifr_hwaddr.sa_family;
}
