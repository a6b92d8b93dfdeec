"""One-for-one supervision with exponential backoff and a restart-intensity limit.

A child is `async def run(*, task_status)`: it calls `task_status.started()` once it is
ready. The supervisor starts its children in order, each waiting for the previous one's
readiness; a child that fails before its first readiness fails the start (errors
surface at boot, not in a restart loop). After that, a crash restarts that child alone,
after a backoff that doubles with each restart inside the window. More than
`max_restarts` crashes within `window_s` seconds escalate: the supervisor itself fails
with RestartIntensityExceeded, and its own supervisor (or the system) deals with it.

A supervisor is itself a child (`Supervisor.run` has the same shape), so trees nest.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

import trio

log = logging.getLogger("herald.supervisor")



class ChildRun(Protocol):
    """A child's `run`: it calls `task_status.started()` (with a value or none) once it is ready.

    The supervisor hands it a status that takes any value (`TaskStatus[object]`), which a
    child typed `TaskStatus[None]`, `TaskStatus[list[str]]`... accepts (TaskStatus is
    contravariant in its value).
    """

    def __call__(self, *, task_status: trio.TaskStatus[object]) -> Awaitable[None]: ...


class Restart(enum.Enum):
    PERMANENT = "permanent"  # restarted whenever it exits, unless the supervisor is stopping
    TRANSIENT = "transient"  # restarted only when it crashes


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5
    window_s: float = 30.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0

    def backoff(self, recent_restarts: int) -> float:
        """Delay before the next restart, given the restarts already in the window."""
        return min(self.backoff_max_s, self.backoff_initial_s * (2.0 ** max(0, recent_restarts - 1)))


@dataclass(frozen=True)
class ChildSpec:
    name: str
    run: ChildRun
    stop: Callable[[], None] | None = None  # asks the child to finish its work and return
    restart: Restart = Restart.PERMANENT


class RestartIntensityExceeded(Exception):
    def __init__(self, supervisor: str, child: str, restarts: int, window_s: float) -> None:
        super().__init__(f"{supervisor}/{child}: {restarts} restarts within {window_s:g}s")
        self.child = child


@dataclass
class ChildStatistics:
    name: str
    restarts: int = 0
    running: bool = False
    last_error: str = ""


@dataclass
class _Readiness:
    """Passes the first `started()` up to the supervisor; ignores those of restarts."""

    outer: trio.TaskStatus[object]
    first: bool = True
    ready: bool = False

    def started(self, value: object = None) -> None:
        self.ready = True
        if self.first:
            self.first = False
            self.outer.started(value)


@dataclass
class Supervisor:
    name: str
    children: list[ChildSpec]
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    def __post_init__(self) -> None:
        self._stopping = trio.Event()
        self._stats = {spec.name: ChildStatistics(spec.name) for spec in self.children}

    async def run(self, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for spec in self.children:
                await nursery.start(self._supervise, spec)
            task_status.started(self)

    def stop(self) -> None:
        """Ask every child to finish; none is restarted from now on."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for spec in reversed(self.children):
            if spec.stop is not None:
                spec.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def statistics(self) -> list[ChildStatistics]:
        return [ChildStatistics(**vars(s)) for s in self._stats.values()]

    async def _supervise(self, spec: ChildSpec, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
        stats = self._stats[spec.name]
        readiness = _Readiness(task_status)
        crashes: deque[float] = deque()
        while True:
            readiness.ready = False
            stats.running = True
            try:
                await spec.run(task_status=readiness)
            except Exception as exc:
                stats.running = False
                if readiness.first:
                    raise  # failed before it was ever ready: fail the start
                if self._stopping.is_set():
                    log.warning("%s/%s failed while stopping: %r", self.name, spec.name, exc)
                    return
                now = trio.current_time()
                crashes.append(now)
                while crashes and crashes[0] <= now - self.policy.window_s:
                    crashes.popleft()
                stats.last_error = repr(exc)
                if len(crashes) > self.policy.max_restarts:
                    log.error("%s/%s: restart intensity exceeded, escalating", self.name, spec.name)
                    raise RestartIntensityExceeded(self.name, spec.name, len(crashes), self.policy.window_s) from exc
                delay = self.policy.backoff(len(crashes))
                log.warning("%s/%s crashed (%r); restart in %.3fs", self.name, spec.name, exc, delay)
            else:
                stats.running = False
                if readiness.first:
                    readiness.started()  # returned without signalling: it has nothing to wait for
                if self._stopping.is_set() or spec.restart is Restart.TRANSIENT:
                    return
                delay = self.policy.backoff_initial_s
                log.warning("%s/%s exited; restart in %.3fs", self.name, spec.name, delay)
            with trio.move_on_after(delay):
                await self._stopping.wait()
            if self._stopping.is_set():
                return
            stats.restarts += 1
