#!/usr/bin/env bash
# Installs Herald into .venv from a lock file, exactly: the pinned versions, each file
# checked against its hash (pip --require-hashes), then Herald itself as an editable
# install with no further dependencies. `make run` uses requirements/run.txt,
# scripts/install-test-deps.sh requirements/test.txt; scripts/lock-deps.sh writes both.
# Usage: scripts/install-deps.sh requirements/run.txt    (PYTHON=python3.12 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

lock=${1:?usage: scripts/install-deps.sh requirements/run.txt|requirements/test.txt}
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "herald: needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing): set PYTHON=python3.11 (or newer)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
quiet() { "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }
quiet .venv/bin/python -m pip install -q --require-hashes -r "$lock"
quiet .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
