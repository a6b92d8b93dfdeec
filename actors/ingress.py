"""Ingress: validates a submission, writes one Delivery per channel to the bus, answers with a receipt.

A pool of workers reads one mailbox: each takes a message and whatever else waits there
(concurrent POSTs, up to a batch's worth: `_coalesce`), plans them and awaits one durable
bus append for all of them (group commit batches the concurrent appends), so the receipt
(202) is sent only once every channel's record is on disk; then it waits for the Recorder
to write `accepted` and `queued` (one RecordEvents for the group, group-committed too), so
a status read right after the 202 finds them. Priority lanes (issue 10 item 6): of what a
worker takes together, the messages all in the critical lane are appended and answered first,
in a group of their own, and a large group is planned `PLAN_SLICE` requests at a time with a
checkpoint between, so a 1,000-item batch does not hold the event loop for its whole plan.

With a UserDirectory, the user's preferences shape each channel (actors/domain/preferences.py):
addresses from the contact points and devices when `to` does not give them, a channel
turned off or a category opted out of recorded as failed with the reason, and quiet
hours handing the record to the Scheduler (durably, before the 202) instead of the bus.

On a distributed bus (Kafka; the embedded bus is a local file, slow at worst, never away) the
append has a deadline (`append_deadline_s`): a bus that does not acknowledge in time
(Kafka down) fails the group with AppendUncertain, a PortUnavailable (503 with Retry-After), and
marks the bus down in the node's PortHealth (/readyz 503 until it works again). Nothing was
acknowledged, but the records may still be written later (the Kafka producer keeps them and
retries). A request with an Idempotency-Key covers that: its notification ids are derived from its
idempotency entry (`KeyedIds`: a seed and the first try's time, kept by actors/api/idempotency.py
after an AppendUncertain), so the caller's retry makes the very same notification ids, its
deliveries marked `keyed` on every try; the provider asks the send ledger before each keyed
delivery (one ledger read each), so whether the first try's records land before, after or never,
the provider is called once per (notification, channel) (web frames are pushed again and dropped
by the sessions that had them). A caller without a key that retries after a 503 may get two.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import msgspec
import trio

from protocol.api import LocalSendAt, NotificationRequest, Receipt
from protocol.channels import LANES, Channel, Lane, Priority
from protocol.content import header_errors
from protocol.ids import IdEncoder, make_notification_id
from protocol.lifecycle import Status
from protocol.messages import Delivery, StatusEvent, encode_delivery
from protocol.preferences import Profile
from protocol.problems import FieldError, Problem
from protocol.topics import TOPIC_SEND_PREFIX
from reactor.ask import Reply, ask
from reactor.clock import iso, wall_ms
from reactor.mailbox import Mailbox
from reactor.port_health import PortHealth
from reactor.ports import AppendUncertain, Bus, DigestEvent, PortUnavailable, Scheduled

from .domain.digests import check_window, choose_window, digest_data, event_times
from .domain.preferences import NO_PROFILE, address_missing, plan_channels
from .domain.send_at import SEND_AT_PREFIX, resolve as resolve_send_at
from .messages import IngressMessage, KeyedIds, RecordEvents, RecorderMessage, Submit
from .scheduler import ScheduleAt
from .services.digests import Collected, Digests
from .services.template_service import TemplateService, apply_template, inline_content
from .services.topic_sends import TopicSends
from .services.user_directory import UserDirectory

log = logging.getLogger("herald.ingress")

_ADDRESS_FIELD = {Channel.EMAIL: "email", Channel.SMS: "phone", Channel.PUSH: "device_token", Channel.WEBHOOK: "webhook"}
_NO_ADDRESS = frozenset(Channel) - frozenset(_ADDRESS_FIELD)  # channels that need no address (web)
_CHANNELS = tuple((channel, channel.value) for channel in Channel)  # an enum's .value costs a call: read once
_TOPIC = {(channel, lane): channel.topic(lane) for channel in Channel for lane in LANES}  # the priority's lane per channel
_encode_request = msgspec.json.Encoder().encode
COALESCE_MAX_REQUESTS = 1000  # requests one append takes from the mailbox at most (a full batch's worth)
PLAN_SLICE = 32  # requests planned between two checkpoints (~1 ms of the loop quiet, a few under bulk; issue 10 item 6)
APPEND_DEADLINE_S = 5.0  # how long a POST waits for the bus to acknowledge its append (config: append_deadline_s)


def keyed_id(ids: KeyedIds, index: int) -> str:
    """The notification id of item `index` of a request with an Idempotency-Key: the same on every retry of it."""
    entropy = int.from_bytes(hashlib.blake2b(f"{ids.seed}:{index}".encode(), digest_size=10).digest(), "big")
    return make_notification_id(ids.first_ms, entropy)


def check_request(request: NotificationRequest, profile: Profile = NO_PROFILE) -> list[FieldError]:
    """Rules the schema cannot express: content, and an address (in `to` or the user's preferences) per channel."""
    content = request.content
    if content is None:
        return [FieldError("content", "required, unless template_id names a template")]
    errors: list[FieldError] = []
    requested = set(request.channels)
    if len(requested) != len(request.channels):
        errors.append(FieldError("channels", "a channel is listed twice"))
    for channel, name in _CHANNELS:
        wanted = channel in requested
        if wanted is (getattr(content, name) is None):  # Content.for_channel(name): its fields are named by the channels' values
            errors.append(FieldError(f"content.{name}", f"required: {name} is in channels" if wanted else f"given, but {name} is not in channels"))
    email = content.email
    if email is not None and not (email.text or email.html):
        errors.append(FieldError("content.email", "needs text or html"))
    if email is not None or request.to is not None:
        errors.extend(header_errors(content, request.to))  # no CR/LF, control or encoded word in a header
    if not requested <= _NO_ADDRESS:
        for channel, attr in _ADDRESS_FIELD.items():
            if channel in requested and address_missing(request, profile, channel):
                message = f"required for the {channel.value} channel (the user's preferences have none)"
                errors.append(FieldError(f"to.{attr}", message))
    return errors


def _requests(message: IngressMessage) -> Sequence[NotificationRequest]:
    return (message.request,) if isinstance(message, Submit) else message.requests


def _critical(message: IngressMessage) -> bool:
    """Every request of the message travels in the critical lane (critical, high): it goes before bulk it waited with."""
    return all(r.priority.lane is Lane.CRITICAL for r in _requests(message))


class IdGenerator:
    """Monotonic notification ids: within one millisecond, the random part counts up."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._last_ms = -1
        self._last_entropy = 0
        self._random = rng or random.Random()  # a seeded one: the same ids every run (herald simulate)
        self._encoder = IdEncoder()  # a millisecond's ids share their first 22 characters: encoded once

    def next(self, now_ms: int) -> str:
        if now_ms <= self._last_ms:
            now_ms = self._last_ms
            self._last_entropy += 1
        else:
            self._last_ms = now_ms
            self._last_entropy = self._random.getrandbits(79)  # room to count up
        return self._encoder.encode(now_ms, self._last_entropy)


@dataclass
class PlannedBatch:
    """What planning a batch of sends produced: bus records, status events, entries held by quiet hours, profiles read."""

    items: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    events: list[StatusEvent] = field(default_factory=list)
    deferred: list[Scheduled] = field(default_factory=list)
    profiles: dict[str, Profile] = field(default_factory=dict)  # many notifications of one user read the profile once
    digests: list[Collected] = field(default_factory=list)  # sends collected into digests (actors/services/digests.py)


class SendPlanner:
    """One user's send planned (preferences, locale, quiet hours, templates) and a batch of them made durable.

    The Ingress plans what the API accepts; the fan-out actor (actors/fanout.py) plans each
    subscriber's copy of a topic send with the same `plan` and `commit`.
    """

    def __init__(
        self, bus: Bus, recorder: Mailbox[RecorderMessage], *, renderer: TemplateService | None = None,
        users: UserDirectory | None = None, scheduler: Mailbox[ScheduleAt] | None = None, digests: Digests | None = None,
    ) -> None:
        self.bus = bus
        self.digests = digests  # None: a send naming a digest is refused (422 naming `digest`)
        self.users = users  # None: no preferences; addresses from `to` only
        self.scheduler = scheduler  # None: quiet hours are not applied
        self.renderer = renderer  # None: inline content only
        self.recorder = recorder
        self.ids = IdGenerator()
        self.append_deadline_s: float | None = None  # the Ingress's, with a distributed bus: how long a caller waits for it
        self.record_deadline_s: float | None = None  # the Ingress's, with a distributed log store: how long for the Recorder
        self.health: PortHealth | None = None  # ports known unavailable: refuse at once, and say which failed
        self.late: trio.Nursery | None = None  # where events that could not be handed to the Recorder in time wait
        self.recorded_late = 0  # batches accepted whose events were left to be recorded late

    async def commit(self, batch: PlannedBatch) -> None:
        """The batch's records in one durable bus append, then its held entries to the Scheduler and its events to the Recorder.

        With an `append_deadline_s` (the Ingress's on a distributed bus; None for the background
        actors, which wait as long as it takes, and for the embedded bus, a local file that is slow
        at worst, never away): an append not acknowledged within it raises AppendUncertain and
        marks the bus down in `health` (the Ingress then refuses at once: `_refusal`). With a
        `record_deadline_s` (on a distributed log store), once appended the batch is accepted
        whatever the Recorder does: its events are handed over within the deadline or left to be
        recorded late.
        """
        deadline_s, health = self.append_deadline_s, self.health
        if batch.items:
            if deadline_s is None:
                await self.bus.produce(batch.items)
            else:
                try:
                    with trio.move_on_after(deadline_s) as waited:
                        await self.bus.produce(batch.items)
                except PortUnavailable as exc:
                    if health is not None:
                        health.failed("bus", str(exc))
                    raise
                if waited.cancelled_caught:
                    reason = f"the bus did not acknowledge an append within {deadline_s} s (append_deadline_s)"
                    if health is not None:
                        health.failed("bus", reason)
                    raise AppendUncertain(f"{reason}: its {len(batch.items)} records may still be written")
        if batch.digests:
            assert self.digests is not None
            await self.digests.collect(batch.digests)  # stored before the 202
        for entry in batch.deferred:
            assert self.scheduler is not None
            await ask(self.scheduler.send, partial(ScheduleAt, entry))  # stored before the 202
        if batch.events:
            # Read-your-writes: once the caller has its 202, GET /v1/notifications/{id} finds it. `fresh`: the ids are
            # new (the Recorder reads no stored state for them; a keyed retry's or a fan-out's again is planned again)
            events = tuple(batch.events)
            if self.record_deadline_s is None:
                await ask(self.recorder.send, lambda reply: RecordEvents(events, (), reply, fresh=True))
            else:
                await self._record_within(events, self.record_deadline_s)

    async def _record_within(self, events: tuple[StatusEvent, ...], deadline_s: float) -> None:
        """Hand the events of an appended batch to the Recorder and wait for them to be written, for `deadline_s` at most.

        The records are on the bus: the batch is accepted (its 202 is true) and will be delivered.
        What cannot be recorded now is recorded late: a Recorder that cannot reach the log store
        answers PortUnavailable and keeps the group, writing it again until the store is back; a
        Recorder whose mailbox stays full past the deadline gets the events from a background task
        (`late`) once it has room. A status read meanwhile may not find the notification yet (it
        answers 503 while the log store is away)."""
        reply: Reply[None] = Reply()
        message = RecordEvents(events, (), reply, fresh=True)
        began = trio.current_time()
        with trio.move_on_after(deadline_s) as waited:
            await self.recorder.send(message)
        if waited.cancelled_caught:
            if self.late is None:
                await self.recorder.send(message)
                return
            self.recorded_late += 1
            self.late.start_soon(self._hand_over_late, message)
            return
        with trio.move_on_at(began + deadline_s) as waited:
            try:
                await reply.wait()
            except PortUnavailable as exc:  # the Recorder keeps the group and writes it once the log store is back
                log.info("accepted, recorded late: %s", exc)
                self.recorded_late += 1
        if waited.cancelled_caught:  # in its mailbox: written when the Recorder gets to it
            self.recorded_late += 1

    async def _hand_over_late(self, message: RecordEvents) -> None:
        """Give the Recorder events it had no room for in time, once it has (the node stopping: they are lost to the log
        store only; the records are on the bus and are delivered, their later steps recorded)."""
        try:
            await self.recorder.send(message)
        except Exception as exc:
            log.warning("events of an accepted batch not handed to the Recorder: %r", exc)

    async def read_profiles(self, user_ids: Sequence[str], batch: PlannedBatch) -> None:
        """The profiles of many users `plan` will plan for, read at once into the batch (a topic fan-out's page)."""
        if self.users is not None:
            wanted = [u for u in user_ids if u not in batch.profiles]
            if wanted:
                batch.profiles.update(await self.users.profiles(wanted))

    async def plan(
        self, request: NotificationRequest, batch: PlannedBatch, *, nid: str | None = None, origin: str = "",
        deferred: bool = False, collect: bool = True, keyed: bool = False, now_ms: int | None = None,
    ) -> Receipt | Problem:
        """Check one user's request and add its records, events and held entries to the batch; its receipt or its problem.

        `nid`: the notification id to use (a topic send's subscriber: derived, the same on every
        expansion), else a new one; `origin`: the topic send it is a copy of (its `accepted` step
        names it); `deferred`: its records may have been produced before (the consumer checks the ledger);
        `collect`: a template's digest applies (False: the Digester's own send, which is the digest);
        `keyed`: `nid` is an Idempotency-Key's (its records may be produced twice: Delivery.keyed);
        `now_ms`: the time it is accepted at (a batch's items share the batch's: one clock read), else read now.
        """
        user_id = request.user_id
        if user_id is None:
            return _field_problem("user_id", "required, unless topic names a topic")
        profiles = batch.profiles
        # preferences: contact points, devices, opt-outs, quiet hours, locale (actors/domain/preferences.py, actors/services/user_directory.py)
        profile = profiles.get(user_id)
        if profile is None:
            profile = await self.users.profile(user_id) if self.users is not None else NO_PROFILE
            profiles[user_id] = profile
        # templates: a template_id's parts become the content (actors/services/template_service.py), and what of
        # `data` the web item carries: inline, the send's `data`; templated, only what the web part declares
        if collect and request.template_id is not None and request.digest is None and request.send_at is None:
            request = await self._template_digest(request)
        sent = request
        if request.digest is not None:  # the template is checked as its digest will render it: one event's worth
            problem = self._digest_problem(request)
            if problem is not None:
                return problem
            request = msgspec.structs.replace(request, data=digest_data([(wall_ms(), request.data)], iso))
        # inline content: no await (a coroutine per item is a few % of a batch)
        applied = inline_content(request) or await apply_template(self.renderer, request, profile.preferences.locale)
        if isinstance(applied, Problem):
            return applied
        request, template = applied.request, applied.template
        errors = check_request(request, profile)
        content = request.content
        if errors or content is None:  # check_request names a missing content
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return Problem(title="Unprocessable notification", status=422, detail=detail, errors=errors)
        now = wall_ms() if now_ms is None else now_ms
        if nid is None:
            nid = self.ids.next(now)
        key = user_id.encode()
        prefs = profile.preferences
        zone = await self.users.zone(prefs.timezone) if self.users is not None and prefs.quiet_hours is not None else None  # quiet hours only
        due = None if request.send_at is None else await self._send_at(request, prefs.timezone, now)
        if isinstance(due, Problem):
            return due
        if sent.digest is not None:
            await self._collect(sent, nid, profile, now, batch)
            return Receipt(notification_id=nid)
        plans = plan_channels(request, profile, now, zone or dt.UTC)
        accepted = f"{TOPIC_SEND_PREFIX}{origin}" if origin else ""
        lane = request.priority.lane  # critical and high: the critical lane (docs/reliability.md, "Priority lanes")
        for channel in request.channels:
            plan = plans[channel]
            delivery = Delivery(
                notification_id=nid,
                user_id=user_id,
                channel=channel,
                created_ms=now,
                content=content.only(channel),  # a str enum: compared as its value
                address=plan.address,
                priority=request.priority,
                data=dict(applied.web_data) if channel is Channel.WEB else {},  # no other channel reads it
                addresses=list(plan.addresses) if len(plan.addresses) > 1 else [],
                category=request.category,
                unsubscribe_url=self._unsubscribe_url(request, channel),
                from_profile=plan.from_profile,  # then read again if it waits (held, retried, replayed)
                deferred=deferred,
                keyed=keyed,
            )
            if plan.skip is not None:  # the user's preferences stop this channel: failed, with the reason
                statuses = ((Status.ACCEPTED, accepted), (Status.FAILED, plan.skip))
            elif due is not None:  # send_at: the Scheduler produces it then; preferences and quiet hours are read again then
                held = msgspec.structs.replace(delivery, deferred=True)  # checked at fire time, and against the ledger
                batch.deferred.append(Scheduled(f"{SEND_AT_PREFIX}{nid}:{channel.value}", due, _TOPIC[channel, lane], key, encode_delivery(held)))
                statuses = ((Status.ACCEPTED, accepted), (Status.SCHEDULED, f"until {iso(due)}"))
            elif plan.defer_until_ms is not None and self.scheduler is not None:  # quiet hours: the Scheduler produces it
                held = msgspec.structs.replace(delivery, deferred=True)  # the Scheduler may produce it twice: check the ledger
                entry_id = f"quiet:{nid}:{channel.value}"
                batch.deferred.append(Scheduled(entry_id, plan.defer_until_ms, _TOPIC[channel, lane], key, encode_delivery(held)))
                statuses = ((Status.ACCEPTED, accepted), (Status.QUEUED, f"quiet hours until {iso(plan.defer_until_ms)}"))
            else:
                batch.items.append((_TOPIC[channel, lane], key, encode_delivery(delivery)))
                statuses = ((Status.ACCEPTED, accepted), (Status.QUEUED, ""))
            for status, detail in statuses:
                batch.events.append(StatusEvent(
                    nid, user_id, channel, status, now, detail=detail, created_ms=now, priority=request.priority,
                    template=template,
                ))
        return Receipt(notification_id=nid)

    async def _template_digest(self, request: NotificationRequest) -> NotificationRequest:
        """The request with its template's digest, if the template names one (a send's own digest or send_at wins)."""
        if request.template_id is None or self.renderer is None:
            return request
        loaded = await self.renderer.get(request.template_id)  # cached; a missing template is apply_template's 422
        if loaded is None or loaded.compiled.spec.digest is None:
            return request
        return msgspec.structs.replace(request, digest=loaded.compiled.spec.digest)

    def _digest_problem(self, request: NotificationRequest) -> Problem | None:
        """What refuses a send's digest: its window (actors/domain/digests.check_window), no template, send_at, this node."""
        assert request.digest is not None
        errors = check_window(request.digest.window, "digest.window")
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return Problem(title="Unprocessable notification", status=422, detail=detail, errors=errors)
        if request.template_id is None:
            return _field_problem("digest", "needs template_id: the digest's template renders its events")
        if request.send_at is not None:
            return _field_problem("send_at", "not with digest: the digest's window says when it goes")
        if self.digests is None:
            return _field_problem("digest", "digests are not served by this node")
        return None

    async def _collect(self, request: NotificationRequest, nid: str, profile: Profile, now: int, batch: PlannedBatch) -> None:
        """A send naming a digest: one event into its (user, key) window, `scheduled` until the window fires."""
        assert request.digest is not None and request.user_id is not None
        prefs = profile.preferences
        window = choose_window(request.digest, prefs, request.category)
        zone = await self.users.zone(prefs.timezone) if self.users is not None else dt.UTC
        due, deadline = event_times(window, now, zone, prefs, critical=request.priority is Priority.CRITICAL)
        key = request.digest.key
        event = DigestEvent(nid, request.user_id, key, now, _encode_request(request))
        batch.digests.append((event, due, deadline))
        for channel in request.channels:
            # when its window fires depends on the window's other events: GET /v1/users/{id}/digests says
            for status, detail in ((Status.ACCEPTED, ""), (Status.SCHEDULED, f"digest {key}")):
                batch.events.append(StatusEvent(
                    nid, request.user_id, channel, status, now, detail=detail, created_ms=now, priority=request.priority,
                ))

    async def _send_at(self, request: NotificationRequest, timezone: str, now_ms: int) -> int | None | Problem:
        """When a scheduled send fires (actors/domain/send_at.py); None: no send_at, or now; a 422 if refused."""
        if request.send_at is None:
            return None
        if self.scheduler is None:
            return _field_problem("send_at", "scheduled sends are not served by this node")
        zone = await self.users.zone(timezone) if self.users is not None and isinstance(request.send_at, LocalSendAt) else dt.UTC
        due = resolve_send_at(request.send_at, now_ms, zone)
        return _field_problem(due.field, due.message) if isinstance(due, FieldError) else due

    def _unsubscribe_url(self, request: NotificationRequest, channel: Channel) -> str | None:
        """Email of a notification with a category carries a one-click unsubscribe link for it."""
        if channel is not Channel.EMAIL or request.category is None or self.users is None or request.user_id is None:
            return None
        return self.users.unsubscribe_url(request.user_id, request.category)


def _field_problem(field_name: str, message: str) -> Problem:
    return Problem("Unprocessable notification", 422, f"{field_name}: {message}", errors=[FieldError(field_name, message)])


def topic_send_problem(request: NotificationRequest) -> Problem | None:
    """What makes a send name its audience wrongly: exactly one of user_id and topic; a topic send takes no `to`."""
    if request.topic is None:
        return None if request.user_id is not None else _field_problem("user_id", "required, unless topic names a topic")
    if request.user_id is not None:
        return _field_problem("topic", "give user_id or topic, not both")
    if request.to is not None:
        return _field_problem("to", "not with topic: each subscriber's addresses come from their preferences")
    if request.send_at is not None:
        return _field_problem("send_at", "not with topic (yet): schedule sends to users")
    if request.digest is not None:
        return _field_problem("digest", "not with topic (yet): digests collect one user's sends")
    return None


class Ingress(SendPlanner):
    def __init__(
        self, bus: Bus, mailbox: Mailbox[IngressMessage], recorder: Mailbox[RecorderMessage], workers: int, *, renderer: TemplateService | None = None,
        users: UserDirectory | None = None, scheduler: Mailbox[ScheduleAt] | None = None, topics: TopicSends | None = None,
        digests: Digests | None = None, append_deadline_s: float | None = APPEND_DEADLINE_S,
        record_deadline_s: float | None = APPEND_DEADLINE_S, health: PortHealth | None = None,
    ) -> None:
        super().__init__(bus, recorder, renderer=renderer, users=users, scheduler=scheduler, digests=digests)
        self.append_deadline_s = append_deadline_s
        self.record_deadline_s = record_deadline_s
        self.health = health
        self.mailbox = mailbox
        self.workers = workers
        self.topics = topics  # None: a topic send is refused (422 naming `topic`)
        self.accepted = 0
        self.coalesced = 0  # messages answered by another message's append (for tests and benchmarks)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.late = nursery
            for _ in range(self.workers):
                nursery.start_soon(self._worker)
            task_status.started()

    async def _worker(self) -> None:
        async for message in self.mailbox:
            group = self._coalesce(message)
            # critical first: what waits in the critical lane is appended and answered before the bulk it was taken with
            critical = [m for m in group if _critical(m)]
            parts = [critical, [m for m in group if not _critical(m)]] if 0 < len(critical) < len(group) else [group]
            for n, part in enumerate(parts):
                try:
                    await self._answer(part)
                except BaseException as exc:
                    for m in [m for later in parts[n + 1:] for m in later]:
                        m.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("ingress stopped"))
                    raise

    async def _answer(self, group: list[IngressMessage]) -> None:
        """Accept a group of messages with one append, and answer each (a failure fails every one of them)."""
        keyed = [None if m.ids is None else keyed_id(m.ids, i) for m in group for i in range(len(_requests(m)))]
        try:
            results = await self._accept_group([request for m in group for request in _requests(m)], keyed)
        except BaseException as exc:
            for m in group:
                m.reply.fail(exc if isinstance(exc, Exception) else RuntimeError("ingress stopped"))
            raise
        start = 0
        for m in group:
            mine = results[start : start + len(_requests(m))]
            start += len(mine)
            failed = next((r for r in mine if isinstance(r, PortUnavailable)), None)
            if failed is not None:  # a backend away: the caller's 503 (a batch is answered as a whole)
                m.reply.fail(failed)
            elif isinstance(m, Submit):
                m.reply.send(mine[0])  # type: ignore[arg-type]  # no PortUnavailable among them
            else:
                m.reply.send(mine)  # type: ignore[arg-type]

    def _coalesce(self, first: IngressMessage) -> list[IngressMessage]:
        """`first` and what else waits in the mailbox now (up to COALESCE_MAX_REQUESTS requests): answered by one append.

        Concurrent single POSTs then cost one produce call (one group commit) and one RecordEvents
        round trip to the Recorder, not one each; a receipt still waits until the whole group is durable.
        """
        group = [first]
        count = len(_requests(first))
        while count < COALESCE_MAX_REQUESTS:
            try:
                message = self.mailbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            group.append(message)
            count += len(_requests(message))
        self.coalesced += len(group) - 1
        return group

    async def accept(self, request: NotificationRequest) -> Receipt | Problem:
        """One notification: a batch of one."""
        return (await self.accept_batch([request]))[0]

    async def accept_batch(self, requests: Sequence[NotificationRequest]) -> list[Receipt | Problem]:
        """Each request's receipt or problem, in order (as `_accept_group`); a backend away raises its PortUnavailable."""
        results = await self._accept_group(requests, None)
        for result in results:
            if isinstance(result, PortUnavailable):
                raise result
        return results  # type: ignore[return-value]  # no PortUnavailable among them

    async def _accept_group(
        self, requests: Sequence[NotificationRequest], keyed: Sequence[str | None] | None,
    ) -> list[Receipt | Problem | PortUnavailable]:
        """Each request's receipt or problem, in order; the accepted ones in one durable bus append.

        A request that fails its checks gets its problem and takes no part; the others go to
        the bus together (one produce call, one group commit), then to the Scheduler (those
        quiet hours hold) and the Recorder (one RecordEvents): every receipt is answered
        once all of them are durable, so a crash before the answer leaves none half-accepted
        in a way the caller was told about. A topic send is a fan-out job in the Store,
        durable before its receipt too (TopicSends). `keyed`: per request, the notification id
        its Idempotency-Key fixes (None: a new id; actors/api/idempotency.py).

        A backend away (the bus or the log store known unavailable, an append not acknowledged
        in time: PortUnavailable) is the result of every request that needed the append, and of
        none that did not (a topic send is durable in the Store: its receipt stands).
        """
        batch = PlannedBatch()
        results: list[Receipt | Problem | PortUnavailable] = []
        appended: list[int] = []  # the requests whose receipt waits for the append
        refused = self._refusal()
        now = wall_ms()  # the group's items are accepted together: one clock read
        for index, request in enumerate(requests):
            if index and not index % PLAN_SLICE:  # a large group is planned in slices: the loop is not held for all of it
                await trio.lowlevel.checkpoint()
            nid = keyed[index] if keyed is not None else None
            problem = topic_send_problem(request)
            if problem is not None:
                results.append(problem)
            elif request.topic is not None:
                results.append(await self._accept_topic_send(request, nid))
            elif refused is not None:  # known away: refused before anything of it is written
                results.append(refused)
            else:
                appended.append(index)
                results.append(await self._plan_alone(request, batch, nid, now))
        try:
            await self.commit(batch)
        except PortUnavailable as exc:
            for index in appended:
                if isinstance(results[index], Receipt):  # a 422 stays a 422
                    results[index] = exc
        self.accepted += sum(1 for r in results if isinstance(r, Receipt))
        return results

    def _refusal(self) -> PortUnavailable | None:
        """What a request needing the append gets while the bus or the log store is known unavailable (PortHealth)."""
        if self.health is None:
            return None
        down = self.health.down()
        needed = [port for port in ("bus", "logstore") if port in down]
        if not needed:
            return None
        return PortUnavailable("; ".join(f"{port} unavailable ({down[port]})" for port in needed) + ": nothing appended")

    async def _plan_alone(
        self, request: NotificationRequest, batch: PlannedBatch, nid: str | None = None, now_ms: int | None = None,
    ) -> Receipt | Problem:
        """plan(), but an unexpected error fails this request alone (a 500 problem), leaving nothing of it in the batch.

        Coalesced POSTs share one batch: one request that trips a bug must not fail the others
        answered by the same append.
        """
        marks = len(batch.items), len(batch.deferred), len(batch.events), len(batch.digests)
        try:
            return await self.plan(request, batch, nid=nid, keyed=nid is not None, now_ms=now_ms)
        except Exception:
            log.exception("planning a notification failed; it alone is refused")
            del batch.items[marks[0]:], batch.deferred[marks[1]:], batch.events[marks[2]:], batch.digests[marks[3]:]
            return Problem(title="Internal Server Error", status=500, detail="the notification could not be planned")

    async def _accept_topic_send(self, request: NotificationRequest, nid: str | None = None) -> Receipt | Problem:
        if self.topics is None:
            return _field_problem("topic", "topic sends are not served by this node")
        # its content is checked as a send to a user without preferences would be, but for the addresses
        applied = await apply_template(self.renderer, request, None)
        if isinstance(applied, Problem):
            return applied
        errors = [e for e in check_request(applied.request) if not e.field.startswith("to.")]
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            return Problem(title="Unprocessable notification", status=422, detail=detail, errors=errors)
        nid = nid or self.ids.next(wall_ms())
        await self.topics.accept(nid, request)
        return Receipt(notification_id=nid)

