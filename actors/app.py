"""The composition root: turns a Config into a running supervision tree.

    herald (System)
    ├── storage    backends: opens every port (reactor.backends.open_backends), closes them last
    ├── recording  recorder
    ├── delivery   scheduler, connection registry, provider:email, provider:sms, provider:push, provider:web
    ├── consumers  consumer-group:<channel> → one supervised PartitionConsumer per partition
    ├── ingress    ingress (a pool of workers on one mailbox), idempotency-leases, signing-keys
    └── front      Hypercorn + Quart-Trio (REST, WebSocket)

Stages boot top to bottom and stop bottom to top. The storage stage comes first: once it
reports the backends it opened, the node's credentials are read from them and the actors
of the other stages are built on them. Everything here is typed by the ports
(reactor/ports.py); which backend serves each is configuration (`bus`, `state`, `store`,
`logstore`: URLs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import trio

from protocol.channels import Channel
from reactor.backends import BackendSettings, Backends, local_state, open_backends
from reactor.files import private_dir, private_umask
from reactor.mailbox import Mailbox, Overflow
from reactor.ports import Bus, LogStore, Store
from reactor.supervisor import ChildSpec, Restart, RestartPolicy, Supervisor
from reactor.system import System, handle_signals

from .api.gateway import FrontEnd, Gateway
from .api.idempotency import Idempotency
from .api.subscriber import SessionCaps, SubscriberLimits
from .clients.call_log import CallLog, CountedClient, call_log_path
from .clients.faults import SandboxFaults
from .clients.sandbox import EmailOutbox, JsonLinesSink
from .clients.web import WebClient
from .config import Config, ConfigError, role_refusal
from .consumer import ConsumerGroup, PartitionConsumer, RetryPolicy
from .ingress import Ingress
from .provider import ChannelClient, Provider
from .recorder import Recorder
from .registry import ConnectionRegistry
from .scheduler import POLL_S, Scheduler
from .services.credentials import API_KEY_FILE, REFRESH_S, ApiKeys, SharedSigningKeys, open_node_credentials
from .services.dead_letters import DeadLetters
from .services.gate import ResilienceGate
from .services.template_service import TemplateService
from .services.user_directory import UserDirectory

log = logging.getLogger("herald")


@dataclass
class Herald:
    """A running node: what tests and the CLI need to reach."""

    config: Config
    system: System
    backends: Backends
    gateway: Gateway
    front: FrontEnd
    scheduler: Scheduler
    providers: dict[Channel, Provider]
    consumer_groups: dict[Channel, ConsumerGroup]
    ingress: Ingress
    recorder: Recorder
    registry: ConnectionRegistry
    api_key: str  # the bootstrap key's text (also in <data_dir>/api-key)
    templates: TemplateService | None = None
    users: UserDirectory | None = None
    sandbox_faults: SandboxFaults | None = None

    @property
    def url(self) -> str:
        return self.front.url()

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
    open until asked to stop; they close once every stage above has stopped (shutdown runs bottom up)."""

    def __init__(self, settings: BackendSettings) -> None:
        self.settings = settings
        self._stop = trio.Event()
        self.backends: Backends | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_backends(self.settings) as backends:
            self.backends = backends
            task_status.started(backends)
            await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()


def default_clients(config: Config, registry: Mailbox[Any]) -> dict[Channel, ChannelClient]:
    return {
        Channel.EMAIL: EmailOutbox(config.outbox_dir, config.email_from),
        Channel.SMS: JsonLinesSink(config.data_dir / "sms.jsonl", "sms"),
        Channel.PUSH: JsonLinesSink(config.data_dir / "push.jsonl", "push"),
        Channel.WEB: WebClient(registry),
    }


