"""_torch.free_memory between iterations: after freeze_long_lived it scans only what the
iterations made, and still collects every piece of their garbage before the next iteration."""

import gc
import weakref

from fastprof import _torch


class _Node:
    def __init__(self):
        self.me = self  # a reference cycle: only the garbage collector frees it


def _iteration_garbage():
    """An iteration's leftovers: a cycle, kept alive through several automatic collections so
    that it reaches the oldest generation, then dropped."""
    node = _Node()
    gc.collect(0)
    gc.collect(1)
    return weakref.ref(node)


def test_garbage_of_an_iteration_is_collected_before_the_next_one():
    long_lived = [_Node() for _ in range(100)]
    try:
        frozen = _torch.freeze_long_lived()
        assert frozen >= len(long_lived) and gc.get_freeze_count() == frozen
        for _ in range(3):  # iterations
            ref = _iteration_garbage()
            assert ref() is not None  # not collected yet
            _torch.free_memory()
            assert ref() is None, "an iteration's cyclic garbage survived free_memory"
        # The collection scans only what is not frozen: far fewer objects than the heap.
        assert len(gc.get_objects()) < frozen / 10
    finally:
        _torch.thaw_long_lived()
    assert gc.get_freeze_count() == 0


def test_frozen_cycles_are_collected_once_thawed():
    node = _Node()
    ref = weakref.ref(node)
    try:
        _torch.freeze_long_lived()
        del node  # a model dropped while frozen
        _torch.free_memory()
        assert ref() is not None  # frozen: not scanned
    finally:
        _torch.thaw_long_lived()
    gc.collect()
    assert ref() is None


def test_thaw_without_freeze_leaves_a_freeze_of_someone_else():
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        _torch.thaw_long_lived()  # it did not freeze: nothing to undo
        assert gc.get_freeze_count() == count
    finally:
        gc.unfreeze()


def test_overlapping_measurements_thaw_when_the_last_one_ends():
    """Two measurements whose iterations alternate both freeze; the heap stays frozen until the
    second one thaws (force thaws at once, as after a failure)."""
    try:
        _torch.freeze_long_lived()
        _torch.freeze_long_lived()
        _torch.thaw_long_lived()
        assert gc.get_freeze_count() > 0
        _torch.thaw_long_lived()
        assert gc.get_freeze_count() == 0
        _torch.freeze_long_lived()
        _torch.freeze_long_lived()
        _torch.thaw_long_lived(force=True)
        assert gc.get_freeze_count() == 0
        _torch.thaw_long_lived()  # nothing left to thaw
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
