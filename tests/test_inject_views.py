"""TX slot views that outlive their slot (``TxSlot.data`` slices) against the real kernel.

A slice of ``slot.data`` kept past ``send()``/``discard()`` pins its slot:
the slot is not handed to a later frame while the slice lives, so the slice
keeps reading its own frame, and because the kernel sends strictly in ring
order the producer waits at that slot (``RingFullError`` naming it on
timeout) until the slice is dropped. Frames are checked on ``lab.b`` with a
stdlib AF_PACKET socket (``Receiver``), byte for byte and in order.
"""

from __future__ import annotations

import gc
import threading
import time

import pytest

from inject_helpers import Receiver, loss_report, seq_frame, softnet_drops
import netring_chan as nc
from netring_chan._lowlevel import ffi
from netring_chan import Injector, RingFullError

SLOTS = 4  # frame_size 2048: two slots per 4 KiB block, two blocks


def _allocate_send(inj: Injector, f: bytes, timeout: float | None = None) -> int:
    with inj.allocate(len(f), timeout=timeout) as slot:
        slot.data[:] = f
        slot.send()
        return slot.index


def _producer(inj: Injector, frames: list[bytes], errors: list[BaseException]) -> None:
    try:
        for i, f in enumerate(frames):
            if i % 2:
                _allocate_send(inj, f)
            else:
                inj.send(f)
        inj.flush()
    except BaseException as e:  # handed to the test thread
        errors.append(e)


@pytest.mark.parametrize("pinned_seq", [0, 2])
def test_slice_kept_after_send_pins_its_slot_until_dropped(lab, pinned_seq):
    frames = [seq_frame(i, 60 + 37 * i) for i in range(4 * SLOTS + 3)]
    sn = softnet_drops()
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=SLOTS) as inj:
        assert inj.frame_count == SLOTS
        # Frames up to the pinned one; a slice of the pinned frame is kept.
        for f in frames[:pinned_seq]:
            _allocate_send(inj, f)
        f = frames[pinned_seq]
        with inj.allocate(len(f)) as slot:
            slot.data[:] = f
            kept = slot.data[10:40]
            pinned_idx = slot.index
            slot.send()
        with pytest.raises(nc.ClosedError):
            slot.data
        # Every other slot can still be used once: the ring wraps up to the pin.
        upto = pinned_seq + SLOTS
        for f in frames[pinned_seq + 1:upto]:
            assert _allocate_send(inj, f) != pinned_idx
        assert inj.wait_drained(5.0)
        assert rx.wait_for(upto) == frames[:upto]
        # The next frame in ring order would reuse the pinned slot: it waits.
        with pytest.raises(RingFullError, match=f"pins slot {pinned_idx}\\b"):
            inj.allocate(100, timeout=0.2)
        with pytest.raises(RingFullError, match=f"pins slot {pinned_idx}\\b"):
            inj.send(frames[upto], timeout=0.1)
        assert inj.try_send(frames[upto]) is False
        assert bytes(kept) == frames[pinned_seq][10:40]  # still its own frame's bytes

        errors: list[BaseException] = []
        t = threading.Thread(target=_producer, args=(inj, frames[upto:], errors))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()  # back-pressure: the producer waits at the pinned slot
        assert rx.settle(0.1) == frames[:upto]  # and nothing more went out
        assert bytes(kept) == frames[pinned_seq][10:40]
        del kept  # lifts the pin: the producer goes on
        t.join(5.0)
        assert not t.is_alive() and errors == []
        assert inj.wait_drained(5.0)
        got = rx.wait_for(len(frames))
        st = inj.stats()
    assert got == frames, loss_report(lab, got, frames, sn)
    assert rx.settle(0.1) == frames  # nothing extra, nothing twice
    assert (st.queued, st.sent, st.rejected, st.pending) == (len(frames), len(frames), 0, 0)
    assert st.ring_full >= 3