async def run_herald(
    config: Config,
    *,
    clients: dict[Channel, ChannelClient] | None = None,
    signals: bool = True,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Boot a node, report it with task_status.started(Herald), run until shut down."""
    refusal = role_refusal(config)
    if refusal is not None:
        raise ConfigError(f"role: {refusal}")
    private_umask()  # every file the node creates from here on is 0600, every folder 0700
    await trio.to_thread.run_sync(private_dir, config.data_dir)
    policy = RestartPolicy()
    storage = Storage(config.backend_settings())
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

        async def run_system(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            await system.run(task_status=task_status)
            nursery.cancel_scope.cancel()  # shut down: stop listening for signals

        await nursery.start(run_system)
        herald = node[0]
        log.info("herald ready on %s; outbox %s", herald.url, config.outbox_dir.resolve())
        task_status.started(herald)


async def wire(
    config: Config, backends: Backends, system: System, policy: RestartPolicy, clients: dict[Channel, ChannelClient] | None,
) -> tuple[Herald, list[Supervisor]]:
    """The node's actors on these backends, and the stages that run them (all but storage)."""
    signing, api_key = await open_node_credentials(
        backends.signing_keys, backends.store, backends.keys, config.data_dir / API_KEY_FILE, config.api_key,
    )
    bus, store, logstore, state = backends.bus, backends.store, backends.logstore, backends.state
    # The embedded Store serves this node alone (one node per data dir): no other node schedules entries
    # or changes the signing keys while it runs, so nothing needs polling. A shared Store does.
    alone = config.backend_settings().urls["store"].startswith("embedded:")
    key_ring = SharedSigningKeys(backends.signing_keys, signing, refresh_s=None if alone else REFRESH_S)

    # Profiles are cached in memory (bounded): a cache, so losing it on a restart costs one read per user.
    users = UserDirectory(
        backends.users, local_state(config.profile_cache_size), signing, lambda: config.public_url or front.url(),
        config.preferences_cache_ttl_s,
    )
    recorder_mb: Mailbox[Any] = Mailbox("recorder", config.recorder_mailbox, Overflow.BLOCK)
    registry_mb: Mailbox[Any] = Mailbox("registry", 4096, Overflow.BLOCK)
    scheduler_mb: Mailbox[Any] = Mailbox("scheduler", 1024, Overflow.BLOCK)
    ingress_mb: Mailbox[Any] = Mailbox("ingress", config.ingress_mailbox, Overflow.FAIL_FAST)
    provider_mbs = {c: Mailbox[Any](f"provider:{c.value}", config.provider_mailbox, Overflow.BLOCK) for c in Channel}

    recorder = Recorder(logstore, recorder_mb, config.recorder_batch)
    # each user's recent pushes, kept in the State for replay: must cover the user's web pushes whose inbox
    # rows are not written yet (at most one consumer batch: the user's partition has one in flight)
    registry = ConnectionRegistry(registry_mb, state, recent=2 * config.consumer_batch)
    # Sandbox clients get their fault setting; every client but web's has its calls logged (actors/clients/call_log.py).
    sandbox_faults, chosen = SandboxFaults.around({**default_clients(config, registry_mb), **(clients or {})}, config.faults_of)
    chosen = {c: client if c is Channel.WEB else CountedClient(c.value, client, CallLog(call_log_path(config.data_dir, c.value)))
              for c, client in chosen.items()}
    providers = {
        c: Provider(c, chosen[c], provider_mbs[c], store, ResilienceGate(c.value, config.limits_of(c)),
                    devices=users if c is Channel.PUSH else None)
        for c in Channel
    }
    scheduler = Scheduler(bus, store, scheduler_mb, poll_s=None if alone else POLL_S)
    retry = RetryPolicy(config.max_attempts, config.retry_initial_s, config.retry_max_s)

    def consumer_factory(channel: Channel) -> Any:
        def make(partition: int) -> PartitionConsumer:
            return PartitionConsumer(
                bus, f"herald-{channel.value}", channel, partition, provider_mbs[channel], recorder_mb, scheduler_mb, store,
                config.consumer_batch, retry, users,  # users: consent read again when a record that waited goes out
            )

        return make

    groups = {c: ConsumerGroup(bus, c, consumer_factory(c), policy) for c in Channel}
    templates = TemplateService(backends.templates, sms_max_segments=config.sms_max_segments, cache_size=config.template_cache_size)
    idempotency = Idempotency(state)
    ingress = Ingress(
        bus, ingress_mb, recorder_mb, config.ingress_workers, renderer=templates, users=users, scheduler=scheduler_mb,
    )
    gateway = Gateway(
        ingress=ingress_mb,
        registry=registry_mb,
        recorder=recorder_mb,
        logstore=logstore,
        keys=ApiKeys(
            backends.keys, state, config.api_key,  # a configured bootstrap key; a generated one is a stored key
            rate_per_s=config.key_rate_per_s, burst=config.key_burst, cache_ttl_s=config.key_cache_ttl_s,
        ),
        secret=signing,
        signing_key_store=backends.signing_keys,
        key_ring=key_ring,
        max_body_bytes=config.max_body_bytes,
        heartbeat_s=config.heartbeat_s,
        session_queue=config.session_queue,
        dead_letters=DeadLetters(store, bus, recorder_mb),
        providers=providers,
        idempotency=idempotency,
        limits=SubscriberLimits(
            state, SessionCaps(config.subscriber_sessions_per_user, config.subscriber_sessions_per_token),
            config.subscriber_rate_per_s, config.subscriber_burst, config.token_issue_rate_per_s, config.token_issue_burst,
        ),
        templates=templates,
        users=users,
        sandbox_faults=sandbox_faults,
    )
    front = FrontEnd(gateway, config.host, config.port, config.shutdown_grace_s)

    stages = [
        Supervisor("recording", [ChildSpec("recorder", recorder.run, stop=recorder_mb.close)], policy),
        Supervisor("delivery", [
            ChildSpec("scheduler", scheduler.run, stop=scheduler_mb.close),
            ChildSpec("registry", registry.run, stop=registry_mb.close),
            *[ChildSpec(f"provider:{c.value}", providers[c].run, stop=provider_mbs[c].close) for c in Channel],
        ], policy),
        Supervisor("consumers", [ChildSpec(f"consumer-group:{c.value}", groups[c].run, stop=groups[c].stop) for c in Channel], policy),
        Supervisor("ingress", [
            ChildSpec("ingress", ingress.run, stop=ingress_mb.close),
            ChildSpec("idempotency-leases", idempotency.keep_leases, stop=idempotency.stop),  # renews long requests' leases
            ChildSpec("signing-keys", key_ring.keep_fresh, stop=key_ring.stop),  # a ring changed on another node
        ], policy),
        Supervisor("front", [ChildSpec("http", front.run, stop=front.stop)], policy),
    ]
    herald = Herald(
        config, system, backends, gateway, front, scheduler, providers, groups, ingress, recorder, registry, api_key,
        templates, users=users, sandbox_faults=sandbox_faults,
    )
    return herald, stages
