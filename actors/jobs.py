"""Jobs (an actor): operations too long for a request, run off the request path, one at a time.

A dead-letter replay or purge may take up 100,000 entries: `POST /v1/admin/dlq/replay` and
`DELETE /v1/admin/dlq` ask this actor to start a job and answer 202 with its id at once;
the job runs here a page at a time (actors/services/dead_letters.py), and
`GET /v1/admin/jobs/{id}` asks this actor for its state and counts.

Two tasks of the actor: the mailbox (start a job: queued; where is a job: its view, read
between two pages of the running one) and the runner (the queued jobs in order). A job
that fails (a store or the bus failing under it) is `failed` with the error; the actor
carries on with the next.

Process-local: jobs live in the memory of the node that runs them. A restart forgets them
(and the job that was running stops: what it replayed or discarded stays done, since every
page is durable before the next, and the rest stays in the queue, so running it again
finishes it); the node keeps the last `keep` finished jobs. A job it does not know is a
404 that says so. The durable record of what happened is the queue itself and the
notifications' timelines, not the job.
"""

from __future__ import annotations

import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

from protocol.api import JobView
from reactor.ask import Reply
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox
from reactor.ports import DlqFilter

from .services.dead_letters import DeadLetters, Progress

log = logging.getLogger("herald.jobs")

JobKind = Literal["dlq_replay", "dlq_purge"]
KEEP_FINISHED = 100  # finished jobs a node remembers
MAX_QUEUED = 16  # jobs waiting to run; past it a new one is refused (503)


class JobsBusy(Exception):
    """As many jobs are queued as the node takes: the caller should retry later."""


@dataclass(frozen=True, slots=True)
class StartJob:
    """-> Jobs: queue this job; the reply is its view (queued) or JobsBusy."""

    kind: JobKind
    selection: DlqFilter
    reply: Reply[JobView]


@dataclass(frozen=True, slots=True)
class JobStatus:
    """-> Jobs: the job's view, or None if this node does not know it."""

    job_id: str
    reply: Reply[JobView | None]


JobMessage = StartJob | JobStatus


@dataclass
class Job:
    id: str
    kind: JobKind
    selection: DlqFilter
    created_ms: int
    state: Literal["queued", "running", "done", "failed"] = "queued"
    progress: Progress = field(default_factory=Progress)
    failure: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None

    def view(self) -> JobView:
        p = self.progress
        return JobView(
            id=self.id, kind=self.kind, state=self.state, total=p.total, replayed=p.replayed, discarded=p.discarded,
            skipped=p.skipped, errors=p.errors, error=self.failure or p.error, created_at=iso(self.created_ms),
            started_at=None if self.started_ms is None else iso(self.started_ms),
            finished_at=None if self.finished_ms is None else iso(self.finished_ms),
        )


def new_job_id() -> str:
    return f"job_{secrets.token_hex(8)}"


class Jobs:
    def __init__(
        self, mailbox: Mailbox[JobMessage], dead_letters: DeadLetters, *, keep: int = KEEP_FINISHED, max_queued: int = MAX_QUEUED,
    ) -> None:
        self.mailbox = mailbox
        self.dead_letters = dead_letters
        self.keep = keep
        self.max_queued = max_queued
        self._jobs: dict[str, Job] = {}
        self._queued: deque[Job] = deque()
        self._finished: deque[str] = deque()
        self._wake = trio.Event()
        self.ran = 0

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._runner)
            task_status.started()
            async for message in self.mailbox:
                if isinstance(message, StartJob):
                    self._start(message)
                else:
                    job = self._jobs.get(message.job_id)
                    message.reply.send(None if job is None else job.view())
            nursery.cancel_scope.cancel()  # stopping: a running job ends between two of its steps

    def _start(self, message: StartJob) -> None:
        if len(self._queued) >= self.max_queued:
            message.reply.fail(JobsBusy(f"{len(self._queued)} jobs are queued already"))
            return
        job = Job(new_job_id(), message.kind, message.selection, wall_ms())
        self._jobs[job.id] = job
        self._queued.append(job)
        self._wake.set()
        message.reply.send(job.view())

    async def _runner(self) -> None:
        while True:
            if not self._queued:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            job = self._queued.popleft()
            job.state, job.started_ms = "running", wall_ms()
            try:
                if job.kind == "dlq_replay":
                    await self.dead_letters.replay(job.selection, job.progress)
                else:
                    await self.dead_letters.discard(job.selection, job.progress)
            except Exception as exc:  # the job's outcome, not the actor's crash: it says why, the next one runs
                log.exception("job %s (%s) failed", job.id, job.kind)
                job.state, job.failure = "failed", f"{type(exc).__name__}: {exc}"[:500]
            else:
                job.state = "done"
            job.finished_ms = wall_ms()
            self.ran += 1
            self._forget_old(job.id)

    def _forget_old(self, finished: str) -> None:
        self._finished.append(finished)
        while len(self._finished) > self.keep:
            self._jobs.pop(self._finished.popleft(), None)
