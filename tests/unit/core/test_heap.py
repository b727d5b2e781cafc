"""app/heap.py: a settle collects what is garbage, freezes what lives, and keeps nothing frozen
past the next settle; serve settles at start and the reloader after every swap."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from app import heap


class Node:
    """A container object the collector tracks, able to sit in a reference cycle."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


def scanned(obj: object) -> bool:
    """Whether the collector still scans ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # leave the test process as it was


def test_garbage_cycles_are_collected_not_frozen() -> None:
    node, ref = cycle()
    del node  # a cycle nobody references: only the collector can free it
    gc.disable()  # no automatic collection may free it first
    try:
        settled = heap.settle()
    finally:
        gc.enable()
    assert ref() is None
    assert settled.collected >= 2


def test_what_lives_is_frozen_and_no_longer_scanned() -> None:
    node, _ = cycle()
    assert scanned(node)
    settled = heap.settle()
    assert not scanned(node)
    assert settled.frozen == gc.get_freeze_count() > 0
    assert settled.seconds >= 0
    # A plain collection no longer touches it, and it is still whole.
    gc.collect()
    assert node.other is not None and node.other.other is node


def test_frozen_objects_are_still_freed_by_reference_counting() -> None:
    lone = Node()  # no cycle
    ref = weakref.ref(lone)
    heap.settle()
    del lone
    assert ref() is None  # at once: reference counting does not look at generations


def test_a_frozen_cycle_that_becomes_garbage_is_freed_by_the_next_settle() -> None:
    node, ref = cycle()
    heap.settle()
    del node
    gc.collect()
    assert ref() is not None  # frozen: plain collections never see it...
    heap.settle()
    assert ref() is None  # ...the next settle (a reload) does


def test_settle_uses_the_clock_given() -> None:
    ticks = iter((10.0, 10.25))
    assert heap.settle(lambda: next(ticks)).seconds == pytest.approx(0.25)
