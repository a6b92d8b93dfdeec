"""A scaled-down `herald simulate` (actors/simulate/scale.py): the scenario at 1/N of its volumes, its times kept, the
counts multiplied back by N; refused where a bucket, the users or a Provider's slots would fall below one.

The scaling is pure logic (properties below); the runs are small (minutes of simulated time, seconds of wall time).
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from functools import partial

import pytest
import trio
from hypothesis import given, settings, strategies as st

from actors.cli import main
from actors.config import Config
from actors.simulate.clients import allowance
from actors.simulate.clock import JumpingClock
from actors.simulate.report import write_csv
from actors.simulate.run import deterministic_trio, herald_config, run_scenario, simulate
from actors.simulate.scale import COUNT_SETTINGS, largest_scale, scale_scenario
from actors.simulate.scenario import ScenarioError, parse_scenario
from protocol.channels import Channel
from tests.simulate.test_clock import Turns
from tests.simulate.test_simulate import (ANALYTIC, CAPACITY, F, OUTAGE_AT, OUTAGE_MIN, RATE, REFILL, SMALL, TIMEOUT_S,
                                          _start_cli)

SCALABLE = """
name = "scalable"
duration_min = 30
users = 100000
tick_s = 0.5
[herald]
max_attempts = 9
retry_initial_s = 2.0
retry_max_s = 45.0
consumer_batch = 300
provider_max_in_flight = { email = 700 }
[herald.limits.sms]
capacity = 4000
refill_per_s = 900
failure_threshold = 6
open_timeout_s = 25
success_threshold = 3
[[traffic]]
channel = "sms"
rate = 900
priority = "high"
[[traffic]]
channel = "email"
shape = "ramp"
from_rate = 100
to_rate = 2000
start_min = 3
end_min = 20
[[traffic]]
channel = "email"
shape = "flash"
rate = 50
peak = 5000
at_min = 7
for_min = 2
[providers.sms]
latency_ms = { median = 70, p99 = 300 }
error_rate = 0.01
[[providers.sms.outages]]
at_min = 4
for_min = 3
kind = "timeout"
timeout_s = 8
[[providers.email.throttles]]
at_min = 10
for_min = 4
rate_per_s = 600
retry_after_s = 2
"""


def _scenario(text: str = SCALABLE, **top: object):
    raw = tomllib.loads(text)
    raw.update(top)
    return parse_scenario(raw)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 512))  # 512: the default slots of sms, the scenario's limit
def test_volumes_are_divided_and_times_kept(n):
    """Rates (steady, ramp, flash), the throttle's rate, users, buckets, Provider slots and batch counts / n; every time,
    threshold, attempt count, error rate and latency as it was."""
    scenario = _scenario()
    scaling = scale_scenario(scenario, n)
    scaled, config = scaling.scenario, herald_config(scenario)
    scaled_config = herald_config(scaled)  # what runs is a valid Herald configuration
    assert scaling.n == n and scaled.scale == 1  # what runs is exact: its counts are multiplied by scaling.n, once
    for before, after in zip(scenario.traffic, scaled.traffic):
        assert dataclasses.replace(after, rate=0, from_rate=0, to_rate=0, peak=0) == \
            dataclasses.replace(before, rate=0, from_rate=0, to_rate=0, peak=0)  # times, shape, channel, priority kept
        for t_s in (0, 200, 450, 600, 1000, 1500):
            assert after.rate_at(t_s) == pytest.approx(before.rate_at(t_s) / n)
    for channel, before in scenario.providers.items():
        after = scaled.providers[channel]
        assert (after.median_ms, after.p99_ms, after.error_rate, after.outages) == \
            (before.median_ms, before.p99_ms, before.error_rate, before.outages)
        for b, a in zip(before.throttles, after.throttles):
            assert (a.at_min, a.for_min, a.retry_after_s) == (b.at_min, b.for_min, b.retry_after_s)
            assert a.rate_per_s == pytest.approx(b.rate_per_s / n)
    assert scaled.users == math.ceil(100000 / n)
    assert (scaled.duration_s, scaled.tick_s, scaled.arrivals, scaled.name) == \
        (scenario.duration_s, scenario.tick_s, scenario.arrivals, scenario.name)
    for channel in scenario.channels:
        limits, scaled_limits = config.limits[channel.value], scaled_config.limits[channel.value]
        assert scaled_limits["capacity"] == pytest.approx(limits["capacity"] / n)
        assert scaled_limits["refill_per_s"] == pytest.approx(limits["refill_per_s"] / n)
        for key in ("failure_threshold", "open_timeout_s", "success_threshold"):
            assert scaled_limits[key] == limits[key]
        assert scaled_config.max_in_flight_of(channel) == math.ceil(config.max_in_flight_of(channel) / n)
    assert config.limits["email"]["capacity"] == Config().limits["email"]["capacity"]  # email's bucket is the default's
    for setting in COUNT_SETTINGS:
        assert getattr(scaled_config, setting) == math.ceil(getattr(config, setting) / n)
    for setting in ("max_attempts", "retry_initial_s", "retry_max_s", "commit_linger_ms", "provider_throttle_wait_s",
                    "lane_reserve_in_flight", "lane_reserve_tokens", "gate_slice_s", "gate_lease_s"):
        assert getattr(scaled_config, setting) == getattr(config, setting)
    if n == 1:
        assert scaled == scenario


@pytest.mark.parametrize("herald, users, n, field, most", [
    ({}, 100000, 1001, "herald.limits.email.capacity", 1000),  # email's default bucket (1,000 tokens)
    ({"limits": {"sms": {"capacity": 30}}}, 100000, 31, "herald.limits.sms.capacity", 30),
    ({}, 40, 41, "users", 40),
    ({"provider_max_in_flight": {"sms": 8}}, 100000, 9, "herald.provider_max_in_flight.sms", 8),
])
def test_a_scale_the_scenario_cannot_take_is_refused_naming_the_field(herald, users, n, field, most):
    raw = tomllib.loads("duration_min = 1\n[[traffic]]\nchannel = 'sms'\nrate = 10\n[[traffic]]\nchannel = 'email'\nrate = 10\n")
    raw["users"] = users
    raw["herald"] = {"provider_max_in_flight": {"sms": 5000, "email": 5000}, "limits": {"sms": {"capacity": 5000}}}
    for key, value in herald.items():
        raw["herald"][key] = {**raw["herald"][key], **value}
    scenario = parse_scenario(raw)
    assert largest_scale(scenario) == (most, field)
    assert scale_scenario(scenario, most).n == most  # the largest scale it allows runs
    with pytest.raises(ScenarioError) as caught:
        scale_scenario(scenario, n)
    message = str(caught.value)
    assert message.startswith(f"scale: {n} leaves {field} = ") and f"at most {most} (limited by {field})" in message, message
    with pytest.raises(ScenarioError):
        simulate(dataclasses.replace(scenario, scale=n), seed=1)  # refused before anything runs


@pytest.mark.parametrize("value", [0, -2, 1.5, "10", True, 100_001])
def test_the_scale_key_is_an_integer_from_one(value):
    with pytest.raises(ScenarioError) as caught:
        _scenario(scale=value)
    assert str(caught.value).startswith("scale:")
    assert _scenario(scale=25).scale == 25 and _scenario().scale == 1


def test_a_fractional_throttling_rate_is_spread_over_the_seconds():
    """A whole rate is taken every second as before; a scaled run's fraction averages out instead of rounding up."""
    assert all(allowance(60.0, s) == 60 for s in range(1000))
    assert [allowance(1.2, s) for s in range(5)] == [1, 1, 1, 1, 2]
    assert sum(allowance(0.3, s) for s in range(100)) == 30
    assert sum(allowance(12 / 7, s) for s in range(700)) == 1200


