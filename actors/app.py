"""The composition root: turns a Config into a running supervision tree, by the node's role.

    herald (System), role all (the default: one node does everything)
    ├── storage    backends: opens every port (reactor.backends.open_backends), closes them last
    ├── recording  recorder
    ├── delivery   scheduler, fanout, connection registry, provider:<channel> and provider:<channel>:queries per channel
    ├── consumers  consumer-group:<channel> → one supervised PartitionConsumer per partition
    ├── ingress    ingress (a pool of workers on one mailbox), idempotency-leases, jobs, signing-keys
    ├── metrics    metrics (reads bus lag, DLQ depth, breakers for a scrape), metrics-port (if metrics_port is set)
    └── front      Hypercorn + Quart-Trio (REST, WebSocket; GET /metrics with an admin key)

The other roles (ROLES) build a part of that tree, and meet the others only through the
ports (bus, state, store, logstore, broker):

    api     storage, recording, ingress (with schedule-writer), front (every area but sessions and inbox)
    worker  storage, recording, delivery (scheduler, fanout, providers and their queries), consumers
    edge    storage, recording, delivery (connection registry), front (sessions and inbox)

Every role records what it learns (the api accepted notifications, the worker outcomes,
the edge acks and reads) through a Recorder of its own. Stages boot top to bottom and
stop bottom to top. The storage stage comes first: once it reports the backends it
opened, the node's credentials are read from them and the actors of the other stages are
built on them. Everything here is typed by the ports (reactor/ports.py); which backend
serves each is configuration (`bus`, `state`, `store`, `logstore`, `broker`: URLs). With
the embedded backends only the role `all` runs as a process (actors/config.py); tests
build the other roles in one process on backends they open once (`run_herald(backends=)`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass, field
from typing import Any

import trio

from protocol.channels import LANES, Channel, Lane
from reactor.clock import wall_ms
from reactor.backends import BackendSettings, Backends, in_process, local_state, open_backends
from reactor.files import private_dir, private_umask
from reactor.mailbox import Mailbox, Overflow
from reactor.port_health import PortHealth
from reactor.ports import Bus, LogStore, State, Store
from reactor.supervisor import ChildSpec, Restart, RestartPolicy, Supervisor
from reactor.system import System, handle_signals

from .api.gateway import FRONT_ROLES, FrontEnd, Gateway
from .api.idempotency import Idempotency
from .api.metrics_port import MetricsPort
from .api.subscriber import SessionCaps, SubscriberLimits
from .clients.call_log import CallLog, CountedClient, call_log_path
from .clients.faults import SandboxFaults
from .clients.apns import ApnsClient
from .clients.failover import FailoverClient, FailoverGate, Member
from .clients.fcm import FcmClient
from .clients.provider_config import (
    ApnsProvider, FcmProvider, SandboxProvider, SendgridProvider, SmtpProvider, TwilioProvider, WebhookProvider,
    provider_names,
)
from .clients.sandbox import EmailOutbox, JsonLinesSink
from .clients.sendgrid import SendgridClient
from .clients.smtp import SmtpClient
from .clients.twilio import TwilioClient
from .clients.web import WebClient
from .clients.webhook import WebhookClient
from .config import ROLES, Config, ConfigError, role_refusal
from .consumer import ConsumerGroup, PartitionConsumer, RetryPolicy
from .digester import Digester
from .fanout import Fanout
from .ingress import Ingress, SendPlanner
from .jobs import JobMessage, Jobs
from .messages import Attempt, CircuitQuery, IngressMessage, RecorderMessage, RegistryMessage
from .metrics import ConsumedTopic, FanoutProgress, FanoutReader, NodeMetrics, RequestStats, SessionCounts, new_outcomes
from .provider import ChannelClient, Devices, Gate, Provider
from .recorder import Recorder
from .registry import ConnectionRegistry, RecentPushes
from .scheduler import POLL_S, ScheduleAt, Scheduler
from .services.credentials import API_KEY_FILE, REFRESH_S, ApiKeys, SharedSigningKeys, open_node_credentials
from .services.dead_letters import DeadLetters
from .services.receipts import Receipts, ReceiptSettings
from .services.gate import ResilienceGate
from .services.template_service import TemplateService
from .services.digests import Digests
from .services.topic_sends import TopicSends
from .services.user_directory import UserDirectory, WebhookEndpoints

log = logging.getLogger("herald")


@dataclass
class Herald:
    """A running node: what tests and the CLI need to reach. What its role does not run is None (or empty)."""

    config: Config
    system: System
    backends: Backends
    recorder: Recorder
    api_key: str  # the bootstrap key's text (also in <data_dir>/api-key)
    gateway: Gateway | None = None  # api, edge, all
    front: FrontEnd | None = None
    scheduler: Scheduler | None = None  # worker, all
    providers: dict[Channel, Provider] = field(default_factory=dict)
    consumer_groups: dict[Channel, ConsumerGroup] = field(default_factory=dict)
    ingress: Ingress | None = None  # api, all
    health: PortHealth | None = None  # the ports known unavailable now (GET /readyz)
    jobs: Jobs | None = None
    registry: ConnectionRegistry | None = None  # edge, all
    templates: TemplateService | None = None
    users: UserDirectory | None = None
    sandbox_faults: SandboxFaults | None = None
    fanout: Fanout | None = None  # worker, all: expands topic sends
    topic_sends: TopicSends | None = None  # api, all: accepts them
    digester: Digester | None = None  # worker, all: fires due digests (actors/digester.py)
    digests: Digests | None = None  # api, all: collects sends into digests
    metrics: NodeMetrics | None = None  # its registry: what GET /metrics (and the metrics port) serve
    metrics_port: MetricsPort | None = None  # metrics_port set

    @property
    def url(self) -> str:
        return self.front.url() if self.front is not None else ""

    @property
    def metrics_url(self) -> str:
        """The metrics port's /metrics, when it is on."""
        return f"{self.metrics_port.url()}/metrics" if self.metrics_port is not None and self.metrics_port.url() else ""

    @property
    def bus(self) -> Bus:
        return self.backends.bus

    @property
    def store(self) -> Store:
        return self.backends.store

    @property
    def logstore(self) -> LogStore:
        return self.backends.logstore


