"""The group commit's linger is a setting: `commit_linger_ms`, 0 (no wait) to 100, reaching the stores, the sinks and the Recorder."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.config import ConfigError, load_config


def test_commit_linger_ms_is_read_and_checked() -> None:
    assert load_config(env={}).commit_linger_ms == 2.0
    assert load_config(env={"HERALD_COMMIT_LINGER_MS": "0"}).commit_linger_ms == 0.0
    config = load_config(env={"HERALD_COMMIT_LINGER_MS": "5.5"})
    assert config.backend_settings().linger_s == pytest.approx(0.0055)
    for odd in ("-1", "101", "abc", "1e3", "nan"):
        with pytest.raises(ConfigError, match="HERALD_COMMIT_LINGER_MS"):
            load_config(env={"HERALD_COMMIT_LINGER_MS": odd})


async def test_the_linger_reaches_the_send_ledger(tmp_path: Path) -> None:
    from reactor.backends import open_backends

    config = load_config(env={"HERALD_COMMIT_LINGER_MS": "7"}, data_dir=tmp_path)
    async with open_backends(config.backend_settings(), frozenset({"store"})) as backends:
        assert backends.store._commits.linger_s == pytest.approx(0.007)  # type: ignore[attr-defined]
