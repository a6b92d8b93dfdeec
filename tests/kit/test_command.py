"""`herald check properties` (actors/check.py): a budget, a seed, statistics, a failure that replays by its seed, a config."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from actors.config import Config, load_config
from actors.limits_check import limit_warnings

ROOT = Path(__file__).resolve().parents[2]


def herald(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "actors.cli", *words], cwd=ROOT, capture_output=True, text=True, timeout=300)


def failing_steps(output: str) -> list[str]:
    """The shrunk step list Hypothesis printed: the lines from `state = ...` to `state.teardown()`."""
    steps = [line.split("state", 1)[1] for line in output.splitlines() if re.match(r"^E\s+state[ .=]", line)]
    assert steps, output
    return steps


def test_a_broken_implementation_fails_prints_its_steps_and_replays_by_seed() -> None:
    first = herald("check", "properties", "--examples", "400", "--seed", "5", "--target", "state-ignores-the-reserve")
    assert first.returncode == 1, first.stdout + first.stderr
    assert "400 steps per machine" in first.stdout and "seed 5" in first.stdout
    steps = failing_steps(first.stdout)
    assert steps[0].startswith(" = LeasedBucketStateIgnoresTheReserveMachine()") and "bulk_lease" in "".join(steps)
    replay = first.stdout.split("replay (the same runs, the same shrunk steps):\n", 1)[1].strip().splitlines()[0]
    words = shlex.split(replay)
    assert words[:3] == ["herald", "check", "properties"] and "--seed" in words and words[words.index("--seed") + 1] == "5"
    again = herald(*words[1:])
    assert again.returncode == 1
    assert failing_steps(again.stdout) == steps  # the same minimal step list, from the seed alone


def test_a_passing_run_prints_statistics_and_its_time() -> None:
    done = herald("check", "properties", "--examples", "100", "--seed", "1", "--target", "breaker/pure",
                  "--target", "shared-breaker/memory-state")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "breaker/pure:" in done.stdout and "shared-breaker/memory-state:" in done.stdout
    assert done.stdout.count("passing, 0 failing") == 2  # Hypothesis's statistics, per machine
    assert re.search(r"passed in [0-9.]+ s \(seed 1\)", done.stdout)
    assert "leased-bucket" not in done.stdout  # only the targets asked for


def test_list_names_every_target_and_mutant() -> None:
    done = herald("check", "properties", "--list")
    assert done.returncode == 0
    for name in ("bucket/pure", "leased-bucket/memory-state", "shared-breaker/sqlite-state", "state-racy-lease",
                 "state-breaker-cas-lets-two-probes-through"):
        assert name in done.stdout


def test_a_configuration_runs_its_channels_limits_and_warns(tmp_path: Path) -> None:
    toml = tmp_path / "herald.toml"
    toml.write_text("[herald.limits.sms]\ncapacity = 3\nrefill_per_s = 2\nfailure_threshold = 2\nopen_timeout_s = 0.1\n"
                    "success_threshold = 1\n")
    done = herald("check", "properties", "--examples", "60", "--seed", "2", "--config", str(toml), "--target", "sms:")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: sms: open_timeout_s 0.1 is shorter than the retry backoff's first step" in done.stdout
    assert "warning: sms: capacity 3 is below one batch per worker" in done.stdout
    for name in ("sms:bucket/pure", "sms:breaker/pure", "sms:leased-bucket/memory-state", "sms:shared-breaker/sqlite-state"):
        assert f"{name}:" in done.stdout
    assert "email:" not in done.stdout and "\nbucket/pure:" not in done.stdout


def test_a_bad_configuration_is_one_line() -> None:
    done = herald("check", "properties", "--config", "/nonexistent/herald.toml")
    assert done.returncode != 0 and "herald:" in done.stderr and "Traceback" not in done.stderr


def test_the_defaults_draw_no_warning() -> None:
    assert limit_warnings(Config()) == []


@pytest.mark.parametrize(
    "limits, settings, expected",
    [
        ({"capacity": 0.5}, {}, "holds no whole token"),
        ({"capacity": 3}, {}, "below one batch per worker"),
        ({"open_timeout_s": 0.2}, {"retry_initial_s": 0.5}, "shorter than the retry backoff's first step"),
        ({"capacity": 5}, {"lane_reserve_tokens": 0.1, "partitions": {"email": 1, "sms": 1, "push": 1, "web": 1}},
         "reserve rounds to 0"),
        ({}, {"gate_lease_s": 0.01, "gate_slice_s": 0.05}, "expires before it can be spent"),
    ],
)
def test_each_warning(limits: dict[str, float], settings: dict[str, object], expected: str, tmp_path: Path) -> None:
    lines = ["[herald]"] + [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items() if not isinstance(v, dict)]
    for key, table in ((k, v) for k, v in settings.items() if isinstance(v, dict)):
        lines.append(f"[herald.{key}]")
        lines += [f"{name} = {value}" for name, value in table.items()]
    if limits:
        lines.append("[herald.limits.sms]")
        lines += [f"{name} = {value}" for name, value in limits.items()]
    toml = tmp_path / "herald.toml"
    toml.write_text("\n".join(lines) + "\n")
    warnings = limit_warnings(load_config(toml, env={}))
    assert any(expected in w for w in warnings), warnings
    assert all(w.startswith("sms:") or "gate_lease_s" in w for w in warnings), warnings


def test_json_puts_the_result_on_stdout_and_the_run_on_stderr() -> None:
    import json

    listed = herald("check", "properties", "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    names = json.loads(listed.stdout)
    assert "bucket/pure" in names["targets"] and "state-racy-lease" in [m["name"] for m in names["mutants"]]
    failed = herald("check", "properties", "--examples", "200", "--seed", "5", "--target", "state-ignores-the-reserve", "--json")
    assert failed.returncode == 1
    result = json.loads(failed.stdout)  # one JSON line, nothing else on stdout
    assert (result["passed"], result["seed"], result["examples"]) == (False, 5, 200)
    assert result["replay"].startswith("herald check properties") and "--seed 5" in result["replay"]
    assert "LeasedBucketStateIgnoresTheReserveMachine" in failed.stderr  # the run's steps, for a person
