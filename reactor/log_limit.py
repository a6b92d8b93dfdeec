"""A logging filter that lets a repeated message through a few times per window, then counts it.

A client library retrying against a server that is away (aiokafka: ~110,000 lines in two minutes
with Kafka stopped) must not fill the log. `RateLimit` lets each (logger, level, message template)
through at most `burst` times per `window_s`; the rest are dropped and counted, and the first one let
through in a later window says how many were dropped ("[N similar lines dropped]"). `limit_loggers`
puts one filter on every existing logger under a name (a filter on a logger applies to the records
logged on that logger only, not on its children).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    window_began: float
    passed: int = 0
    dropped: int = 0


class RateLimit(logging.Filter):
    def __init__(self, burst: int = 5, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 1000) -> None:
        super().__init__()
        self.burst = burst
        self.window_s = window_s
        self.clock = clock  # logging runs outside Trio's clock (on the asyncio side too): a plain monotonic clock
        self.max_keys = max_keys
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or now - seen.window_began >= self.window_s:
            if seen is None and len(self._seen) >= self.max_keys:
                self._seen.clear()  # many distinct templates: forget the old windows rather than grow
            dropped = 0 if seen is None else seen.dropped
            seen = self._seen[key] = _Seen(now)
            if dropped:
                record.msg = f"{record.msg} [{dropped} similar lines dropped in the last {self.window_s:g} s]"
        if seen.passed < self.burst:
            seen.passed += 1
            return True
        seen.dropped += 1
        self.dropped += 1
        return False


def limit_loggers(prefix: str, limit: RateLimit) -> Callable[[], None]:
    """Put `limit` on the logger `prefix` and every existing logger under it; returns what takes it off again."""
    manager = logging.Logger.manager
    names = [prefix] + [n for n, one in list(manager.loggerDict.items())
                        if n.startswith(prefix + ".") and isinstance(one, logging.Logger)]
    loggers = [logging.getLogger(n) for n in names]
    for one in loggers:
        one.addFilter(limit)

    def remove() -> None:
        for one in loggers:
            one.removeFilter(limit)

    return remove


__all__ = ["RateLimit", "limit_loggers"]
