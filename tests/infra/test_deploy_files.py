"""The deployment files (deploy/) and docs/deploy.md's URL reference cannot drift from the code.

Neither the compose file nor the Kubernetes sketch is run here (no container runtime): what is
checked is what can be checked without one. Each YAML file parses; every Herald node in it takes
a role of actors/config.py ROLES; every HERALD_* variable it sets names a Config field; its
settings load through `load_config` as a node of that role would load them (so every backend URL
passes its parser, options included); the front roles' probes name routes the gateway serves.
docs/deploy.md's table of URL options lists exactly the options each backend's parser takes,
and each default it states is what the parser gives when the option is left out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from actors.api.openapi import OPERATIONS
from actors.config import ROLES, Config, load_config
from reactor.backends import SETTINGS as BACKEND_SETTINGS

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
KUBERNETES = ROOT / "deploy" / "kubernetes" / "herald.yaml"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
FIELDS = {f.name for f in dataclasses.fields(Config)}
_ROLE = re.compile(r"herald serve --role (\w+)")
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")  # compose's ${NAME}, ${NAME:-default}, ${NAME:?message}


def role_of(command: Any) -> str | None:
    """The role a container's command serves, if it runs `herald serve --role <role>`."""
    text = " ".join(command) if isinstance(command, list) else str(command or "")
    match = _ROLE.search(text)
    return match.group(1) if match else None


def check_node(where: str, role: str, env: Mapping[str, Any], tmp_path: Path) -> Config:
    """The node's settings name Config fields, take a known role and load as `herald serve` would load them."""
    assert role in ROLES, f"{where}: role {role!r} is not one of {ROLES}"
    herald = {name: str(value) for name, value in env.items() if name.startswith("HERALD_")}
    unknown = sorted(name for name in herald if name.removeprefix("HERALD_").lower() not in FIELDS)
    assert not unknown, f"{where}: {unknown} name no setting of actors/config.py Config"
    assert herald, f"{where}: no HERALD_* settings"
    herald["HERALD_DATA_DIR"] = str(tmp_path)  # nothing is opened: load_config only checks
    config = load_config(env={**herald, "HERALD_ROLE": role})
    parsers = _parsers()
    for setting in BACKEND_SETTINGS:  # load_config checks the scheme (and cassandra's options); the other parsers run at open
        url = str(getattr(config, setting))
        scheme = url.partition("://")[0]
        parsers["postgresql://" if scheme == "postgres" else f"{scheme}://"][2](url)
    return config


def substitute(value: Any) -> Any:
    """Compose's variable substitution with each variable unset: its default, or a stand-in where it must be set."""
    if not isinstance(value, str):
        return value
    return _VARIABLE.sub(lambda m: "stand-in-secret" if m.group(0).startswith(f"${{{m.group(1)}:?") else (m.group(2) or ""), value)


def compose_nodes() -> dict[str, tuple[str, dict[str, Any]]]:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    return {
        name: (role, {k: substitute(v) for k, v in (service.get("environment") or {}).items()})
        for name, service in services.items()
        if (role := role_of(service.get("command"))) is not None
    }


def kubernetes_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(KUBERNETES.read_text()) if doc]


def kubernetes_env() -> dict[str, Any]:
    """What every Deployment's envFrom gives it: the ConfigMap's data and the Secret's stringData."""
    env: dict[str, Any] = {}
    for doc in kubernetes_documents():
        if doc["kind"] == "ConfigMap":
            env.update(doc["data"])
        elif doc["kind"] == "Secret":
            env.update(doc["stringData"])
    return env


def test_the_compose_file_runs_every_role_with_settings_the_configuration_takes(tmp_path: Path) -> None:
    nodes = compose_nodes()
    roles = sorted(role for role, _ in nodes.values())
    assert roles == ["api", "edge", "edge", "worker", "worker"], roles
    for name, (role, env) in nodes.items():
        config = check_node(f"compose.yaml {name}", role, env, tmp_path)
        assert config.role == role
    partitions = {tuple(sorted(check_node(n, r, e, tmp_path).partitions.items())) for n, (r, e) in nodes.items()}
    assert len(partitions) == 1, f"the nodes' partition counts differ: {partitions}"
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"kafka", "cassandra", "redis", "postgres"} <= set(services)


