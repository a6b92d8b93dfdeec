# The two commands: `make run` serves Herald with the embedded defaults;
# `make test` installs what the tests need, runs the static checks (`make lint`) and the whole suite.
.PHONY: run test install lint bench lock load properties

# Dependencies come from the lock files (requirements/*.txt, pinned with hashes);
# scripts/lock-deps.sh regenerates them.
.venv/bin/herald: requirements/run.txt pyproject.toml
	@scripts/install-deps.sh requirements/run.txt
	@touch $@

run: .venv/bin/herald
	@.venv/bin/herald serve

install:
	scripts/install-test-deps.sh

# mypy and ruff, from the test lock file (no Debian packages needed): scripts/lint.sh
.venv/bin/mypy: requirements/test.txt pyproject.toml
	@scripts/install-deps.sh requirements/test.txt
	@touch $@

lint: .venv/bin/mypy
	@scripts/lint.sh

# Two processes (pytest-xdist): most of the suite waits on servers and sockets, not on the CPU. Each file runs whole
# in one process (--dist loadfile: a module's fixtures, the load venv's builder); the session's engines start in each
# process that needs them. The browser tests run after, in a process of their own: after Playwright had run in a
# process, a later Trio test using asyncio there waited forever (tests/conftest.py). One file: .venv/bin/python -m
# pytest tests/x.py. (--dist loadgroup would keep the engines in one process, but pytest-xdist 3.8 cannot group on
# pytest 9's node ids.) A test that hangs fails after pyproject's `timeout` with every thread's stack, and the run
# ends there (--max-worker-restart 0: a restarted worker would run the hung file again).
test: install
	@scripts/lint.sh
	.venv/bin/python -m pytest -n 2 --dist loadfile --max-worker-restart 0 --ignore=tests/browser
	.venv/bin/python -m pytest tests/browser

bench: install
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	.venv/bin/python loadtests/bench.py

lock:
	scripts/lock-deps.sh

# The load testers' suite (loadtests/README.md, "The locust suite"): locust in its own venv
# .venv-load (requirements/load.txt, never Herald's .venv: gevent patches its process), then
# a bounded run against an embedded node: `make load LOAD_ARGS="--duration 30 --processes 2"`.
.venv-load/bin/locust: requirements/load.txt
	@scripts/install-load-deps.sh
	@touch $@

load: .venv/bin/herald .venv-load/bin/locust
	.venv/bin/python loadtests/run_load.py $(LOAD_ARGS)

# The bucket and breaker property machines against every implementation (README, "For engineers"):
# `make properties ARGS="--examples 100000 --seed 42 --config herald.toml"` (herald check properties --help).
properties: .venv/bin/mypy
	.venv/bin/herald check properties $(ARGS)
