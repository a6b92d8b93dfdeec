# The two commands: `make run` serves Herald with the embedded defaults;
# `make test` installs what the tests need and runs the whole suite.
.PHONY: run test install bench

.venv/bin/herald:
	python3 -m venv .venv
	.venv/bin/python -m pip install -q -e .

run: .venv/bin/herald
	.venv/bin/herald serve

install:
	scripts/install-test-deps.sh

test: install
	.venv/bin/python -m pytest

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	.venv/bin/python loadtests/bench.py
