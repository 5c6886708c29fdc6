#include <errno.h>
#include <poll.h>

/* One poll on the ring fd and a wake-up eventfd. Returns a bit set
 * (1: fd ready, 2: woken, 4: fd error/hangup) or -errno; -EINTR goes back to
 * Python so that signal handlers run and the retry recomputes the deadline. */
static int nc_poll2(int fd, short events, int wake_fd, int timeout_ms)
{
    struct pollfd p[2];
    int r, res = 0;
    p[0].fd = fd; p[0].events = events; p[0].revents = 0;
    p[1].fd = wake_fd; p[1].events = POLLIN; p[1].revents = 0;
    r = poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
    if (r < 0)
        return -errno;
    if (p[0].revents & events)
        res |= 1;
    if (p[0].revents & (POLLERR | POLLHUP | POLLNVAL))
        res |= 4;
    if (wake_fd >= 0 && p[1].revents)
        res |= 2;
    return res;
}