N = 5


def test_a_five_minute_outage_at_scale_n_as_the_arithmetic_says(tmp_path):
    """The analytic scenario of test_simulate at 1/N of its volumes: the same arithmetic on the figures, each count
    multiplied back (the rate, the backlog and the bucket's bounds are the exact scenario's), the breaker's
    transitions and the delays as they were run."""
    scenario = dataclasses.replace(parse_scenario(tomllib.loads(ANALYTIC)), scale=N)
    result = simulate(scenario, seed=3)
    assert result.scale == N and result.notifications_run == RATE * 60 * 10 // N
    rows = {r.minute: r for r in result.rows}
    assert all(rows[m].accepted == RATE * 60 for m in rows)  # even arrivals: exactly the rate, counted back
    before = range(1, OUTAGE_AT + 1)
    during = range(OUTAGE_AT + 1, OUTAGE_AT + OUTAGE_MIN + 1)
    assert all(rows[m].delivered == RATE * 60 and rows[m].retried == 0 and rows[m].breaker == "closed" for m in before)
    assert rows[OUTAGE_AT + 1].transitions.startswith("closed->open:1")  # one breaker: its transitions are not multiplied
    assert sum(r.transitions.count("closed->open") for r in result.rows) == 1
    assert all(rows[m].delivered == 0 and rows[m].breaker == "open" for m in during)
    probes = OUTAGE_MIN * 60 // TIMEOUT_S
    retried = sum(rows[m].retried for m in during)
    # F failures open it, then one failed probe per timeout: each of the run's failures stands for N
    assert retried % N == 0 and N * F <= retried <= N * (F + probes + 1)
    backlog = rows[OUTAGE_AT + OUTAGE_MIN].pending
    assert abs(backlog - RATE * OUTAGE_MIN * 60) <= CAPACITY  # what arrived during the outage waits: the bucket's bounds
    config = herald_config(scale_scenario(scenario).scenario)
    slots = config.max_in_flight_of(Channel.SMS) - config.critical_slots_of(Channel.SMS)  # the run's bulk slots
    assert N * slots <= sum(rows[m].deferred_breaker for m in during) <= N * (slots + retried // N + 1)
    after = range(OUTAGE_AT + OUTAGE_MIN + 1, 11)
    assert "half_open->closed" in rows[OUTAGE_AT + OUTAGE_MIN + 1].transitions
    assert sum(rows[m].deferred_bucket for m in after) > 0
    assert rows[OUTAGE_AT + OUTAGE_MIN + 1].delivered <= CAPACITY + REFILL * 60  # the exact bucket's burst and refill
    total = result.totals["sms"]
    assert total["delivered"] == total["accepted"] == RATE * 60 * 10
    assert total["dead_lettered"] == 0 and total["failed"] == 0 and rows[10].pending == 0
    # the delays are the run's: the backlog waited at most the outage and the drain, not N times it
    worst = max(r.delay_p99_ms or 0 for r in result.rows)
    assert (OUTAGE_MIN - 1) * 60_000 <= worst <= (OUTAGE_MIN + 2) * 60_000
    assert rows[10].delay_p99_ms is not None and rows[10].delay_p99_ms < 1000


def test_a_scaled_run_says_so_and_gives_the_same_bytes_twice(tmp_path):
    """--scale over the command line: two processes, the same table, CSV and PNG; the table's title, the CSV's column and
    the JSON say the scale; the counts are multiples of it."""
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    processes = [_start_cli(scenario, tmp_path / f"out{n}", "--seed", "7", "--scale", "4", hash_seed=str(n)) for n in (1, 2)]
    processes.append(_start_cli(scenario, tmp_path / "json", "--seed", "7", "--scale", "4", "--json"))
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err
    assert outputs[0][0] == outputs[1][0]
    title = outputs[0][0].splitlines()[0]
    assert "SCALED RUN: 1/4 of the volumes simulated, every count multiplied by 4" in title
    assert "at scale 1/4" in outputs[0][1]  # the speed line
    csv = [(tmp_path / f"out{n}" / "small.csv").read_bytes() for n in (1, 2)]
    png = [(tmp_path / f"out{n}" / "small.png").read_bytes() for n in (1, 2)]
    assert csv[0] == csv[1] and png[0] == png[1]
    lines = csv[0].decode().splitlines()
    assert lines[0].endswith(",transitions,scale") and all(line.endswith(",4") for line in lines[1:])
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        assert all(int(row[c]) % 4 == 0 for c in ("accepted", "delivered", "deferred_bucket", "retried", "pending"))
    answer = json.loads(outputs[2][0])
    assert answer["scale"] == 4 and sum(t["accepted"] for t in answer["totals"].values()) == 4 * answer["notifications_run"]
    exact = tmp_path / "exact.csv"
    write_csv(simulate(parse_scenario(tomllib.loads(SMALL)), seed=7).rows, exact)
    assert not exact.read_text().splitlines()[0].endswith("scale")  # an exact run's CSV is as it was


def test_the_command_refuses_a_scale_the_scenario_cannot_take(tmp_path, capsys):
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    assert main(["simulate", str(scenario), "--scale", "21", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"herald: scenario error: {scenario}: --scale: 21 leaves herald.limits.sms.capacity")
    scenario.write_text("scale = 21\n" + SMALL)
    assert main(["simulate", str(scenario), "--out", str(tmp_path / "out")]) == 2
    assert f"{scenario}: scale: 21 leaves herald.limits.sms.capacity" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _turns(scenario, skip_empty_ticks):
    turns = Turns()
    with deterministic_trio(2):
        result = trio.run(partial(run_scenario, scenario, 2, herald_config(scenario), skip_empty_ticks=skip_empty_ticks),
                          clock=JumpingClock(), instruments=[turns])
    return result, turns.turns


def test_a_scaled_run_does_not_wait_for_ticks_without_arrivals():
    """At 0.2 notifications a second and ticks of 0.1 s most ticks have no arrival: a scaled run (simulate() asks for it
    when the scale is above 1) does not turn the run loop for them (1,200 ticks in two minutes, each a turn when waited
    for: ~1,650 turns; ~470 without them, ~20 per notification), and what arrives is the same. An exact run waits for
    every tick as before (its rows byte for byte what they were)."""
    scenario = _scenario("duration_min = 2\nusers = 50\n[[traffic]]\nchannel = 'sms'\nrate = 0.2\n")
    skipping, turns = _turns(scenario, True)
    waiting, every_tick = _turns(scenario, False)
    accepted = skipping.totals["sms"]["accepted"]
    assert 10 <= accepted <= 45 and skipping.totals["sms"]["delivered"] == accepted
    assert [r.accepted for r in skipping.rows] == [r.accepted for r in waiting.rows]  # the same draws
    assert turns < 1200 <= every_tick  # 1,200 ticks in two minutes: each one waited for is a turn at least
