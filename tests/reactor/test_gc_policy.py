"""The serving node's collector policy: boot objects frozen, thresholds raised, cyclic garbage still collected."""

from __future__ import annotations

import gc
import weakref

from reactor.gc_policy import SERVING_THRESHOLDS, tune_for_serving


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_tuning_freezes_what_exists_raises_thresholds_and_still_collects_later_cycles() -> None:
    booted = Node()
    before = tune_for_serving()
    try:
        assert gc.get_threshold() == SERVING_THRESHOLDS
        assert gc.get_freeze_count() > 0 and gc.is_tracked(booted)
        frozen = gc.get_freeze_count()
        garbage = Node()
        gone = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert gone() is None, "a cycle made after the tuning is still collected"
        assert gc.get_freeze_count() == frozen, "only what existed at the tuning is frozen"
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
