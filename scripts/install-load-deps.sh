#!/usr/bin/env bash
# Installs the load testers' tools (locust and its WebSocket client) into their own venv,
# .venv-load, from the lock file requirements/load.txt: the pinned versions, each file
# checked against its hash (pip --require-hashes). Herald is NOT installed there: locust
# monkey-patches its process with gevent, so it runs apart from Herald's process and from
# the test process, and loadtests/locustfile.py imports nothing of Herald's.
# `make load` runs this on first use; the tests in tests/load/ run it once per session.
# Usage: scripts/install-load-deps.sh    (PYTHON=python3.12 to choose the interpreter;
#        VENV=path to install elsewhere than .venv-load)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv-load}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "herald: needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1 || echo missing): set PYTHON=python3.11 (or newer)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --require-hashes -r requirements/load.txt
"$VENV/bin/locust" --version
