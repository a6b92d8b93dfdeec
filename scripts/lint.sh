#!/usr/bin/env bash
# The static checks `make lint` runs, and `make test` before the suite: mypy (settings in
# pyproject.toml's [tool.mypy]: protocol/, reactor/ and actors/, strictly) and ruff
# (pyproject.toml's [tool.ruff]: the whole tree, with flake8-async's rules for Trio).
# One line each when it passes; the findings, then a non-zero exit, when either fails
# (both run, so one run shows everything to fix). mypy keeps its cache in .mypy_cache/.
# Usage: scripts/lint.sh            (after scripts/install-deps.sh requirements/test.txt)
set -uo pipefail
cd "$(dirname "$0")/.."

failed=()
if out=$(.venv/bin/mypy 2>&1); then
    echo "mypy: ${out##*$'\n'}"
else
    printf '%s\n' "$out"
    failed+=(mypy)
fi
if .venv/bin/ruff check --quiet; then
    echo "ruff: no findings ($(.venv/bin/ruff --version), rules in pyproject.toml [tool.ruff.lint])"
else
    failed+=(ruff)
fi
if [ ${#failed[@]} -gt 0 ]; then
    echo "lint: ${failed[*]} failed (above); \`make lint\` runs them again" >&2
    exit 1
fi
