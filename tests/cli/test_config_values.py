"""Settings are read with one grammar, and a value that cannot be used names its key and where it came from."""

from __future__ import annotations

import pytest

from actors.app import run_herald
from actors.config import Config, ConfigError, load_config
from actors.startup import explain


@pytest.mark.parametrize("odd", ["９０００", "٩٠٠٠", "9_000", " 9000", "9000 ", "9e3", "+9000", "-1", "65536", "", "0x2328"])
def test_a_port_is_ascii_digits_from_0_to_65535(odd):
    with pytest.raises(ConfigError, match="HERALD_PORT"):
        load_config(env={"HERALD_PORT": odd})


def test_values_from_the_environment_and_the_file_are_checked_and_named(tmp_path):
    assert load_config(env={"HERALD_PORT": "9000", "HERALD_RETRY_INITIAL_S": "0.25"}).retry_initial_s == 0.25
    assert load_config(env={"HERALD_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert load_config(env={"HERALD_LIMITS": "sms.capacity=10"}).limits["sms"]["capacity"] == 10.0
    for env, named in (
        ({"HERALD_RETRY_INITIAL_S": "1e-1"}, "HERALD_RETRY_INITIAL_S"),
        ({"HERALD_INGRESS_WORKERS": "0"}, "HERALD_INGRESS_WORKERS"),
        ({"HERALD_LOG_LEVEL": "chatty"}, "HERALD_LOG_LEVEL"),
        ({"HERALD_LIMITS": "sms.capacity=lots"}, "limits.sms.capacity"),
        ({"HERALD_PARTITIONS": "fax=2"}, "fax"),
    ):
        with pytest.raises(ConfigError, match=named):
            load_config(env=env)
    config = tmp_path / "herald.toml"
    for text, named in (
        ("[herald]\nport = true\n", "port"),
        ("[herald]\nport = 80.5\n", "port"),
        ("[herald]\nmax_attempts = -1\n", "max_attempts"),
        ("[herald]\nshutdown_grace_s = 'soon'\n", "shutdown_grace_s"),
        ("[herald]\n[herald.limits.sms]\ncapacity = 'x'\n", "limits.sms.capacity"),
        ("[herald\nport = 1\n", "not valid TOML"),
        ("[herald]\nprot = 1\n", "prot"),
    ):
        config.write_text(text)
        with pytest.raises(ConfigError, match=named) as refused:
            load_config(config, env={})
        assert str(config) in str(refused.value)
    config.write_text("[herald]\nport = 9000\nretry_initial_s = 1\nlog_level = 'warning'\n")
    loaded = load_config(config, env={"HERALD_PORT": "9001"})  # the environment over the file
    assert (loaded.port, loaded.retry_initial_s, loaded.log_level) == (9001, 1.0, "WARNING")


def test_backend_urls_and_the_role_are_checked_and_named(tmp_path):
    config = load_config(env={})
    assert (config.role, config.bus, config.state, config.store, config.logstore, config.broker) == ("all", *["embedded://"] * 5)
    assert config.backend_settings().urls == dict.fromkeys(("bus", "state", "store", "logstore", "broker"), "embedded://")
    assert load_config(env={"HERALD_ROLE": "all", "HERALD_LOGSTORE": "embedded://"}).role == "all"
    assert load_config(env={"HERALD_BUS": "kafka://localhost:9092"}).bus == "kafka://localhost:9092"
    for env, named in (
        ({"HERALD_BUS": "nats://localhost:4222"}, r"HERALD_BUS: no backend serves nats://.*embedded://, kafka://"),
        ({"HERALD_BUS": "kafka://"}, r"HERALD_BUS: kafka:// needs a location"),
        ({"HERALD_STATE": "redis"}, "HERALD_STATE: expected a backend URL"),
        ({"HERALD_BROKER": "memcached://localhost:11211"}, r"HERALD_BROKER: no backend serves memcached://.*embedded://"),
        ({"HERALD_ROLE": "api"}, r"HERALD_ROLE: the role 'api' needs distributed backends.*bus, state, store, logstore, broker are embedded://.*only the role 'all' runs"),
        ({"HERALD_ROLE": "router"}, "HERALD_ROLE: expected one of all, api, worker, edge"),
    ):
        with pytest.raises(ConfigError, match=named):
            load_config(env=env)
    file = tmp_path / "herald.toml"
    file.write_text('[herald]\nrole = "edge"\n')
    with pytest.raises(ConfigError, match=f"{file}: role: the role 'edge'"):
        load_config(file, env={})
    with pytest.raises(ConfigError, match="role: the role 'worker'"):
        load_config(env={}, role="worker")  # --role


async def test_a_node_whose_settings_were_built_in_code_refuses_a_role_too(tmp_path):
    config = Config(data_dir=tmp_path / "data", port=0, role="worker")  # not through load_config
    with pytest.raises(ConfigError) as refused:
        await run_herald(config, signals=False)
    assert explain(refused.value, config) == f"configuration error: {refused.value}"
    assert "distributed backends" in str(refused.value)
    assert not (tmp_path / "data").exists()


def test_the_gate_settings_are_read_and_a_lease_of_zero_is_refused():
    config = load_config(env={"HERALD_GATE_SLICE_S": "0", "HERALD_GATE_LEASE_S": "2.5", "HERALD_GATE_BREAKER_REFRESH_S": "0"})
    settings = config.gate_settings()
    assert (settings.slice_s, settings.lease_s, settings.refresh_s, settings.probe_lease_s) == (0.0, 2.5, 0.0, 30.0)
    for name in ("HERALD_GATE_LEASE_S", "HERALD_GATE_PROBE_LEASE_S"):
        with pytest.raises(ConfigError, match=f"{name}: expected a number above 0"):
            load_config(env={name: "0"})
    with pytest.raises(ConfigError, match="HERALD_GATE_SLICE_S"):
        load_config(env={"HERALD_GATE_SLICE_S": "-1"})


def test_delivery_concurrency_settings_are_per_channel_counts_of_at_least_one(tmp_path):
    config = load_config(env={"HERALD_PROVIDER_MAX_IN_FLIGHT": "sms=128,email=8", "HERALD_CONSUMER_WINDOW": "2048"})
    assert config.provider_max_in_flight == {"email": 8, "sms": 128, "push": 512, "web": 64, "webhook": 512}
    assert config.consumer_window == 2048
    toml = tmp_path / "herald.toml"
    toml.write_text("[herald.provider_max_in_flight]\npush = 32\n")
    assert load_config(toml, env={}).provider_max_in_flight["push"] == 32
    for env in ({"HERALD_PROVIDER_MAX_IN_FLIGHT": "sms=0"}, {"HERALD_PROVIDER_MAX_IN_FLIGHT": "fax=3"},
                {"HERALD_PROVIDER_MAX_IN_FLIGHT": "sms=x"}, {"HERALD_CONSUMER_WINDOW": "0"}, {"HERALD_CONSUMER_WINDOW_BYTES": "0"}):
        with pytest.raises(ConfigError, match=next(iter(env))):
            load_config(env=env)
