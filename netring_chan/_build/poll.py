"""Helper ``c/poll.h``: one poll(2) on a ring fd and a wake-up eventfd."""

import pathlib

INCLUDES = ""

TYPES = ""

FUNCTIONS = """
int nc_poll2(int fd, short events, int wake_fd, int timeout_ms);
"""

CUSTOMIZATIONS = (pathlib.Path(__file__).parent / "c" / "poll.h").read_text()
