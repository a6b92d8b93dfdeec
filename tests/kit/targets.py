"""The list the property command and the suite run: every (machine, implementation) pair, and the mutants.

TARGETS: the pure machines, then each State backend of STATE_BACKENDS under the leased-bucket and shared-breaker
machines (with workers racing). MUTANTS: deliberately broken implementations, by name, each with the target whose
machine must catch it (`herald check properties --implementation NAME` runs one, to see a failure and its replay).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import INITIALIZE_RULE_MARKER, RuleBasedStateMachine, initialize

from tests.kit import mutants
from tests.kit.implementations import (
    PURE, STATE_BACKENDS, StateFactory, StateLeasedBucket, StateSharedBreaker, on_state, redis_available, redis_state,
)
from tests.kit.machines import machine_for


@dataclass(frozen=True)
class Target:
    name: str  # e.g. "shared-breaker/memory-state"
    kind: str  # which machine: bucket, breaker, leased-bucket, shared-breaker
    implementation: type
    state_backed: bool = False
    pins: tuple[tuple[str, Any], ...] = ()  # setup arguments fixed (a configured channel's limits), the rest drawn

    def machine(self) -> type[RuleBasedStateMachine]:
        label = "".join(part.title() for part in self.name.replace("/", "-").replace(":", "-").split("-"))
        machine = machine_for(self.kind, self.implementation, self.state_backed, f"{label}Machine")
        return pinned(machine, dict(self.pins)) if self.pins else machine


def pinned(machine: type[RuleBasedStateMachine], values: dict[str, Any]) -> type[RuleBasedStateMachine]:
    """The machine with some of its setup's arguments fixed: the same rules and invariants, one configuration."""
    base_setup = machine.setup  # type: ignore[attr-defined]
    drawn = dict(getattr(base_setup, INITIALIZE_RULE_MARKER).arguments)
    unknown = set(values) - set(drawn)
    if unknown:
        raise ValueError(f"{machine.__name__}.setup takes no {sorted(unknown)}")
    drawn.update({name: st.just(value) for name, value in values.items()})

    def setup(self: Any, **arguments: Any) -> None:
        base_setup(self, **arguments)

    return type(machine.__name__, (machine,), {"setup": initialize(**drawn)(setup)})


def state_targets(backend: str, factory: StateFactory) -> list[Target]:
    return [
        Target(f"leased-bucket/{backend}", "leased-bucket", on_state(StateLeasedBucket, factory, "StateLeasedBucket"), True),
        Target(f"shared-breaker/{backend}", "shared-breaker", on_state(StateSharedBreaker, factory, "StateSharedBreaker"), True),
    ]


TARGETS: list[Target] = [Target(f"{kind}/pure", kind, implementation) for kind, implementation in PURE.items()]
for _backend in STATE_BACKENDS:
    TARGETS.extend(state_targets(_backend.name, _backend.factory))


@dataclass(frozen=True)
class Mutant:
    name: str
    target: Target
    what: str


def _mutants() -> list[Mutant]:
    found = []
    for name, kind, implementation, what in mutants.PURE_MUTANTS:
        found.append(Mutant(name, Target(f"{kind}/{name}", kind, implementation), what))
    for name, kind, state_class, what in mutants.STATE_MUTANTS:
        adapter = StateLeasedBucket if kind == "leased-bucket" else StateSharedBreaker
        factory = mutants.factory_of(state_class)
        found.append(Mutant(name, Target(f"{kind}/{name}", kind, on_state(adapter, factory, adapter.__name__), True), what))
    if redis_available():
        for name, kind, make, what in mutants.REDIS_MUTANTS:
            adapter = StateLeasedBucket if kind == "leased-bucket" else StateSharedBreaker
            factory = functools.partial(redis_state, _Deferred(make))
            found.append(Mutant(name, Target(f"{kind}/{name}", kind, on_state(adapter, factory, adapter.__name__), True), what))
    return found


class _Deferred:
    """A RedisState subclass made at first use (importing the Redis backend only when a Redis mutant runs)."""

    def __init__(self, make: Any) -> None:
        self.make, self.made = make, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.made = self.made or self.make()
        return self.made(*args, **kwargs)


MUTANTS: list[Mutant] = _mutants()


def by_name(name: str) -> Target:
    for target in TARGETS:
        if target.name == name:
            return target
    for mutant in MUTANTS:
        if mutant.name == name:
            return mutant.target
    raise KeyError(name)
