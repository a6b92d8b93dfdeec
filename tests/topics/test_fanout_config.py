"""The fan-out's settings: fanout_batch 1 to 10,000, fanout_lease_s above 0."""

from __future__ import annotations

import pytest

from actors.config import ConfigError, load_config


@pytest.mark.parametrize("name, value", [("FANOUT_BATCH", "0"), ("FANOUT_BATCH", "10001"), ("FANOUT_BATCH", "5.5"),
                                         ("FANOUT_LEASE_S", "0"), ("FANOUT_LEASE_S", "-1")])
def test_out_of_range_fan_out_settings_are_refused_naming_them(tmp_path, name, value) -> None:
    with pytest.raises(ConfigError, match=f"HERALD_{name}"):
        load_config(env={f"HERALD_{name}": value, "HERALD_DATA_DIR": str(tmp_path)})


def test_fan_out_settings_are_read() -> None:
    config = load_config(env={"HERALD_FANOUT_BATCH": "10000", "HERALD_FANOUT_LEASE_S": "2.5"})
    assert (config.fanout_batch, config.fanout_lease_s) == (10_000, 2.5)
    assert (load_config(env={}).fanout_batch, load_config(env={}).fanout_lease_s) == (500, 30.0)