class Storage:
    """The storage stage's one child: opens the backends, reports them (task_status), and holds them
    open until asked to stop; they close once every stage above has stopped (shutdown runs bottom up).

    Given backends already open (`lent`: shared by several nodes of one process), it reports
    those and neither opens nor closes them.
    """

    def __init__(self, settings: BackendSettings, lent: Backends | None = None) -> None:
        self.settings = settings
        self.lent = lent
        self._stop = trio.Event()
        self.backends: Backends | None = None

    async def run(self, *, task_status: trio.TaskStatus[Backends] = trio.TASK_STATUS_IGNORED) -> None:
        if self.lent is not None:
            self.backends = self.lent
            task_status.started(self.lent)
            await self._stop.wait()
            return
        async with open_backends(self.settings) as backends:
            self.backends = backends
            task_status.started(backends)
            await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def _fanout_reader(fanout: Fanout) -> FanoutReader:
    """herald_fanout_*: what this worker's fan-out actor has expanded, and what is left of the send it works on."""

    def read() -> FanoutProgress:
        f = fanout.figures
        working = bool(f.current_job)
        return FanoutProgress(
            subscribers_expanded=f.expanded, sends_pending=1 if working else 0,
            subscribers_pending=max(0, f.current_total - f.current_expanded) if working else 0,
        )

    return read


def _close_all(*mailboxes: Mailbox[Any]) -> None:
    """Stop an actor that reads several mailboxes (a Provider: one per lane)."""
    for mailbox in mailboxes:
        mailbox.close()


