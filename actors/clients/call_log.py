"""Provider calls, counted where they happen: a call log per channel that survives kill -9.

`CountedClient` wraps a channel client: before each call it appends a `call` line to
`<data-dir>/calls/<channel>.jsonl` ((notification id, channel), the attempt, a call id),
after the answer an `answer` line (sent, retry, failed, dead_letter, crashed, or raised).
The line is written with write(2) before the call starts and without fsync, at once, in
the event loop, as a log line is (one write(2) of a line to the page cache: no thread hop
per line, and nothing, not even a thread hop, between the gate's admission and the call:
actors/services/gate.py); a write
that returned is in the kernel's page cache, which a kill -9 of the process does not
lose (a power cut may; this log is for measuring crashes of the process, not of the
machine). So the log holds every call that may have reached the provider; a crash
between the call line and the call's effect counts a call that did nothing, never the
reverse.

`count_calls` reads such a log and counts the provider calls beyond one per delivery:
a call for a (notification, channel) made after an earlier call for it that answered
`sent`, or that has no answer (the process died during that call: the provider may have
taken it). Calls after an answer that was a failure are retries, not duplicates. This is
the figure the kill -9 tests report, and docs/reliability.md derives its bound.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from protocol.lifecycle import Status
from protocol.messages import Crashed, Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms
from reactor.files import write_all

from ..provider import ChannelClient, sends_many

log = logging.getLogger("herald.calls")

CALLS_DIR = "calls"
_ENCODER = msgspec.json.Encoder()


def call_log_path(data_dir: Path, channel: str) -> Path:
    return data_dir / CALLS_DIR / f"{channel}.jsonl"


def result_of(outcome: Outcome) -> str:
    """The answer line's `result` for an outcome."""
    if isinstance(outcome, Sent):
        return "queued" if outcome.status is Status.QUEUED else "sent"
    if isinstance(outcome, RetryLater):
        return "retry"
    if isinstance(outcome, PermanentFailure):
        return "dead_letter" if outcome.dead_letter else "failed"
    if isinstance(outcome, Crashed):
        return "crashed"
    return type(outcome).__name__


class CallLog:
    """An append-only JSON-lines file of one channel's calls and answers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._boot = secrets.token_hex(4)  # call ids are unique across the node's runs
        self._seq = itertools.count(1)
        self._checked = False

    def next_id(self) -> str:
        return f"{self._boot}-{next(self._seq)}"

    def append(self, entry: dict[str, Any]) -> None:
        """Append one line (a write(2) to the page cache, no sync). A torn last line from a crash is closed off first."""
        self.append_many([entry])

    def append_many(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append a line per entry in one write(2) (a batch's calls, or their answers)."""
        line = b"".join(_ENCODER.encode(entry) + b"\n" for entry in entries)  # ids, numbers and names: nothing msgspec refuses
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except FileNotFoundError:  # the first call, or someone removed the folder: a log, not a reason to stop sending
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if not self._checked:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # the torn line stays a line of its own, which readers skip
                self._checked = True
            write_all(fd, line)
        finally:
            os.close(fd)


class CountedClient:
    """A channel client whose every call is in a CallLog (a ChannelClient)."""

    def __init__(self, channel: str, inner: ChannelClient, calls: CallLog) -> None:
        self.channel = channel
        self.inner = inner
        self.calls = calls

    @property
    def sends_many(self) -> bool:
        return sends_many(self.inner)

    async def send(self, delivery: Delivery) -> Outcome:
        call_id = self._call(delivery)
        try:
            outcome = await self.inner.send(delivery)
        except Exception as exc:
            self._answer(call_id, delivery, f"raised {type(exc).__name__}")
            raise
        self._answer(call_id, delivery, result_of(outcome))
        return outcome

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """A batching inner client's batch (actors/provider.py BatchClient): every call logged (one write) before any starts,
        every answer (one write) after."""
        call_ids = self._calls(deliveries)
        try:
            outcomes = await self.inner.send_many(deliveries)  # type: ignore[attr-defined]
        except Exception as exc:
            self._answers(call_ids, deliveries, [f"raised {type(exc).__name__}"] * len(deliveries))
            raise
        self._answers(call_ids, deliveries, [result_of(outcome) for outcome in outcomes])
        return list(outcomes)

    def _call(self, delivery: Delivery) -> str:
        return self._calls([delivery])[0]

    def _calls(self, deliveries: Sequence[Delivery]) -> list[str]:
        call_ids = [self.calls.next_id() for _ in deliveries]
        at_ms = wall_ms()
        entries = [{"call": call_id, "nid": delivery.notification_id, "channel": self.channel, "attempt": delivery.attempt,
                    "replays": delivery.replays, "at_ms": at_ms} for call_id, delivery in zip(call_ids, deliveries, strict=True)]
        # Before the call: if this cannot be written, nothing is called (an OSError is a RetryLater to the Provider).
        # At once, with no await: the gate admitted this call just now (its view's staleness bound holds at the call).
        self.calls.append_many(entries)
        return call_ids

    def _answer(self, call_id: str, delivery: Delivery, result: str) -> None:
        self._answers([call_id], [delivery], [result])

    def _answers(self, call_ids: Sequence[str], deliveries: Sequence[Delivery], results: Sequence[str]) -> None:
        entries = [{"answer": call_id, "nid": delivery.notification_id, "channel": self.channel, "result": result}
                   for call_id, delivery, result in zip(call_ids, deliveries, results, strict=False)]
        try:
            self.calls.append_many(entries)
        except OSError as exc:  # the calls happened: their outcomes stand; the log shows them unanswered (possible duplicates)
            log.warning("%s call log: cannot record the answers to %s: %s", self.channel, ", ".join(call_ids[:3]), exc)


