"""Sandbox channel clients: they deliver to files instead of a provider.

Email writes one RFC 5322 message per notification to the outbox folder; SMS and push
append one JSON line per message to sms.jsonl / push.jsonl. Writes are idempotent per
notification where the medium allows it (an .eml is replaced, not duplicated).

What the delivery's content causes (a header the email library cannot write) is a
permanent failure that dead-letters the delivery; what the sandbox's own I/O causes
(disk full, permission denied, a file replaced by a folder) is retried later.

Push goes to every device token of the delivery (`addresses`, else `address`); the
push sandbox plays an FCM/APNs that no longer knows a token: one starting with
"unregistered-" is refused as unregistered (the Provider then removes the device).

The node puts two wrappers in front of these clients (actors/app.py): a FaultyClient
(actors/clients/faults.py: failures and latency on demand) and a CountedClient
(actors/clients/call_log.py: every call logged before it starts). Because these files
take a notification once, duplicates are counted in that call log, not here.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import functools
import json
import os
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from collections.abc import Sequence
from pathlib import Path

import msgspec
import trio
from msgspec import to_builtins

from protocol.header_safe import address_problem, header_text_problem, mailbox_problem
from protocol.lifecycle import Status
from protocol.messages import Delivery, Outcome, PermanentFailure, RetryLater, Sent
from reactor.clock import wall_ms
from reactor.files import CAN_SYNC_FILESYSTEM, discard_staged, install_files, stage_file, staged_path, sync_filesystem
from reactor.group_commit import GroupCommit, WriteFailed

from .dkim import DkimSettings, dkim_signed
from .plain_email import plain_email

UNREGISTERED_PREFIX = "unregistered-"  # push sandbox: tokens the "provider" no longer knows


class _CachedHeaderRegistry(HeaderRegistry):
    """The email package's header factory, its per-name header class made once (the stock one makes a new class
    with type() for every header set: a sixth of an .eml's CPU). The same classes, the same parsing."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type[BaseHeader]] = {}

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        made = self._classes.get(key)
        if made is None:
            made = self._classes[key] = super().__getitem__(key)
        return made


# Lines up to RFC 5322's 998: a List-Unsubscribe URL cannot be folded, and must not become an encoded word.
_EMAIL_POLICY = email.policy.default.clone(max_line_length=998, header_factory=_CachedHeaderRegistry())

# The node's one sender, checked again for every message: the answer is a function of the string.
_sender_problem = functools.lru_cache(maxsize=16)(mailbox_problem)


_HEADERS_ONLY = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def _io_error(exc: WriteFailed) -> OSError:
    """The sandbox's own I/O error behind a failed group write (anything else is a bug: re-raised)."""
    if isinstance(exc.__cause__, OSError):
        return exc.__cause__
    raise exc


def _json_line(entry: dict[str, object]) -> bytes:
    """One JSON line, by msgspec (a fifth of json's CPU); what msgspec refuses (a lone surrogate, a NaN) by json as before."""
    try:
        return _ENCODER.encode(entry) + b"\n"
    except (TypeError, ValueError):
        return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


_ENCODER = msgspec.json.Encoder()


class UnsafeEmail(ValueError):
    """The delivery's content cannot be written as an email (protocol.header_safe, or the email package refused it)."""


def _check_headers(delivery: Delivery, sender: str) -> None:
    """Every header-bound value, checked again: a record from before the API checked them may still be on the bus."""
    content = delivery.content.email
    assert content is not None
    checks = [
        ("From", _sender_problem(sender)),
        ("To", address_problem(delivery.address or "")),
        ("Subject", header_text_problem(content.subject)),
        ("List-Unsubscribe", header_text_problem(delivery.unsubscribe_url) if delivery.unsubscribe_url else None),
    ]
    for header, problem in checks:
        if problem is not None:
            raise UnsafeEmail(f"{header}: {problem}")


