"""The long-running processes' collector settings (heap.py): less often, never not at all."""

from __future__ import annotations

import gc
import weakref

from medmesh.heap import YOUNG_GENERATION_ALLOCATIONS, long_lived_heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _garbage_cycle() -> weakref.ref[_Node]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_a_garbage_cycle_is_still_collected_within_a_young_generation() -> None:
    with long_lived_heap():
        gone = _garbage_cycle()
        assert gone() is not None  # only the collector frees a cycle
        keep = [[] for _ in range(YOUNG_GENERATION_ALLOCATIONS + 100)]
        assert gone() is None
        del keep


def test_what_existed_before_is_frozen_and_everything_is_restored_after() -> None:
    before = gc.get_threshold()
    with long_lived_heap():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] == YOUNG_GENERATION_ALLOCATIONS
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