def test_the_kubernetes_sketch_has_a_deployment_per_role_probed_on_routes_the_node_serves(tmp_path: Path) -> None:
    docs = kubernetes_documents()
    env = kubernetes_env()
    routes = {op.path for op in OPERATIONS if op.method == "GET"}
    deployments = {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == "Deployment"}
    roles: dict[str, dict[str, str]] = {}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        role = role_of(container["args"])
        assert role is not None, f"{name}: does not run `herald serve --role`"
        refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert refs == {"herald"}, f"{name}: takes its settings from {refs}"
        check_node(f"kubernetes {name}", role, {**env, **{e["name"]: e["value"] for e in container.get("env", [])}}, tmp_path)
        assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
        roles[role] = deployment["spec"]["selector"]["matchLabels"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            if role == "worker":  # no front end: the metrics port is its only HTTP
                assert (get["path"], ports[get["port"]]) == ("/metrics", int(env["HERALD_METRICS_PORT"])), f"{name} {probe}"
            else:
                assert get["path"] in routes, f"{name} {probe}: {get['path']} is not a route of the gateway"
                assert ports[get["port"]] == int(env["HERALD_PORT"]), f"{name} {probe}: not the node's port"
    assert sorted(roles) == ["api", "edge", "worker"]
    services = {doc["metadata"]["name"]: doc["spec"]["selector"] for doc in docs if doc["kind"] == "Service"}
    assert sorted(services.values(), key=str) == sorted([roles["api"], roles["edge"]], key=str), "a Service per front role"
    budgets = [doc["spec"]["selector"]["matchLabels"] for doc in docs if doc["kind"] == "PodDisruptionBudget"]
    assert roles["worker"] in budgets, "the workers have a PodDisruptionBudget"
    scaled = {doc["spec"]["scaleTargetRef"]["name"] for doc in docs if doc["kind"] == "HorizontalPodAutoscaler"}
    assert scaled <= set(deployments)


def test_a_wrong_setting_name_or_url_option_in_a_deploy_file_would_fail(tmp_path: Path) -> None:
    """The checks above can fail: a misspelt setting, an unknown URL option, a bad role are each refused."""
    role, env = compose_nodes()["worker-1"]
    with pytest.raises(AssertionError, match="HERALD_PARTITION"):
        check_node("mutant", role, {**env, "HERALD_PARTITION": "email=1"}, tmp_path)
    with pytest.raises(ValueError, match="timeout"):
        check_node("mutant", role, {**env, "HERALD_STATE": env["HERALD_STATE"] + "&timeout=1"}, tmp_path)
    with pytest.raises(AssertionError, match="router"):
        check_node("mutant", "router", env, tmp_path)


# -- docs/deploy.md's table of URL options, against the parsers


def _parsers() -> dict[str, tuple[str, tuple[str, ...], Callable[[str], Any]]]:
    """scheme -> (a URL with no option, the parser's options, the parser)."""
    from reactor.backends.cassandra import url as cassandra
    from reactor.backends.kafka import _INTS, parse_url as kafka_url
    from reactor.backends.postgres.pool import OWN_OPTIONS, parse_url as postgres_url
    from reactor.backends.redis.client import OPTIONS, RedisSettings

    return {
        "redis://": ("redis://h:6379/0", OPTIONS, RedisSettings.from_url),
        "kafka://": ("kafka://h:9092", ("prefix", *_INTS), kafka_url),
        "postgresql://": ("postgresql://u@h:5432/db", OWN_OPTIONS, postgres_url),
        "cassandra://": ("cassandra://h:9042/ks", cassandra._OPTIONS, cassandra.parse_url),
    }


def documented_options(text: str) -> dict[str, dict[str, str]]:
    """scheme -> option -> the default cell, from the rows `| `scheme` | `option` | default | meaning |`."""
    table: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and re.fullmatch(r"`\w+://`", cells[0]) and re.fullmatch(r"`\w+`", cells[1]):
            table.setdefault(cells[0].strip("`"), {})[cells[1].strip("`")] = cells[2]
    return table


def check_reference(text: str) -> None:
    """Every backend's options are in the table, no more, each default the parser's."""
    table = documented_options(text)
    parsers = _parsers()
    assert sorted(table) == sorted(parsers), "docs/deploy.md documents the options of every backend URL"
    for scheme, (base, options, parse) in parsers.items():
        assert sorted(table[scheme]) == sorted(options), f"{scheme}: the doc lists {sorted(table[scheme])}, the parser takes {sorted(options)}"
        plain = parse(base)
        for option, cell in table[scheme].items():
            literal = re.fullmatch(r"`([^`]*)`", cell)
            if literal is None:  # a default that is no value (chosen at run time): the parser leaves it unset
                unset = [v for f in dataclasses.fields(plain) if f.name.startswith(option) and (v := getattr(plain, f.name)) is not None]
                assert not unset, f"{scheme} {option}: the doc gives no value ({cell!r}) but the parser's default is {unset}"
            else:
                assert parse(f"{base}?{option}={literal.group(1)}") == plain, f"{scheme} {option}: the default is not {cell}"


def test_the_url_reference_lists_every_option_of_every_parser_with_its_true_default() -> None:
    check_reference(DEPLOY_DOC.read_text())


def test_the_reference_check_catches_a_wrong_default_or_a_missing_option() -> None:
    text = DEPLOY_DOC.read_text()
    assert "| `redis://` | `timeout_s` | `1` |" in text
    wrong = text.replace("| `redis://` | `timeout_s` | `1` |", "| `redis://` | `timeout_s` | `2` |")
    missing = "\n".join(line for line in text.splitlines() if not line.startswith("| `kafka://` | `linger_ms`"))
    for mutant in (wrong, missing):
        with pytest.raises(AssertionError):
            check_reference(mutant)
