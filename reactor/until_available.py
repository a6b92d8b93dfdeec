"""Wait in place for a port's server: call again with backoff while it raises PortUnavailable.

An actor that cannot do its work without a shared backend (a provider's gate without Redis, the
send ledger without PostgreSQL) waits for it rather than crashing: a crash would restart it, and
restarts escalate until the node stops, over an outage that is nobody's fault. `until_available`
calls `call()` until it returns; each PortUnavailable is followed by a sleep that starts at
`first_s` and doubles up to `max_s` (Trio's clock), the first one logged with `what`, and the
return after one logged too. Any other error is the caller's. (The Recorder's wait for its log
store, actors/recorder.py, is this loop, its askers told at the first failure through `on_wait`.)
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from .ports import PortUnavailable

T = TypeVar("T")
log = logging.getLogger("herald.until_available")

FIRST_S = 0.1
MAX_S = 5.0


async def until_available(call: Callable[[], Awaitable[T]], what: str, on_wait: Callable[[PortUnavailable], None] | None = None,
                          first_s: float = FIRST_S, max_s: float = MAX_S) -> T:
    """`await call()`, called again with backoff while it raises PortUnavailable; `on_wait(exc)` before each wait."""
    wait = first_s
    failed = False
    while True:
        try:
            result = await call()
        except PortUnavailable as exc:
            if not failed:
                failed = True
                log.warning("%s: its backend cannot be reached (%s); waiting for it", what, exc)
            if on_wait is not None:
                on_wait(exc)
            await trio.sleep(wait)
            wait = min(max_s, wait * 2)
            continue
        if failed:
            log.warning("%s: its backend answers again", what)
        return result


__all__ = ["FIRST_S", "MAX_S", "until_available"]
