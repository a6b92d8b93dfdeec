"""Your configuration under the machines: each configured channel's limits, and the configurations that cannot behave well.

`configured_targets()` reads HERALD_PROPERTIES_CONFIG (a herald.toml, read by actors/config.py as `herald serve`
reads it) and pins each machine's setup to each channel's capacity, refill rate, failure threshold, open timeout and
success threshold (and the gate's probe lease); the rest (start times, workers, events) is drawn as ever.
What cannot behave well is actors/limits_check.py's (printed first by `herald check properties --config`).
"""

from __future__ import annotations

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
    from tests.kit.targets import MUTANTS, TARGETS

    known = frozenset([t.name for t in TARGETS] + [m.name for m in MUTANTS])

    config = config_from_env()
    if config is None:
        return []
    return [t for channel in Channel for t in channel_targets(config, channel) if selected(t.name, known)]
