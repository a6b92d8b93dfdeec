"""Ports in this process's memory, for `herald simulate` (actors/simulate/): nothing durable, nothing in a thread.

    bus.py        the Bus: partitions as lists; a group's commits; records below every commit dropped
    store.py      the Store's part the delivery path uses: the Scheduler's entries, the dead-letter
                  queue, the send ledger (bounded: old rows forgotten, see its docstring)
    log_store.py  the LogStore's part the Recorder uses: statuses and their current round's steps,
                  the daily counters (bounded the same way)

Why a package of its own: under Trio's MockClock with autojump_threshold 0, simulated time
jumps whenever every task waits, and a task waiting for a worker thread (the embedded
backends' SQLite and file I/O) counts as waiting, so the clock would leap ahead while a thread
writes, differently on every run. These ports never leave the Trio thread, so a simulation is
a deterministic function of its seed, and fast.

It is not a backend a node can be configured with (not in reactor.backends.SCHEMES: an
accepted notification would be lost on exit). Who may import it: actors/simulate/ and tests.
The store and the log store serve the calls of the delivery path (Ingress, consumers,
Providers, Scheduler, Recorder, dead-letter queue); the others raise NotServed.
"""

from __future__ import annotations

from .bus import MemoryBus
from .log_store import MemoryLogStore
from .store import MemoryStore, NotServed

__all__ = ["MemoryBus", "MemoryLogStore", "MemoryStore", "NotServed"]
