"""The embedded bus's errors (bus.py raises them; the segment log and the group commit too)."""

from __future__ import annotations


class BusError(Exception):
    """The embedded bus cannot serve the request."""


class BusNotRunning(BusError, RuntimeError):
    """Used before `run()` was started (or after it ended)."""


class BusClosed(BusError):
    """The bus stopped (or failed) before the request completed."""


class BusCorrupted(BusError):
    """A sealed segment or a durable record does not read back as written."""


class UnknownTopic(KeyError, ValueError):
    """The topic was not declared when the bus was built."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown topic"
