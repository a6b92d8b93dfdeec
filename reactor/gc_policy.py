"""The garbage collector's policy for a serving node: boot objects frozen, full collections rare.

CPython's full (generation 2) collection walks every tracked object and holds the event
loop meanwhile: with 10,000 WebSocket sessions open it took ~0.6-1.9 s a pass on the
shared 2-core machine, and a broadcast to them triggered several (docs/performance.md,
"Broadcast to 10,000 sessions"). `herald serve` therefore, once the node is up:

- freezes what the boot allocated (modules, the actor tree, caches: it lives as long as the
  process, so scanning it again is wasted; `gc.freeze`);
- runs a full pass only every 7,000,000 allocations (CPython's default: 700,000), on top of
  CPython's own rule (only when the long-lived objects grew by 25 % since the last one): the
  thresholds (1,000, 5, 1,400);
- keeps the young passes short, since each holds the loop too: generation 1 is collected
  every 5 young passes of 1,000 allocations. Under bulk traffic (issue 10 item 6, a node
  holding tens of thousands of deliveries in flight) most young objects survive, and the
  earlier (7,000, 10, 100) let a generation-1 pass walk ~70,000 of them: 39 ms of the loop
  held, where (1,000, 5, 1,400) holds it 5.5 ms at most, for the same share of the CPU
  (8.6-8.7 %; docs/performance.md, "Priority lanes").

Cyclic garbage is still collected, later: nothing is leaked, memory for cycles lingers a little longer.
"""

from __future__ import annotations

import gc

SERVING_THRESHOLDS = (1_000, 5, 1_400)  # a full pass every 1,000 * 5 * 1,400 = 7M allocations


def tune_for_serving(thresholds: tuple[int, int, int] = SERVING_THRESHOLDS) -> tuple[int, int, int]:
    """Freeze what exists now and set the collector's thresholds; returns the thresholds before (to restore them)."""
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return before