def default_clients(config: Config, backends: Backends, recent: RecentPushes) -> dict[Channel, ChannelClient]:
    clients: dict[Channel, ChannelClient] = {
        Channel.EMAIL: EmailOutbox(config.outbox_dir, config.email_from, config.commit_linger_ms / 1000),
        Channel.SMS: JsonLinesSink(config.data_dir / "sms.jsonl", "sms", config.commit_linger_ms / 1000),
        Channel.PUSH: JsonLinesSink(config.data_dir / "push.jsonl", "push", config.commit_linger_ms / 1000),
        Channel.WEB: WebClient(backends.broker, recent, one_by_one=in_process(str(config.state)) and in_process(str(config.broker))),
        Channel.WEBHOOK: JsonLinesSink(config.data_dir / "webhook.jsonl", "webhook", config.commit_linger_ms / 1000),
    }
    for channel in Channel:  # configured real providers in place of the sandbox; several: failover, in order
        specs = config.providers_of(channel)
        chosen = [_client_of(spec, config, clients[channel]) for spec in specs]
        if len(chosen) == 1:
            clients[channel] = chosen[0]
        elif chosen:  # each member behind a gate of its own (the Provider's gate is then open: failover_channels)
            members = [
                Member(name, client, ResilienceGate(f"{channel.value}.{name}", config.limits_of(channel), backends.state,
                                                    config.gate_settings(), critical_reserve=config.critical_tokens_of(channel)))
                for name, client in zip(provider_names(specs), chosen)
            ]
            clients[channel] = FailoverClient(channel.value, members, config.provider_throttle_wait_s)
    return clients


def _forgets(channel: Channel, users: UserDirectory) -> Devices | None:
    """Where a channel's gone addresses are removed: push tokens from the devices, webhook URLs from the contact points."""
    if channel is Channel.PUSH:
        return users
    if channel is Channel.WEBHOOK:
        return WebhookEndpoints(users, wall_ms)
    return None


def provider_gate(config: Config, channel: Channel, client: ChannelClient, state: State) -> Gate:
    """The Provider's gate: the channel's, or on a failover channel an open one that shows its providers' gates."""
    inner = client.inner if isinstance(client, CountedClient) else client
    if isinstance(inner, FailoverClient):
        return FailoverGate(inner.members)
    return ResilienceGate(channel.value, config.limits_of(channel), state, config.gate_settings(),
                          critical_reserve=config.critical_tokens_of(channel))


def receipt_settings(config: Config, public_url: Callable[[], str]) -> ReceiptSettings:
    """What verifies the configured providers' receipts: SendGrid's webhook keys, Twilio's auth tokens per account."""
    from .domain.receipts import load_sendgrid_key

    settings = ReceiptSettings(public_url=public_url)
    for channel in Channel:
        for spec in config.providers_of(channel):
            if isinstance(spec, SendgridProvider) and spec.webhook_key is not None:
                settings.sendgrid_keys.append(load_sendgrid_key(spec.webhook_key.reveal()))
            elif isinstance(spec, TwilioProvider):
                settings.twilio_tokens.setdefault(spec.account_sid, []).append(spec.auth_token)
    return settings


def _client_of(spec: Any, config: Config, sandbox: ChannelClient) -> ChannelClient:
    """The client of one configured provider (the sandbox type: the channel's sandbox client)."""
    if isinstance(spec, SmtpProvider):
        return SmtpClient(spec, config.email_from)
    if isinstance(spec, SendgridProvider):
        return SendgridClient(spec, config.email_from)
    if isinstance(spec, TwilioProvider):  # receipts: Twilio is told where to post statuses when the public URL is known
        return TwilioClient(spec, f"{config.public_url.rstrip('/')}/v1/webhooks/twilio" if config.public_url else "")
    if isinstance(spec, FcmProvider):
        return FcmClient(spec)
    if isinstance(spec, ApnsProvider):
        return ApnsClient(spec)
    if isinstance(spec, WebhookProvider):
        return WebhookClient(spec)
    if isinstance(spec, SandboxProvider) and spec.dkim is not None and isinstance(sandbox, EmailOutbox):  # a DKIM-signed outbox
        return EmailOutbox(config.outbox_dir, config.email_from, config.commit_linger_ms / 1000, dkim=spec.dkim)
    return sandbox


