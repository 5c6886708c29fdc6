"""Checks of a finished service run, shared by the service tests (no root needed)."""

from __future__ import annotations

import threading
from typing import Any

import netring_chan as nc


def our_threads(svc: Any) -> list[threading.Thread]:
    """The service's threads still alive (they are named after it)."""
    return [t for t in threading.enumerate() if t.name.startswith(svc.name + "-")]


def finished(svc: nc.InjectService, **expect: int) -> nc.InjectServiceStats:
    """The stopped injection service's stats: the equality holds, nothing in
    flight, every sink closed, no thread left, fields as expected."""
    st = svc.stats()
    assert st.in_flight == 0 and st.queued == 0, st
    assert st.submitted == st.sent + st.rejected + st.queue_drops + st.discarded, st
    assert st.balanced
    for k, v in expect.items():
        assert getattr(st, k) == v, (k, st)
    assert all(s.closed for s in svc.sinks)
    assert not our_threads(svc)
    return st
