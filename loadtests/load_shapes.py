"""Load shapes as plain data: steady, ramp and the flash sale, as stages of (until, users, spawn rate).

Pure: no locust, no Herald. loadtests/locustfile.py's `HeraldShape` (a locust LoadTestShape)
asks `tick()` of the stages chosen by `--herald-shape`; the tests check the stages without
locust (tests/load/test_load_shapes.py).

A stage says: until `until_s` seconds after the start, move toward `users` at `spawn_rate`
users a second (locust adds or stops users at that rate until the count is reached), then
hold. After the last stage the test stops (tick answers None).
"""

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("steady", "ramp", "flash")
# The flash sale's phases as shares of the run when not given in seconds: ramp to the base,
# hold the base, spike to base x multiple, hold the peak, fall back to the base, hold the base.
FLASH_PHASES = ("ramp", "base", "spike", "hold", "fall", "tail")
FLASH_SHARES = (0.15, 0.2, 0.05, 0.25, 0.1, 0.25)


@dataclass(frozen=True)
class Stage:
    until_s: float
    users: int
    spawn_rate: float


def steady(users: int, spawn_rate: float, duration_s: float) -> list[Stage]:
    """`users` users, started at `spawn_rate` a second, for the whole run."""
    return [Stage(duration_s, users, spawn_rate)]


def ramp(users: int, duration_s: float, ramp_s: float | None = None) -> list[Stage]:
    """From 0 to `users` linearly over `ramp_s` (default: the whole run), then hold until the end."""
    rise = duration_s if ramp_s is None else min(ramp_s, duration_s)
    rate = users / rise if rise > 0 else float(max(users, 1))
    stages = [Stage(rise, users, rate)]
    if rise < duration_s:
        stages.append(Stage(duration_s, users, rate))
    return stages


def flash_phases(duration_s: float, given: dict[str, float] | None = None) -> dict[str, float]:
    """Each flash-sale phase's seconds: those `given`, the rest the run's remaining time split by FLASH_SHARES."""
    given = dict(given or {})
    unknown = set(given) - set(FLASH_PHASES)
    if unknown:
        raise ValueError(f"unknown flash-sale phase(s) {sorted(unknown)}: the phases are {', '.join(FLASH_PHASES)}")
    if any(v < 0 for v in given.values()):
        raise ValueError("a flash-sale phase cannot last a negative time")
    rest = [p for p in FLASH_PHASES if p not in given]
    left = max(duration_s - sum(given.values()), 0.0)
    share = sum(s for p, s in zip(FLASH_PHASES, FLASH_SHARES) if p in rest)
    for phase, phase_share in zip(FLASH_PHASES, FLASH_SHARES):
        if phase in rest:
            given[phase] = left * phase_share / share if share else 0.0
    return {p: given[p] for p in FLASH_PHASES}


def flash_sale(base: int, multiple: float, phases: dict[str, float]) -> list[Stage]:
    """The seed's flash sale: ramp to `base`, hold, spike to `base * multiple`, hold the peak, fall to `base`, hold."""
    if base < 1:
        raise ValueError("the flash sale needs a base of at least 1 user")
    if multiple < 1:
        raise ValueError("the spike's multiple must be at least 1")
    peak = max(round(base * multiple), base)

    def rate(users: float, seconds: float) -> float:
        return users / seconds if seconds > 0 else float(max(users, 1)) * 10

    stages: list[Stage] = []
    t = 0.0
    for phase, users, change in (
        ("ramp", base, base),
        ("base", base, base),
        ("spike", peak, peak - base),
        ("hold", peak, peak - base),
        ("fall", base, peak - base),
        ("tail", base, base),
    ):
        seconds = phases[phase]
        t += seconds
        spawn = rate(change, seconds) if phase in ("ramp", "spike", "fall") else rate(change, 1.0)
        stages.append(Stage(t, users, max(spawn, 1.0)))
    return stages


def tick(stages: list[Stage], run_time_s: float) -> tuple[int, float] | None:
    """What locust should aim for `run_time_s` into the run: (users, spawn rate), or None once the last stage is over."""
    for stage in stages:
        if run_time_s < stage.until_s:
            return stage.users, stage.spawn_rate
    return None


def parse_phases(text: str) -> dict[str, float]:
    """`ramp=5,spike=2` -> {"ramp": 5.0, "spike": 2.0}; a clear ValueError otherwise."""
    phases: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r}: expected phase=seconds, e.g. ramp=5,spike=2")
        try:
            phases[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value!r} is not a number of seconds") from None
    flash_phases(0.0, phases)  # checks the names and signs
    return phases