def build_email(delivery: Delivery, sender: str, now_ms: int) -> EmailMessage:
    """An RFC 5322 message (multipart/alternative when there is both text and html); UnsafeEmail if a header is unsafe."""
    content = delivery.content.email
    assert content is not None and delivery.address is not None
    _check_headers(delivery, sender)
    message = EmailMessage(policy=_EMAIL_POLICY)
    message["From"] = sender
    message["To"] = delivery.address
    message["Subject"] = content.subject
    message["Date"] = format_datetime(dt.datetime.fromtimestamp(now_ms / 1000, tz=dt.timezone.utc))
    message["Message-ID"] = make_msgid(idstring=delivery.notification_id, domain="herald.localhost")
    message["X-Herald-Notification-Id"] = delivery.notification_id
    if delivery.unsubscribe_url:  # one-click unsubscribe from the notification's category (RFC 2369, RFC 8058)
        message["List-Unsubscribe"] = f"<{delivery.unsubscribe_url}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(content.text or "")
    if content.html:
        message.add_alternative(content.html, subtype="html")
    return message


def email_bytes(message: EmailMessage) -> bytes:
    """The message as written, checked: read back, it has exactly the headers that were set (none injected)."""
    raw = bytes(message)
    written = [name.lower() for name in _HEADERS_ONLY.parsebytes(raw).keys()]
    if written != [name.lower() for name in message.keys()]:
        raise UnsafeEmail(f"the written message has the headers {written}, not the ones set")
    return raw


def render_email(delivery: Delivery, sender: str) -> bytes | PermanentFailure:
    """The delivery's message bytes (what the outbox writes and SMTP sends), or the permanent failure its content causes."""
    if delivery.content.email is None or not delivery.address:
        return PermanentFailure("no email content or address")
    now_ms = wall_ms()
    if _sender_problem(sender) is None:  # the common shapes without the email package: the same bytes
        plain = plain_email(delivery, sender, now_ms)
        if plain is not None:
            return plain
    try:
        return email_bytes(build_email(delivery, sender, now_ms))
    except Exception as exc:  # caused by this delivery's content, whatever the email package raised
        return PermanentFailure(f"the email cannot be written: {exc!r}"[:1000], dead_letter=True)


def _stage_files(files: list[tuple[Path, bytes]]) -> None:
    """Stage (write and sync) each file in turn (blocking: run it in a thread); the first error stops the share."""
    for path, raw in files:
        stage_file(path, raw)


def _write_synced_together(folder: Path, files: list[tuple[Path, bytes]]) -> None:
    """Stage every file unsynced, make them durable with one sync of the filesystem, then put them in place
    (blocking: run it in a thread). On an error none is put in place."""
    try:
        for path, raw in files:
            stage_file(path, raw, sync=False)
        sync_filesystem(folder)
    except BaseException:
        discard_staged([staged_path(path) for path, _ in files])
        raise
    install_files([path for path, _ in files])


