"""The load tools' lock (requirements/load.txt) pins what requirements/load.in asks, with hashes, and stays apart from Herald's."""

from __future__ import annotations

import ast
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.infra.test_lock_files import pins

ROOT = Path(__file__).resolve().parent.parent.parent


def test_every_load_requirement_is_pinned_with_hashes_at_an_allowed_version():
    wanted = [Requirement(line) for line in (ROOT / "requirements" / "load.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    locked = pins(ROOT / "requirements" / "load.txt")
    assert {canonicalize_name(r.name) for r in wanted} >= {"locust", "websocket-client"}
    for requirement in wanted:
        entries = locked.get(canonicalize_name(requirement.name))
        assert entries, f"{requirement} is not in requirements/load.txt: run scripts/lock-deps.sh"
        assert all(requirement.specifier.contains(v, prereleases=True) for v, _ in entries)
    assert all(hashes >= 1 for entries in locked.values() for _, hashes in entries)


def test_locust_never_enters_herald_venv_nor_its_locks():
    for lock in ("run.txt", "test.txt"):
        assert "locust" not in pins(ROOT / "requirements" / lock), lock
    installer = (ROOT / "scripts" / "install-load-deps.sh").read_text()
    assert "--require-hashes -r requirements/load.txt" in installer and ".venv-load" in installer
    assert "-e ." not in installer  # Herald itself is not installed beside locust
    for name in ("locustfile.py", "load_shapes.py", "load_matching.py"):
        tree = ast.parse((ROOT / "loadtests" / name).read_text())
        roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        roots |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not roots & {"actors", "protocol", "reactor"}, (name, roots)
