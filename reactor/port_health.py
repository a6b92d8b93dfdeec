"""Which ports this node knows to be unavailable now, for GET /readyz: the last failure seen, cleared by a check.

Nothing is probed per request. A part of the node that meets a port's server away says so
(`failed`: the Ingress when the bus does not acknowledge an append in time, the Recorder when the
log store cannot be reached); from then on `down()` names the port, and /readyz answers 503 so a
load balancer stops routing here. The port is marked up again by whichever comes first: its owner
seeing it work (`recovered`: an append acknowledged, a group written), or, for a port with a
check, the background task (`run`) calling that check every `every_s` while the port is marked
down and succeeding. So a healthy node pays nothing, and a node whose port came back is ready
again within about `every_s`, with no restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import trio

log = logging.getLogger("herald.port_health")

Check = Callable[[], Awaitable[object]]  # succeeds (returns) when the port works; raises or hangs when it does not


class PortHealth:
    def __init__(self, checks: Mapping[str, Check] | None = None, every_s: float = 1.0, timeout_s: float = 2.0) -> None:
        self.checks = dict(checks or {})
        self.every_s = every_s
        self.timeout_s = timeout_s
        self._down: dict[str, str] = {}
        self._wake = trio.Event()
        self._stopped = False
        self.checks_run = 0

    def failed(self, port: str, reason: str) -> None:
        """`port`'s server cannot be reached now (`reason`, for the log and /readyz)."""
        if port not in self._down:
            log.warning("port %s unavailable: %s", port, reason)
        self._down[port] = reason
        self._wake.set()

    def recovered(self, port: str) -> None:
        """`port` works again."""
        if self._down.pop(port, None) is not None:
            log.warning("port %s available again", port)

    def down(self) -> dict[str, str]:
        """The ports known unavailable now, with why."""
        return dict(self._down)

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """While a port with a check is marked down, call its check every `every_s`; a success marks it up."""
        task_status.started()
        while not self._stopped:
            checked = [port for port in self._down if port in self.checks]
            if not checked:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            await trio.sleep(self.every_s)
            for port in checked:
                if port in self._down and await self._check(port):
                    self.recovered(port)

    async def _check(self, port: str) -> bool:
        self.checks_run += 1
        with trio.move_on_after(self.timeout_s):
            try:
                await self.checks[port]()
            except Exception as exc:  # the port still fails: it stays down
                log.debug("port %s check failed: %r", port, exc)
                return False
            return True
        return False


__all__ = ["Check", "PortHealth"]
