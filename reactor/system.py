"""Boot in dependency order, shut down in reverse, with a deadline.

A System is a list of stages, each a Supervisor; stage 0 is the foundation (the storage
stage, which opens the backends) and the last is the front end. Boot starts each stage
once the previous one is ready. A step of the list may instead be a builder: an async
function called once the stages before it are ready, returning the stages that depend
on them (the composition root builds its actors once the storage stage reports the
backends it opened). Shutdown (`request_shutdown()`, or SIGTERM/SIGINT via
`handle_signals`) goes from the last stage to the first: the stage is asked to stop
(front end stops accepting, consumers finish their batch and commit, mailboxes close and
drain), gets `grace_s` to finish, and is then cancelled.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
import trio

from .supervisor import Supervisor

log = logging.getLogger("herald.system")

StageBuilder = Callable[[], Awaitable[Sequence[Supervisor]]]


@dataclass
class _Stage:
    supervisor: Supervisor
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)


class System:
    def __init__(self, stages: Sequence[Supervisor | StageBuilder], grace_s: float = 10.0) -> None:
        self._plan = list(stages)
        self._stages: list[_Stage] = []  # the stages started, in boot order
        self.grace_s = grace_s
        self._shutdown = trio.Event()
        self.shutdown_log: list[str] = []  # the order stages finished in, for tests and logs

    def request_shutdown(self) -> None:
        self._shutdown.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

    def supervisors(self) -> list[Supervisor]:
        return [stage.supervisor for stage in self._stages]

    async def run(self, *, task_status: trio.TaskStatus[System] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for step in self._plan:
                for supervisor in [step] if isinstance(step, Supervisor) else await step():
                    stage = _Stage(supervisor)
                    self._stages.append(stage)
                    await nursery.start(self._run_stage, stage)
            task_status.started(self)
            await self._shutdown.wait()
            for stage in reversed(self._stages):
                await self._stop_stage(stage)

    async def _run_stage(self, stage: _Stage, *, task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with stage.scope:
                await stage.supervisor.run(task_status=task_status)
        finally:
            stage.finished.set()

    async def _stop_stage(self, stage: _Stage) -> None:
        name = stage.supervisor.name
        stage.supervisor.stop()
        with trio.move_on_after(self.grace_s):
            await stage.finished.wait()
        if not stage.finished.is_set():
            log.warning("stage %s did not finish within %.1fs: cancelling", name, self.grace_s)
            stage.scope.cancel()
            await stage.finished.wait()
        self.shutdown_log.append(name)
        log.info("stage %s stopped", name)


async def handle_signals(system: System, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Turn the first SIGTERM/SIGINT into a graceful shutdown; a second one cancels hard."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            if system.shutting_down:
                raise KeyboardInterrupt
            log.info("signal %s: shutting down", signal.Signals(signum).name)
            system.request_shutdown()