class EmailOutbox:
    """Email sandbox: one .eml file per notification, replaced atomically and synced before the outcome.

    Concurrent sends group-commit (reactor/group_commit.py): the files of one batch are written, made
    durable together, then renamed into place and their folder synced once, after a linger of `linger_s`
    at most. On Linux a batch of several files is synced by one syncfs(2) of the outbox's filesystem (one
    journal commit, a third of the CPU of an fsync per file; it also waits for what other writers left dirty
    on that filesystem); elsewhere, and for a lone file, each file is fsynced (from up to SYNC_THREADS
    threads: concurrent fsyncs share the disk's flushes).
    """

    SYNC_THREADS = 8

    def __init__(self, outbox: Path, sender: str, linger_s: float = 0.0, dkim: DkimSettings | None = None) -> None:
        self.dkim = dkim  # DKIM-sign each .eml as SMTP would send it (actors/clients/dkim.py)
        problem = mailbox_problem(sender)
        if problem is not None:
            raise ValueError(f"email sender {sender!r}: {problem}")
        self.outbox = outbox.resolve()
        self.sender = sender
        outbox.mkdir(parents=True, exist_ok=True)
        self._files: GroupCommit[tuple[Path, bytes], None] = GroupCommit(self._write_files, linger_s=linger_s)
        self._sync_threads = trio.CapacityLimiter(self.SYNC_THREADS)

    async def _write_files(self, files: list[tuple[Path, bytes]]) -> None:
        latest = dict(files)  # one notification twice in a batch: its last message wins, as it would one after the other
        if CAN_SYNC_FILESYSTEM and len(latest) > 1:
            await trio.to_thread.run_sync(_write_synced_together, self.outbox, list(latest.items()))
            return
        errors: list[OSError] = []

        async def stage(share: list[tuple[Path, bytes]]) -> None:
            try:
                await trio.to_thread.run_sync(_stage_files, share, limiter=self._sync_threads)
            except OSError as exc:
                errors.append(exc)

        # The batch in SYNC_THREADS shares, one thread hop each (not one per file): their fsyncs still overlap.
        items = list(latest.items())
        async with trio.open_nursery() as nursery:
            for n in range(min(self.SYNC_THREADS, len(items))):
                nursery.start_soon(stage, items[n::self.SYNC_THREADS])
        if errors:  # none of the batch is put in place
            await trio.to_thread.run_sync(discard_staged, [staged_path(p) for p in latest])
            raise errors[0]
        await trio.to_thread.run_sync(install_files, list(latest))

    sends_many = True  # actors/provider.py BatchClient: a batch's files in one group write

    async def send(self, delivery: Delivery) -> Outcome:
        return (await self.send_many([delivery]))[0]

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Each delivery's outcome; the files of those that can be written are written and synced together."""
        outcomes: list[Outcome | None] = []
        files: list[tuple[Path, bytes]] = []
        for delivery in deliveries:
            raw = render_email(delivery, self.sender)
            if isinstance(raw, PermanentFailure):
                outcomes.append(raw)
                continue
            files.append((self.outbox / f"{delivery.notification_id}.eml", dkim_signed(self.dkim, raw)))
            outcomes.append(None)
        written: Outcome | None = None
        if files:
            try:
                await self._files.commit(files)
            except WriteFailed as exc:  # the outbox's own I/O: try again later
                written = RetryLater(f"outbox write failed: {_io_error(exc)}")
        paths = iter(files)
        return [o if o is not None else written or Sent(Status.DELIVERED, detail=str(next(paths)[0])) for o in outcomes]


