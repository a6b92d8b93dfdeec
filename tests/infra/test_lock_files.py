"""The lock files pin, with hashes, every dependency pyproject.toml declares, at versions it allows.

A dependency added to pyproject.toml without `scripts/lock-deps.sh` fails here, not
on a fresh clone's `make run` (pip --require-hashes refuses an unpinned requirement).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent.parent
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, list[tuple[str, int]]]:
    """name -> [(version, number of hashes)], one entry per pin (a universal lock may pin per environment)."""
    found: dict[str, list[tuple[str, int]]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", lock.read_text())
    for entry in entries:
        match = _PIN.match(entry)
        if match:
            found.setdefault(canonicalize_name(match.group(1)), []).append((match.group(2), entry.count("--hash=sha256:")))
    return found


def declared() -> tuple[list[Requirement], list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [Requirement(r) for r in project["dependencies"]]
    test = [Requirement(r) for r in project["optional-dependencies"]["test"]]
    extra = [Requirement(line) for name in ("build.in", "test-infra.in")
             for line in (ROOT / "requirements" / name).read_text().splitlines() if line.strip() and not line.startswith("#")]
    return runtime + extra[:1], runtime + test + extra


def test_every_declared_dependency_is_pinned_with_hashes_at_an_allowed_version():
    run_needs, test_needs = declared()
    for lock, needs in (("run.txt", run_needs), ("test.txt", test_needs)):
        locked = pins(ROOT / "requirements" / lock)
        assert locked, lock
        for requirement in needs:
            name = canonicalize_name(requirement.name)
            assert name in locked, f"{requirement} is not in requirements/{lock}: run scripts/lock-deps.sh"
            for version, hashes in locked[name]:
                assert requirement.specifier.contains(version, prereleases=True), (lock, requirement, version)
                assert hashes >= 1, (lock, name)
        assert all(hashes >= 1 for entries in locked.values() for _, hashes in entries), lock


def test_what_runs_is_what_was_tested():
    run, test = pins(ROOT / "requirements" / "run.txt"), pins(ROOT / "requirements" / "test.txt")
    for name, entries in run.items():
        assert name in test and {v for v, _ in entries} == {v for v, _ in test[name]}, name


def test_make_run_and_make_test_install_from_the_locks():
    assert "scripts/install-deps.sh requirements/run.txt" in (ROOT / "Makefile").read_text()
    assert "scripts/install-deps.sh requirements/test.txt" in (ROOT / "scripts" / "install-test-deps.sh").read_text()
    installer = (ROOT / "scripts" / "install-deps.sh").read_text()
    assert "--require-hashes" in installer and "--no-deps" in installer
