"""Your configuration under the machines: each configured channel's limits, and the configurations that cannot behave well.

`configured_targets()` reads HERALD_PROPERTIES_CONFIG (a herald.toml, read by actors/config.py as `herald serve`
reads it) and pins each machine's setup to each channel's capacity, refill rate, failure threshold, open timeout and
success threshold (and the gate's probe lease); the rest (start times, workers, events) is drawn as ever.
`warnings(config)` lists what cannot behave well, the check `herald check properties --config` prints first.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from actors.config import Config, load_config
from protocol.channels import Channel
from tests.kit.implementations import PURE, STATE_BACKENDS, StateLeasedBucket, StateSharedBreaker, on_state
from tests.kit.targets import Target


def config_from_env() -> Config | None:
    path = os.environ.get("HERALD_PROPERTIES_CONFIG")
    return load_config(Path(path)) if path else None


def channel_targets(config: Config, channel: Channel) -> list[Target]:
    limits = config.limits_of(channel)
    bucket = (("capacity", limits.capacity), ("rate", limits.refill_per_s))
    breaker = (("failures", limits.breaker.failure_threshold), ("timeout", limits.breaker.open_timeout_s),
               ("successes", limits.breaker.success_threshold))
    shared_breaker = breaker + (("probe_lease", config.gate_probe_lease_s),)
    c = channel.value
    targets = [
        Target(f"{c}:bucket/pure", "bucket", PURE["bucket"], pins=bucket),
        Target(f"{c}:breaker/pure", "breaker", PURE["breaker"], pins=breaker),
        Target(f"{c}:leased-bucket/pure", "leased-bucket", PURE["leased-bucket"], pins=bucket),
        Target(f"{c}:shared-breaker/pure", "shared-breaker", PURE["shared-breaker"], pins=shared_breaker),
    ]
    for backend in STATE_BACKENDS:
        targets += [
            Target(f"{c}:leased-bucket/{backend.name}", "leased-bucket",
                   on_state(StateLeasedBucket, backend.factory, "StateLeasedBucket"), True, bucket),
            Target(f"{c}:shared-breaker/{backend.name}", "shared-breaker",
                   on_state(StateSharedBreaker, backend.factory, "StateSharedBreaker"), True, shared_breaker),
        ]
    return targets


def configured_targets() -> list[Target]:
    from tests.kit.budget import selected

    config = config_from_env()
    if config is None:
        return []
    return [t for channel in Channel for t in channel_targets(config, channel) if selected(t.name)]


def warnings(config: Config) -> list[str]:
    """Configurations that cannot behave well, per channel: each a sentence saying what happens and what to change."""
    found = []
    for channel in Channel:
        c = channel.value
        limits = config.limits_of(channel)
        breaker = limits.breaker
        if math.floor(limits.capacity) < 1:
            found.append(f"{c}: capacity {limits.capacity:g} holds no whole token: the shared bucket never grants one "
                         "and nothing is ever sent (capacity >= 1)")
        if limits.capacity < config.consumer_batch:
            found.append(f"{c}: capacity {limits.capacity:g} is below one consumer batch ({config.consumer_batch}): a "
                         f"batch never passes at once, it trickles at {limits.refill_per_s:g}/s (raise capacity or lower "
                         "consumer_batch)")
        if breaker.open_timeout_s < config.retry_initial_s:
            found.append(f"{c}: open_timeout_s {breaker.open_timeout_s:g} is shorter than the retry backoff's first step "
                         f"(retry_initial_s {config.retry_initial_s:g}): the breaker is half-open again before the first "
                         "retry is due, so it probes an outage faster than deliveries retry it (open_timeout_s >= "
                         "retry_initial_s)")
        reserve = config.critical_tokens_of(channel)
        if limits.capacity >= 2 and reserve < 1 and config.lane_reserve_tokens > 0:
            found.append(f"{c}: the critical lane's token reserve rounds to 0 at capacity {limits.capacity:g} "
                         f"(lane_reserve_tokens {config.lane_reserve_tokens:g}): bulk can take every token")
        slice_tokens = limits.refill_per_s * config.gate_slice_s
        if slice_tokens < 1 and limits.refill_per_s >= 1:
            found.append(f"{c}: gate_slice_s {config.gate_slice_s:g} at {limits.refill_per_s:g}/s leases under one token "
                         "a round trip: every delivery is a State round trip")
        if config.gate_lease_s < config.gate_slice_s:
            found.append(f"{c}: gate_lease_s {config.gate_lease_s:g} is shorter than gate_slice_s {config.gate_slice_s:g}: "
                         "slices expire before they can be spent")
    return found
