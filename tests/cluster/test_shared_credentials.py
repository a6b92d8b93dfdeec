"""Nodes of a cluster each have a data dir of their own and share the KeyStore: the bootstrap key one of
them generated is the cluster's; a node starting later keeps it (checked through the KeyStore) instead of
revoking it and making its own, which would lock out whoever holds the first one."""

from __future__ import annotations

from reactor.backends.embedded import SqliteKeyStore, opened
from actors.services.credentials import API_KEY_FILE, open_bootstrap_key
from reactor.clock import wall_ms


async def test_a_node_of_a_shared_keystore_keeps_the_bootstrap_key_another_node_generated(tmp_path):
    for node in ("api", "worker", "a", "b"):
        (tmp_path / node).mkdir()
    async with opened(SqliteKeyStore(tmp_path / "keys.sqlite3")) as keys:
        first = await open_bootstrap_key(keys, tmp_path / "api" / API_KEY_FILE, "", wall_ms(), shared=True)
        assert first.startswith("hk_") and (tmp_path / "api" / API_KEY_FILE).read_text() == first + "\n"
        second = await open_bootstrap_key(keys, tmp_path / "worker" / API_KEY_FILE, "", wall_ms(), shared=True)
        assert second == "" and not (tmp_path / "worker" / API_KEY_FILE).exists()  # no text of its own
        live = [k for k in await keys.list_keys() if k.bootstrap and k.revoked_ms is None]
        assert [k.key_id for k in live] == [first.split("_")[1]]  # the first node's key, still live
        # the first node's restart keeps its key too
        assert await open_bootstrap_key(keys, tmp_path / "api" / API_KEY_FILE, "", wall_ms(), shared=True) == first


async def test_a_node_alone_without_its_file_still_replaces_the_generated_key(tmp_path):
    for node in ("api", "worker", "a", "b"):
        (tmp_path / node).mkdir()
    async with opened(SqliteKeyStore(tmp_path / "keys.sqlite3")) as keys:
        first = await open_bootstrap_key(keys, tmp_path / "a" / API_KEY_FILE, "", wall_ms())
        again = await open_bootstrap_key(keys, tmp_path / "b" / API_KEY_FILE, "", wall_ms())
        assert again.startswith("hk_") and again != first
        revoked = {k.key_id: k.revoked_ms is not None for k in await keys.list_keys() if k.bootstrap}
        assert revoked[first.split("_")[1]] and not revoked[again.split("_")[1]]
