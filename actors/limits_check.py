"""Configurations of a channel's bucket and breaker that cannot behave well, in sentences (`herald check properties --config`)."""

from __future__ import annotations

import math

from protocol.channels import Channel

from .config import Config


def limit_warnings(config: Config) -> list[str]:
    """Configurations that cannot behave well, per channel: each a sentence saying what happens and what to change."""
    found: list[str] = []
    for channel in Channel:
        c = channel.value
        limits = config.limits_of(channel)
        breaker = limits.breaker
        if math.floor(limits.capacity) < 1:
            found.append(f"{c}: capacity {limits.capacity:g} holds no whole token: the shared bucket never grants one "
                         "and nothing is ever sent (capacity >= 1)")
        workers = 2 * config.partitions_of(channel)  # a consumer, so a gate, per lane partition (bulk and critical)
        if 1 <= math.floor(limits.capacity) < workers:
            found.append(f"{c}: capacity {limits.capacity:g} is below one batch per worker ({workers} gates lease from it, "
                         f"each a slice of at least one token for gate_lease_s {config.gate_lease_s:g}): a worker waits "
                         "for tokens another holds unspent (capacity >= 2 x partitions)")
        if breaker.open_timeout_s < config.retry_initial_s:
            found.append(f"{c}: open_timeout_s {breaker.open_timeout_s:g} is shorter than the retry backoff's first step "
                         f"(retry_initial_s {config.retry_initial_s:g}): the breaker is half-open again before the first "
                         "retry is due, so it probes an outage faster than deliveries retry it (open_timeout_s >= "
                         "retry_initial_s)")
        reserve = config.critical_tokens_of(channel)
        if limits.capacity >= 2 and reserve < 1 and config.lane_reserve_tokens > 0:
            found.append(f"{c}: the critical lane's token reserve rounds to 0 at capacity {limits.capacity:g} "
                         f"(lane_reserve_tokens {config.lane_reserve_tokens:g}): bulk can take every token")
    if config.gate_lease_s < config.gate_slice_s:
        found.append(f"gate_lease_s {config.gate_lease_s:g} is shorter than gate_slice_s {config.gate_slice_s:g}: a "
                     "worker's slice (the rate of gate_slice_s) expires before it can be spent")
    return found
