"""Each suite has teeth: every deliberately broken backend (tests/conformance/broken/<port>.py) fails at least one check.

A variant is the embedded backend with one mistake a backend of that port could make
(a non-atomic take-tokens, a bus that reorders a partition, a store that keeps two
dead letters of one delivery, ...). The checks of the port's suite run against it in
turn, each on a fresh place, until one fails with an AssertionError (a check turns a
hang into one: it never waits unboundedly): the variant is caught. Any other exception
is a defect of the check or of the variant, and fails this test. HERALD_CONFORMANCE_ALL_CHECKS=1
runs every check on every variant and prints all that catch it.

A broken module may also say which checks a variant was written against (`CAUGHT_BY`):
each of those must catch it, so that a check changed later cannot stop guarding the
mistake it was written for while another check happens to catch it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

from tests.conformance.backends import BUS_TOPICS, PORTS, Factory, Harness, Place, check_id, checks_of, set_clock


def variants() -> list[tuple[str, str]]:
    return [(port, name) for port in PORTS for name in importlib.import_module(f"tests.conformance.broken.{port}").VARIANTS]


def written_for() -> list[tuple[str, str, str]]:
    """(port, variant, check) for every check a variant was written against."""
    return [
        (port, variant, check)
        for port in PORTS
        for variant, checks in getattr(importlib.import_module(f"tests.conformance.broken.{port}"), "CAUGHT_BY", {}).items()
        for check in checks
    ]


def first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return (str(exc).splitlines() or [type(exc).__name__])[0]


async def failures(port: str, factory: Factory[Any], directory: Path, *, all_checks: bool = False,
                   only: str | None = None) -> dict[str, str]:
    """The first check of the port's suite that fails on `factory` (every one with `all_checks`; the one named `only`):
    {check: its assertion}."""
    suite = importlib.import_module(f"tests.conformance.suites.{port}")
    checks = [check for check in checks_of(suite) if only in (None, check_id(check))]
    if not checks:
        raise ValueError(f"the {port} suite has no check {only!r}")
    failed: dict[str, str] = {}
    for i, check in enumerate(checks):
        place = directory / str(i)
        place.mkdir()
        try:
            await check(Harness(f"broken-{port}", factory, Place(place, f"hb{i}", BUS_TOPICS)))
        except AssertionError as exc:
            failed[check_id(check)] = first_line(exc)
        except BaseExceptionGroup as group:  # raised in a nursery of the check
            assertions, others = group.split(AssertionError)
            if others is not None or assertions is None:
                raise
            failed[check_id(check)] = first_line(assertions.exceptions[0])
        if failed and not all_checks:
            break
    return failed


@pytest.mark.parametrize(("port", "variant"), variants(), ids=[f"{p}-{v}" for p, v in variants()])
async def test_the_suite_catches_a_broken_backend(port: str, variant: str, place_dir: Path, clock: MockClock) -> None:
    factory: Factory[Any] = importlib.import_module(f"tests.conformance.broken.{port}").VARIANTS[variant]
    set_clock(clock, factory)
    caught = await failures(port, factory, place_dir, all_checks=os.environ.get("HERALD_CONFORMANCE_ALL_CHECKS") == "1")
    print(f"{port}/{variant} caught by: " + "; ".join(f"{name} ({why})" for name, why in caught.items()))
    assert caught, f"no check of the {port} suite fails on {variant}"


@pytest.mark.parametrize(("port", "variant", "check"), written_for(), ids=[f"{p}-{v}-{c}" for p, v, c in written_for()])
async def test_a_broken_backend_is_caught_by_the_check_written_for_it(port: str, variant: str, check: str, place_dir: Path,
                                                                      clock: MockClock) -> None:
    factory: Factory[Any] = importlib.import_module(f"tests.conformance.broken.{port}").VARIANTS[variant]
    set_clock(clock, factory)
    assert await failures(port, factory, place_dir, only=check), f"{check} does not catch {port}/{variant}"