def test_slice_kept_after_discard_pins_the_slot_the_next_allocation_would_get(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=SLOTS) as inj:
        _allocate_send(inj, seq_frame(0, 80))
        with inj.allocate(100) as slot:
            idx = slot.index
            slot.data[:] = seq_frame(666, 100)  # never sent
            kept = slot.data[14:30]
        # discard() leaves the head where it is: the same slot is next, and pinned.
        full0 = inj.stats().ring_full
        with pytest.raises(RingFullError, match=f"slice of TxSlot.data\\) pins slot {idx}\\b"):
            inj.allocate(100, timeout=0.2)
        assert inj.try_send(seq_frame(1, 60)) is False
        assert inj.stats().ring_full == full0 + 2
        assert bytes(kept) == seq_frame(666, 100)[14:30]
        del kept
        with inj.allocate(100) as slot:
            assert slot.index == idx  # reused once the slice is gone
            slot.data[:] = seq_frame(1, 100)
            slot.send()
        inj.send(seq_frame(2, 61))
        assert inj.wait_drained(2.0)
        got = rx.settle(0.2)
    assert got == [seq_frame(0, 80), seq_frame(1, 100), seq_frame(2, 61)]


def test_casts_and_exporters_of_the_view_pin_too(lab):
    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=SLOTS) as inj:
        with inj.allocate(64) as slot:
            slot.data[:] = seq_frame(0, 64)
            exp = ffi.from_buffer("uint8_t[]", slot.data)  # exports the view: release() cannot end it
            words = slot.data[:32].cast("H")
            idx = slot.index
            slot.send()
        with pytest.raises(nc.ClosedError):
            slot.data
        for i in range(1, SLOTS):
            _allocate_send(inj, seq_frame(i, 64))
        assert inj.wait_drained(2.0)
        with pytest.raises(RingFullError, match=f"pins slot {idx}\\b"):
            inj.allocate(64, timeout=0.1)
        assert bytes(ffi.buffer(exp)) == seq_frame(0, 64)
        del exp  # the cast still pins
        with pytest.raises(RingFullError, match=f"pins slot {idx}\\b"):
            inj.allocate(64, timeout=0.1)
        assert words.tobytes() == seq_frame(0, 64)[:32]
        del words
        assert _allocate_send(inj, seq_frame(SLOTS, 64), timeout=1.0) == idx
        assert inj.wait_drained(2.0)
        got = rx.settle(0.2)
    assert got == [seq_frame(i, 64) for i in range(SLOTS + 1)]


def test_slice_held_only_by_a_reference_cycle_is_collected_by_the_waiting_producer(lab):
    class Holder:
        pass

    with Receiver(lab.b) as rx, Injector(lab.a, frame_count=SLOTS) as inj:
        was = gc.isenabled()
        gc.disable()  # only the injector's own collection can free the cycle
        try:
            with inj.allocate(100) as slot:
                slot.data[:] = seq_frame(0, 100)
                h = Holder()
                h.me = h  # type: ignore[attr-defined]
                h.view = slot.data[5:9]  # type: ignore[attr-defined]
                slot.discard()
            del h
            with pytest.raises(RingFullError, match="pins slot"):
                inj.allocate(100, timeout=0)  # the cycle still pins it (no wait, no collection)
            t0 = time.monotonic()
            with inj.allocate(100, timeout=5.0) as slot:
                slot.data[:] = seq_frame(1, 100)
                slot.send()
            assert time.monotonic() - t0 < 2.0
        finally:
            if was:
                gc.enable()
        assert inj.wait_drained(2.0)
        got = rx.settle(0.2)
    assert got == [seq_frame(1, 100)]


def test_close_wakes_a_producer_waiting_on_a_pin_and_defers_the_unmap(lab):
    inj = Injector(lab.a, frame_count=SLOTS)
    mapping = inj._mapping
    assert mapping is not None
    with inj.allocate(100) as slot:
        slot.data[:] = seq_frame(0, 100)
        kept = slot.data[:]
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            inj.allocate(100)  # no timeout: waits for the pin
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.2)
    assert t.is_alive()
    t0 = time.monotonic()
    inj.close()
    t.join(2.0)
    assert not t.is_alive() and time.monotonic() - t0 < 1.0
    assert len(errors) == 1 and isinstance(errors[0], nc.ClosedError), errors
    assert not mapping.unmapped  # the kept slice still addresses the ring
    assert bytes(kept) == seq_frame(0, 100)
    del kept
    assert mapping.unmapped