class JsonLinesSink:
    """SMS or push sandbox: one JSON object per line, fsynced before the outcome.

    Concurrent sends group-commit (reactor/group_commit.py): the lines of one batch are appended
    with one write and one fsync, after a linger of `linger_s` at most.

    Like a provider that honours an idempotency key, it takes each notification id once
    per address: a second send of the same id (a redelivery in the crash window of the
    send ledger) is answered as delivered and not written again. `duplicates_refused`
    counts those.
    """

    def __init__(self, path: Path, channel: str, linger_s: float = 0.0) -> None:
        self.path = path.resolve()
        self.channel = channel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._seen: set[tuple[str, str]] | None = None
        self._loading = trio.Lock()  # one load of the file, before any send writes (a load beside a failing write saw its lines)
        self.duplicates_refused = 0
        self._lines: GroupCommit[bytes, None] = GroupCommit(self._append_lines, linger_s=linger_s)

    async def _append_lines(self, lines: list[bytes]) -> None:
        await trio.to_thread.run_sync(self._append, b"".join(lines))

    def _load_seen(self) -> set[tuple[str, str]]:
        seen: set[tuple[str, str]] = set()
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):  # torn by a crash mid-append: cut it off
                data = data[: data.rfind(b"\n") + 1]
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(data))
                    os.fsync(fh.fileno())
            for raw in data.splitlines():
                try:
                    line = json.loads(raw)
                    seen.add((line["notification_id"], line["to"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line from a crash
        return seen

    def _append(self, line: bytes) -> None:
        with open(self.path, "ab") as fh:
            start = fh.tell()
            try:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                try:  # a partial line (disk full) would merge with the next one: cut it off
                    fh.truncate(start)
                except OSError:
                    pass  # _load_seen cuts a torn tail on the next start
                raise

    sends_many = True  # actors/provider.py BatchClient: a batch's lines in one group write

    async def send(self, delivery: Delivery) -> Outcome:
        return (await self.send_many([delivery]))[0]

    async def send_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """Each delivery's outcome; the lines of those to be written are appended and synced together."""
        if self._seen is None:
            async with self._loading:  # the others wait for it: no write starts before the file is read
                if self._seen is None:
                    try:
                        self._seen = await trio.to_thread.run_sync(self._load_seen)
                    except OSError as exc:  # the sink's own I/O: try again later
                        return [RetryLater(f"{self.channel} sandbox read failed: {exc}") for _ in deliveries]
        seen = self._seen
        assert seen is not None
        now = wall_ms()
        outcomes: list[Outcome | None] = []
        lines: list[bytes] = []
        batch: set[tuple[str, str]] = set()  # (notification id, to) of this batch's lines: written once here too
        written: list[tuple[int, list[tuple[str, str]], list[str]]] = []  # (index, (notification id, to), unregistered)
        for delivery in deliveries:
            prepared = self._prepare(delivery, now, seen, batch)
            if isinstance(prepared, tuple):
                line, fresh, unregistered = prepared
                lines.append(line)
                batch.update(fresh)
                written.append((len(outcomes), fresh, unregistered))
                outcomes.append(None)
            else:
                outcomes.append(prepared)
        if lines:
            try:
                await self._lines.commit(lines)
            except WriteFailed as exc:  # the sink's own I/O: try again later
                failed = RetryLater(f"{self.channel} sandbox write failed: {_io_error(exc)}")
                return [o if o is not None else failed for o in outcomes]
            seen.update(batch)
            for index, _, unregistered in written:
                outcomes[index] = Sent(Status.DELIVERED, detail=f"{self.path}{_gone(unregistered)}", unregistered_tokens=unregistered)
        return [o for o in outcomes if o is not None]

    def _prepare(
        self, delivery: Delivery, now: int, seen: set[tuple[str, str]], batch: set[tuple[str, str]],
    ) -> Outcome | tuple[bytes, list[tuple[str, str]], list[str]]:
        """The delivery's outcome where nothing is to be written; else its lines, the (id, to) they write, its
        unregistered tokens."""
        part = delivery.content.for_channel(self.channel)
        targets = _targets(delivery)
        if part is None or not targets:
            return PermanentFailure(f"no {self.channel} content or address")
        unregistered = [t for t in targets if self.channel == "push" and t.startswith(UNREGISTERED_PREFIX)]
        if len(unregistered) == len(targets):
            return PermanentFailure("unregistered", unregistered_tokens=unregistered)
        fresh = [t for t in targets if t not in unregistered and (delivery.notification_id, t) not in seen
                 and (delivery.notification_id, t) not in batch]
        if not fresh:
            self.duplicates_refused += 1
            detail = f"{self.path} (already there: not written again){_gone(unregistered)}"
            return Sent(Status.DELIVERED, detail, unregistered_tokens=unregistered)
        try:
            body = to_builtins(part)
            lines = b"".join(
                _json_line({"notification_id": delivery.notification_id, "user_id": delivery.user_id, "to": to, "at_ms": now, **body})
                for to in fresh
            )
        except (TypeError, ValueError) as exc:  # caused by this delivery's content
            return PermanentFailure(f"the {self.channel} message cannot be written: {exc!r}"[:1000], dead_letter=True)
        return lines, [(delivery.notification_id, to) for to in fresh], unregistered


def _gone(unregistered: list[str]) -> str:
    return f"; unregistered: {len(unregistered)} device(s)" if unregistered else ""


def _targets(delivery: Delivery) -> list[str]:
    """Where a delivery goes: every device token (`addresses`), else its one `address`."""
    return list(delivery.addresses) or ([delivery.address] if delivery.address else [])