class ScheduleWriter:
    """The api role's answer to the Ingress's ScheduleAt (quiet hours, scheduled_at): the entry goes
    into the Store before the 202, where the Scheduler of a worker finds it (the Scheduler claims
    entries from the Store; in the `all` role the Ingress asks the node's Scheduler itself)."""

    def __init__(self, store: Store, mailbox: Mailbox[ScheduleAt]) -> None:
        self.store = store
        self.mailbox = mailbox

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        async for message in self.mailbox:
            try:
                await self.store.schedule(message.entry)
            except Exception as exc:
                message.reply.fail(exc)
                raise
            message.reply.send(None)


async def run_herald(
    config: Config,
    *,
    clients: dict[Channel, ChannelClient] | None = None,
    signals: bool = True,
    backends: Backends | None = None,
    task_status: trio.TaskStatus[Herald] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Boot a node, report it with task_status.started(Herald), run until shut down.

    `backends`: ports the caller opened and shares between nodes of this process (tests of the
    roles): the node neither opens nor closes them, and the refusal of a role other than `all`
    on embedded backends does not apply (the caller made them shared).
    """
    if backends is None:
        refusal = role_refusal(config)
        if refusal is not None:
            raise ConfigError(f"role: {refusal}")
    if config.role not in ROLES:
        raise ConfigError(f"role: expected one of {', '.join(ROLES)}, got {config.role!r}")
    private_umask()  # every file the node creates from here on is 0600, every folder 0700
    await trio.to_thread.run_sync(private_dir, config.data_dir)
    policy = RestartPolicy()
    storage = Storage(config.backend_settings(), backends)
    node: list[Herald] = []

    async def build() -> list[Supervisor]:
        assert storage.backends is not None  # the storage stage is ready
        herald, stages = await wire(config, storage.backends, system, policy, clients)
        node.append(herald)
        return stages

    system = System([
        # The actors hold the backends it opened: it is not restarted (a failure stops the node; the
        # embedded bus restarts itself in place, under a supervisor of its own).
        Supervisor("storage", [ChildSpec("backends", storage.run, stop=storage.stop, restart=Restart.TRANSIENT)],
                   RestartPolicy(max_restarts=0)),
        build,
    ], grace_s=config.shutdown_grace_s)
    async with trio.open_nursery() as nursery:
        if signals:
            await nursery.start(handle_signals, system)

        async def run_system(*, task_status: trio.TaskStatus[System] = trio.TASK_STATUS_IGNORED) -> None:
            await system.run(task_status=task_status)
            nursery.cancel_scope.cancel()  # shut down: stop listening for signals

        await nursery.start(run_system)
        herald = node[0]
        log.info("herald (%s) ready on %s; outbox %s", config.role, herald.url or "no front end", config.outbox_dir.resolve())
        task_status.started(herald)


async def wire(
    config: Config, backends: Backends, system: System, policy: RestartPolicy, clients: dict[Channel, ChannelClient] | None,
) -> tuple[Herald, list[Supervisor]]:
    """The actors of the node's role on these backends, and the stages that run them (all but storage)."""
    role = config.role
    works, edge, api = role in ("all", "worker"), role in ("all", "edge"), role in ("all", "api")
    # The embedded Store serves this node alone (one node per data dir): no other node schedules entries
    # or changes the signing keys while it runs, so nothing needs polling. A shared Store does.
    urls = config.backend_settings().urls
    alone = urls["store"].startswith("embedded:")
    signing, api_key = await open_node_credentials(
        backends.signing_keys, backends.store, backends.keys, config.data_dir / API_KEY_FILE, config.api_key, shared=not alone,
    )
    bus, store, logstore, state = backends.bus, backends.store, backends.logstore, backends.state
    key_ring = SharedSigningKeys(backends.signing_keys, signing, refresh_s=None if alone else REFRESH_S)
    # Ports known unavailable (GET /readyz): the bus is checked by asking an end offset while it is marked down
    probe_topic = Channel.WEB.topic(LANES[0])
    health = PortHealth({"bus": partial(bus.end_offset, probe_topic, 0)})

    # Profiles are cached in memory (bounded): a cache, so losing it on a restart costs one read per user.
    users = UserDirectory(
        backends.users, local_state(config.profile_cache_size), signing, lambda: config.public_url or herald.url,  # once it serves
        config.preferences_cache_ttl_s,
    )
    recorder_mb: Mailbox[RecorderMessage] = Mailbox("recorder", config.recorder_mailbox, Overflow.BLOCK)
    scheduler_mb: Mailbox[ScheduleAt] = Mailbox("scheduler", 1024, Overflow.BLOCK)
    recorder = Recorder(logstore, recorder_mb, config.recorder_batch, config.commit_linger_ms / 1000, health=health)
    templates = TemplateService(backends.templates, sms_max_segments=config.sms_max_segments, cache_size=config.template_cache_size)
    # each user's recent pushes, kept in the State for replay: must cover the user's web pushes whose inbox
    # rows are not written yet (at most one consumer window: what the user's partition has out)
    recent = RecentPushes(state, per_user=2 * max(config.consumer_batch, config.consumer_window))
    herald = Herald(config, system, backends, recorder, api_key, templates=templates, users=users)
    herald.health = health
    stages = [Supervisor("recording", [ChildSpec("recorder", recorder.run, stop=recorder_mb.close)], policy)]
    delivery: list[ChildSpec] = []
    query_mbs: dict[Channel, Mailbox[CircuitQuery]] = {}
    mailboxes: list[Mailbox[Any]] = [recorder_mb]  # herald_mailbox_messages: the actors' mailboxes of this role
    outcomes = {c.value: new_outcomes() for c in Channel} if works else {}  # herald_deliveries_total, counted by the consumers

    if works:
        provider_mbs = {c: Mailbox[Attempt](f"provider:{c.value}", config.provider_mailbox, Overflow.BLOCK) for c in Channel}
        # the critical lane's attempts: a mailbox of their own, never behind the bulk lane's backlog (docs/reliability.md)
        critical_mbs = {c: Mailbox[Attempt](f"provider:{c.value}:critical", config.provider_mailbox, Overflow.BLOCK) for c in Channel}
        query_mbs = {c: Mailbox[CircuitQuery](f"provider:{c.value}:queries", 64, Overflow.FAIL_FAST) for c in Channel}
        # Sandbox clients get their fault setting; every client but web's has its calls logged (actors/clients/call_log.py).
        herald.sandbox_faults, chosen = SandboxFaults.around({**default_clients(config, backends, recent), **(clients or {})}, config.faults_of)
        chosen = {c: client if c is Channel.WEB else CountedClient(c.value, client, CallLog(call_log_path(config.data_dir, c.value)))
                  for c, client in chosen.items()}
        herald.providers = {
            c: Provider(c, chosen[c], provider_mbs[c], store, provider_gate(config, c, chosen[c], state),
                        devices=_forgets(c, users), queries=query_mbs[c], max_in_flight=config.max_in_flight_of(c),
                        critical=critical_mbs[c], critical_reserve=config.critical_slots_of(c),
                        throttle_wait_s=config.provider_throttle_wait_s)
            for c in Channel
        }
        herald.scheduler = scheduler = Scheduler(bus, store, scheduler_mb, poll_s=None if alone else POLL_S)
        retry = RetryPolicy(config.max_attempts, config.retry_initial_s, config.retry_max_s)

        def consumer_factory(channel: Channel) -> Callable[[Lane, int], PartitionConsumer]:
            def make(lane: Lane, partition: int) -> PartitionConsumer:
                provider_mb = critical_mbs[channel] if lane is Lane.CRITICAL else provider_mbs[channel]
                return PartitionConsumer(
                    bus, f"herald-{channel.value}", channel, partition, provider_mb, recorder_mb, scheduler_mb, store,
                    config.consumer_batch, retry, users,  # users: consent read again when a record that waited goes out
                    window=config.consumer_window, window_bytes=config.consumer_window_bytes, lane=lane,
                    outcomes=outcomes[channel.value],
                )

            return make

        herald.consumer_groups = {c: ConsumerGroup(bus, c, consumer_factory(c), policy) for c in Channel}
        delivery.append(ChildSpec("scheduler", scheduler.run, stop=scheduler_mb.close))
        # topic sends: expanded into each subscriber's notification, planned as the Ingress plans a send (actors/fanout.py)
        planner = SendPlanner(bus, recorder_mb, renderer=templates, users=users, scheduler=scheduler_mb)
        # The embedded Store is this node's alone: a lease held by an earlier process of this data dir is its own
        # (it died), so one owner name across restarts takes the job back at once. A shared Store: one name per
        # process, and a job a dead worker held is taken over when its lease ends (found by polling).
        herald.fanout = fanout = Fanout(
            store, planner, batch=config.fanout_batch, lease_s=config.fanout_lease_s, poll_s=None if alone else POLL_S,
            owner="fanout-embedded" if alone else None,
        )
        delivery.append(ChildSpec("fanout", fanout.run, stop=fanout.stop))
        # digests: due windows fired as one notification each, planned as the Ingress plans a send (actors/digester.py)
        herald.digester = digester = Digester(
            store, planner, lease_s=config.fanout_lease_s, poll_s=None if alone else POLL_S, owner="digester-embedded" if alone else None,
        )
        delivery.append(ChildSpec("digester", digester.run, stop=digester.stop))
        mailboxes += [scheduler_mb, *provider_mbs.values(), *critical_mbs.values(), *query_mbs.values()]

    registry_mb: Mailbox[RegistryMessage] | None = None
    if edge:
        registry_mb = Mailbox("registry", 4096, Overflow.BLOCK)
        herald.registry = ConnectionRegistry(registry_mb, backends.broker, recent)
        mailboxes.append(registry_mb)
        delivery.append(ChildSpec("registry", herald.registry.run, stop=registry_mb.close))
    if works:
        for c, provider in herald.providers.items():
            delivery += [
                ChildSpec(f"provider:{c.value}", provider.run, stop=partial(_close_all, provider_mbs[c], critical_mbs[c])),
                ChildSpec(f"provider:{c.value}:queries", provider.answer_queries, stop=query_mbs[c].close),
            ]
    if delivery:
        stages.append(Supervisor("delivery", delivery, policy))
    if works:
        groups = herald.consumer_groups
        stages.append(Supervisor("consumers", [ChildSpec(f"consumer-group:{c.value}", g.run, stop=g.stop) for c, g in groups.items()], policy))

    gateway_parts: dict[str, Any] = {}
    if api:
        ingress_mb: Mailbox[IngressMessage] = Mailbox("ingress", config.ingress_mailbox, Overflow.FAIL_FAST)
        jobs_mb: Mailbox[JobMessage] = Mailbox("jobs", 64, Overflow.FAIL_FAST)
        idempotency = Idempotency(state)
        dead_letters = DeadLetters(store, bus, recorder_mb)
        herald.topic_sends = topic_sends = TopicSends(store)
        if herald.fanout is not None:  # the worker in this process expands them at once (another polls the Store)
            topic_sends.listeners.append(herald.fanout.wake)
        herald.digests = digests = Digests(store)
        if herald.digester is not None:  # the same: a window due at once (a critical event) fires at once
            digests.listeners.append(herald.digester.wake)
        herald.ingress = ingress = Ingress(
            bus, ingress_mb, recorder_mb, config.ingress_workers, renderer=templates, users=users, scheduler=scheduler_mb,
            topics=topic_sends, digests=digests, health=health,
            # deadlines where the port's server can be away (a local file is slow at worst: a 503 there would be false)
            append_deadline_s=None if urls["bus"].startswith("embedded:") else config.append_deadline_s,
            record_deadline_s=None if urls["logstore"].startswith("embedded:") else config.append_deadline_s,
        )
        herald.jobs = jobs = Jobs(jobs_mb, dead_letters)
        mailboxes += [ingress_mb, jobs_mb, *([] if works else [scheduler_mb])]  # the api role's scheduler_mb: the schedule-writer's
        children = [ChildSpec("ingress", ingress.run, stop=ingress_mb.close)]
        if not works:  # no Scheduler here: what the Ingress schedules goes to the Store, for the workers' Schedulers
            children.append(ChildSpec("schedule-writer", ScheduleWriter(store, scheduler_mb).run, stop=scheduler_mb.close))
        children += [
            ChildSpec("idempotency-leases", idempotency.keep_leases, stop=idempotency.stop),  # renews long requests' leases
            ChildSpec("jobs", jobs.run, stop=jobs_mb.close),
            ChildSpec("signing-keys", key_ring.keep_fresh, stop=key_ring.stop),  # a ring changed on another node
        ]
        stages.append(Supervisor("ingress", children, policy))
        gateway_parts = {
            "ingress": ingress_mb, "idempotency": idempotency, "dead_letters": dead_letters, "jobs": jobs_mb, "digests": digests,
            "receipts": Receipts(receipt_settings(config, lambda: config.public_url or herald.url), state, logstore, recorder_mb, users),
        }

    # The metrics: what this role runs (actors/metrics.py). The fan-out families come with a `fanout` reader.
    serves = role in FRONT_ROLES
    requests, sessions = RequestStats(), SessionCounts()
    groups = herald.consumer_groups
    herald.metrics = metrics = NodeMetrics(
        role, bus=bus, store=store, mailboxes=mailboxes,
        providers={c.value: p for c, p in herald.providers.items()}, outcomes=outcomes,
        consumed=[
            ConsumedTopic(g.group, c.topic(lane), partial(g.partitions, c.topic(lane))) for c, g in groups.items() for lane in LANES
        ],
        dlq_channels=[c.value for c in Channel] if works else [],
        requests=requests if serves else None, sessions=sessions if edge else None,
        fanout=_fanout_reader(herald.fanout) if herald.fanout is not None else None,  # the roles that run the fan-out actor
    )
    watching = [ChildSpec("metrics", metrics.run, stop=metrics.stop), ChildSpec("port-health", health.run, stop=health.stop)]
    if config.metrics_port >= 0:
        herald.metrics_port = MetricsPort(metrics, config.metrics_host, config.metrics_port, config.shutdown_grace_s)
        watching.append(ChildSpec("metrics-port", herald.metrics_port.run, stop=herald.metrics_port.stop))
    stages.append(Supervisor("metrics", watching, policy))

    if serves:
        herald.gateway = gateway = Gateway(
            role=role,
            recorder=recorder_mb,
            registry=registry_mb,
            logstore=logstore,
            keys=ApiKeys(
                backends.keys, state, config.api_key,  # a configured bootstrap key; a generated one is a stored key
                rate_per_s=config.key_rate_per_s, burst=config.key_burst, cache_ttl_s=config.key_cache_ttl_s,
            ),
            secret=signing,
            signing_key_store=backends.signing_keys,
            key_ring=key_ring,
            max_body_bytes=config.max_body_bytes,
            max_batch_body_bytes=config.max_batch_body_bytes,
            body_timeout_s=config.body_timeout_s,
            heartbeat_s=config.heartbeat_s,
            session_queue=config.session_queue,
            circuits=query_mbs,
            limits=SubscriberLimits(
                state, SessionCaps(config.subscriber_sessions_per_user, config.subscriber_sessions_per_token),
                config.subscriber_rate_per_s, config.subscriber_burst, config.token_issue_rate_per_s, config.token_issue_burst,
            ),
            templates=templates if api else None,
            users=users if api else None,
            sandbox_faults=herald.sandbox_faults if api else None,
            store=store if api else None,
            metrics=metrics,
            requests=requests,
            sessions=sessions,
            health=health,
            **gateway_parts,
        )
        herald.front = front = FrontEnd(gateway, config.host, config.port, config.shutdown_grace_s)
        stages.append(Supervisor("front", [ChildSpec("http", front.run, stop=front.stop)], policy))
    return herald, stages