# -- reading a call log


@dataclass(frozen=True)
class CallCounts:
    calls: int = 0  # every call line
    deliveries: int = 0  # (notification, channel) pairs with a call answered `sent`
    duplicates: int = 0  # calls beyond one per delivery: after_sent + after_unanswered
    after_sent: int = 0  # a call after one that answered sent (the send ledger's window)
    after_unanswered: int = 0  # a call after one with no answer (the process died during it)
    retries: int = 0  # a call after failed ones only
    unanswered: int = 0  # calls with no answer line
    unreadable: int = 0  # lines that do not parse (a line torn by a crash)

    def line(self) -> str:
        return (f"provider_calls={self.calls} deliveries={self.deliveries} duplicates={self.duplicates} "
                f"(after a sent answer {self.after_sent}, after an unanswered call {self.after_unanswered}) "
                f"retries={self.retries} unanswered={self.unanswered}")


def read_lines(paths: Iterable[Path]) -> Iterator[dict[str, Any] | None]:
    """The entries of call logs, file by file in order; None for a line that does not parse."""
    for path in paths:
        if not path.exists():
            continue
        for raw in path.read_bytes().splitlines():
            if not raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                yield None
                continue
            yield entry if isinstance(entry, dict) else None


def count_calls(entries: Iterable[dict[str, Any] | None]) -> CallCounts:
    """Count a call log's calls (entries in the order they were written; None for an unreadable line).

    A (notification, channel) never has two calls in flight at once (the Provider makes
    one call at a time), so a call's answer, when there is one, comes before that pair's
    next call.
    """
    answers: dict[str, str] = {}  # call id -> result
    earlier: dict[tuple[str, str], list[str]] = {}  # (nid, channel) -> its call ids so far
    calls = after_sent = after_unanswered = retries = unreadable = 0
    for entry in entries:
        if entry is None or not ({"call", "answer"} & entry.keys()):
            unreadable += 1
            continue
        if "answer" in entry:
            answers[str(entry["answer"])] = str(entry.get("result"))
            continue
        calls += 1
        key = (str(entry.get("nid")), str(entry.get("channel")))
        before = earlier.setdefault(key, [])
        results = [answers.get(call_id) for call_id in before]
        if "sent" in results:
            after_sent += 1
        elif None in results:
            after_unanswered += 1
        elif before:
            retries += 1
        before.append(str(entry["call"]))
    all_calls = [call_id for ids in earlier.values() for call_id in ids]
    deliveries = sum(1 for ids in earlier.values() if any(answers.get(c) == "sent" for c in ids))
    return CallCounts(
        calls=calls, deliveries=deliveries, duplicates=after_sent + after_unanswered, after_sent=after_sent,
        after_unanswered=after_unanswered, retries=retries, unanswered=sum(1 for c in all_calls if c not in answers),
        unreadable=unreadable,
    )


def count_call_logs(data_dir: Path, channels: Iterable[str] = ("email", "sms", "push")) -> dict[str, CallCounts]:
    """The counts of a data dir's call logs, by channel."""
    return {channel: count_calls(read_lines([call_log_path(data_dir, channel)])) for channel in channels}
