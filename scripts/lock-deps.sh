#!/usr/bin/env bash
# Regenerates the lock files from pyproject.toml and requirements/*.in: every package
# pinned to one version with the hashes of its files, resolved for Python 3.11 (the oldest
# Herald supports) on every platform, by uv run from a throwaway venv.
#
#   requirements/test.txt  Herald's dependencies, its `test` extra, requirements/build.in
#                          (setuptools, for the editable install) and requirements/test-infra.in
#   requirements/run.txt   Herald's dependencies and requirements/build.in, at the versions
#                          test.txt pins (what runs is what was tested)
#   requirements/load.txt  the load testers' tools, requirements/load.in (locust), for their own
#                          venv .venv-load (scripts/install-load-deps.sh), apart from Herald's
#
# Usage: scripts/lock-deps.sh                           keep the pins that still fit, add what is new
#        scripts/lock-deps.sh --upgrade                 every package to its newest release that fits
#        scripts/lock-deps.sh --upgrade-package trio    one package (repeatable)
# Then run `make test` and commit pyproject.toml and requirements/ together.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
PYTHON=${PYTHON:-python3}
tool=$(mktemp -d)
trap 'rm -rf "$tool"' EXIT
"$PYTHON" -m venv "$tool"
"$tool/bin/python" -m pip install -q "uv==$UV_VERSION"

common=(--quiet --generate-hashes --universal --fork-strategy fewest --python-version 3.11
        --custom-compile-command "scripts/lock-deps.sh" "$@")
"$tool/bin/uv" pip compile pyproject.toml --extra test requirements/build.in requirements/test-infra.in \
    -o requirements/test.txt "${common[@]}"
"$tool/bin/uv" pip compile pyproject.toml requirements/build.in -c requirements/test.txt \
    -o requirements/run.txt "${common[@]}"
"$tool/bin/uv" pip compile requirements/load.in -o requirements/load.txt "${common[@]}"
echo "locked: requirements/load.txt ($(grep -c '==' requirements/load.txt) packages)"
echo "locked: requirements/run.txt ($(grep -c '==' requirements/run.txt) packages), requirements/test.txt ($(grep -c '==' requirements/test.txt) packages)"
