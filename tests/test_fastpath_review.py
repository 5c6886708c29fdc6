"""Hostile inputs to the C entry points of ``netring_chan._fastpath``, without root.

Each of these once crashed the interpreter, leaked, or raised the wrong
error: a Python callback run while C held a borrowed reference, a cursor
whose ``it`` is no iterator, ``throw`` of something that is no exception,
a re-entrant ``__anext__`` while the previous step was being freed, and
(3.12+) the reused ``StopIteration`` keeping the exception being handled
alive. Plus a hypothesis fuzz of every constructor and method with random
arguments: an exception, never a crash.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import types
import weakref
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import netring_chan as nc
from netring_chan._fastpath import PacketAiter, PacketBase, Packets, Step
from netring_chan.packet import PacketCursor

pytestmark = pytest.mark.unprivileged


def test_packets_survive_a_timestamp_iterator_that_empties_the_data_list() -> None:
    datas = [bytes([i]) * (1 << 20) for i in range(3)]

    def stamps() -> Any:
        for i in range(3):
            datas.clear()  # drops the only reference to the row's bytes
            yield i

    pkts = list(Packets(nc.OwnedPacket, datas, stamps(), None))
    # row 0 was read before the list emptied; it is whole, and nothing follows
    assert [(p.data, p.timestamp_ns) for p in pkts] == [(bytes([0]) * (1 << 20), 0)]


def test_a_cursor_whose_it_is_no_iterator_raises_type_error() -> None:
    class Cursor:
        it = 5

    async def slow() -> Any:
        raise AssertionError("not reached")

    step = PacketAiter(Cursor(), slow).__anext__()
    with pytest.raises(TypeError, match="it must be an iterator or None, got 5"):
        step.send(None)  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [3, None, int, "s"])
def test_throw_of_a_non_exception_into_an_unstarted_step_is_a_type_error(bad: Any) -> None:
    cur = PacketCursor()
    cur.it = iter([1])
    step = PacketAiter(cur, None).__anext__()
    with pytest.raises(TypeError, match="exceptions must be classes or instances deriving from BaseException"):
        step.throw(bad)  # type: ignore[attr-defined]
    assert next(cur.it) == 1  # nothing taken


@types.coroutine
def _suspend() -> Any:
    yield "suspended"


def test_reentrant_anext_while_the_previous_step_is_freed_leaks_nothing() -> None:
    class Stream(PacketAiter):
        def __init__(self) -> None:
            self.cur = PacketCursor()
            super().__init__(self.cur)

        async def _next_slow(self) -> Any:
            try:
                await _suspend()
            finally:  # runs while the step holding this coroutine is freed
                self.__anext__()

    s = Stream()
    alive = weakref.ref(s)
    first = s.__anext__()
    assert first.send(None) == "suspended"  # type: ignore[attr-defined]
    del first  # now only the stream holds that step (and its suspended coroutine)
    second = s.__anext__()  # replaces it: the coroutine's finally runs meanwhile
    del second, s
    gc.collect()
    assert alive() is None


class _Handled(Exception):
    pass


class _Held:
    pass


def test_awaiting_a_step_inside_except_keeps_nothing_alive() -> None:
    class Pkt:
        pass

    def one() -> Any:
        yield Pkt()

    async def main() -> tuple[weakref.ref[Any], weakref.ref[Any]]:
        cur = PacketCursor()
        ait = PacketAiter(cur, None)
        try:
            raise _Handled
        except _Handled as e:
            e.held = _Held()  # type: ignore[attr-defined]
            held = weakref.ref(e.held)  # type: ignore[attr-defined]
            cur.it = one()
            p = await ait.__anext__()
        pkt = weakref.ref(p)
        del p
        cur.it = None
        return held, pkt

    held, pkt = asyncio.run(main())
    gc.collect()
    assert held() is None  # the handled exception (its traceback, frames) is not kept
    if sys.version_info < (3, 12):
        assert pkt() is None
    # 3.12+: the reused StopIteration holds the last packet it carried until
    # it carries the next (one packet per process, by design; see fastpath.c)


# -- fuzz ---------------------------------------------------------------------

_anything = st.one_of(
    st.none(), st.integers(), st.integers(min_value=-2**70, max_value=2**70), st.text(max_size=3),
    st.binary(max_size=8), st.floats(allow_nan=False), st.lists(st.binary(max_size=4), max_size=4),
    st.tuples(st.integers()), st.sampled_from([int, bytes, KeyError, KeyError("k"), StopIteration,
                                              PacketBase, nc.OwnedPacket, object(), iter([1, 2]),
                                              (lambda: None), print]),
)


def _call(fn: Any, *args: Any) -> None:
    try:
        r = fn(*args)
        if isinstance(r, Packets):
            list(r)
    except Exception:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.lists(_anything, max_size=5), st.lists(_anything, max_size=5))
def test_fuzz_the_c_entry_points_raise_never_crash(args: list[Any], more: list[Any]) -> None:
    _call(PacketBase, *args)
    _call(Packets, *args)
    _call(Packets, nc.OwnedPacket, *args)
    _call(Packets, nc.OwnedPacket, list(args), iter(more), None)
    _call(PacketAiter, *args)

    class Cursor:
        it = args[0] if args else None

    for slow in (None, *args[:1]):
        try:
            ait = PacketAiter(Cursor(), slow)
        except TypeError:
            continue
        step = ait.__anext__()
        _call(step.send, *more[:1])
        _call(step.throw, *more[:3])
        _call(step.close)
        _call(step.send, None)
        _call(next, ait.__anext__())
    _call(Step().send, None)
    _call(Step().throw, *args[:3])


def test_what_only_the_old_tuple_gave_is_gone_as_the_changelog_says() -> None:
    p, q = nc.OwnedPacket.make(b"b", 2), nc.OwnedPacket.make(b"a", 1)
    assert not isinstance(p, tuple)
    with pytest.raises(TypeError):
        len(p)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        p[0]  # type: ignore[index]
    with pytest.raises(TypeError):
        sorted([p, q])  # type: ignore[type-var]
    # what stays: fields, equality, hash, pickling
    assert p == nc.OwnedPacket.make(b"b", 2) and hash(p) == hash(nc.OwnedPacket.make(b"b", 2))
