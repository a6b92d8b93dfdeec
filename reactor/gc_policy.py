"""The garbage collector's policy for a serving node: boot objects frozen, full collections rare.

CPython's full (generation 2) collection walks every tracked object and holds the event
loop meanwhile: with 10,000 WebSocket sessions open it took ~0.6-1.9 s a pass on the
shared 2-core machine, and a broadcast to them triggered several (docs/performance.md,
"Broadcast to 10,000 sessions"). `herald serve` therefore, once the node is up:

- freezes what the boot allocated (modules, the actor tree, caches: it lives as long as the
  process, so scanning it again is wasted; `gc.freeze`);
- collects the young generations 10x less often (threshold 7,000 allocations, not 700) and
  runs a full pass only every 100 generation-1 passes (not 10), on top of CPython's own rule
  (only when the long-lived objects grew by 25 % since the last one).

Cyclic garbage is still collected, later: nothing is leaked, memory for cycles lingers a little longer.
"""

from __future__ import annotations

import gc

SERVING_THRESHOLDS = (7_000, 10, 100)


def tune_for_serving(thresholds: tuple[int, int, int] = SERVING_THRESHOLDS) -> tuple[int, int, int]:
    """Freeze what exists now and set the collector's thresholds; returns the thresholds before (to restore them)."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return before
