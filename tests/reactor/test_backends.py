"""The backends' one lifecycle: open_backends opens the ports by URL, closes them, and guards an embedded data dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from reactor.backends import BackendSettings, BackendUnavailable, check_url, in_process, open_backends
from reactor.backends.embedded import FILES, LOCK_FILE
from reactor.backends.embedded.bus_errors import BusClosed

TOPICS = {"herald.web": 2}


def settings(data_dir: Path, **urls: str) -> BackendSettings:
    chosen = {"bus": "embedded://", "state": "embedded://", "store": "embedded://", "logstore": "embedded://", "broker": "embedded://", **urls}
    return BackendSettings(chosen, data_dir, TOPICS)


def test_only_a_scheme_that_names_no_place_serves_in_process():
    assert in_process("embedded://")
    assert not in_process("redis://127.0.0.1:6379") and not in_process("kafka://localhost:9092")


def test_a_url_names_a_backend_by_its_scheme():
    assert check_url("embedded://") == "embedded://"
    assert check_url("kafka://localhost:9092") == "kafka://localhost:9092"  # reactor/backends/kafka: the bus
    for url, words in (
        ("nats://localhost:4222", "no backend serves nats://"),
        ("embedded", "expected a backend URL"),
        ("://x", "expected a backend URL"),
        ("embedded:///var/lib/herald", "takes nothing after it"),
    ):
        with pytest.raises(ValueError, match=words) as refused:
            check_url(url)
        assert "embedded://" in str(refused.value)


async def test_every_port_opens_works_and_closes_with_the_block(tmp_path):
    async with open_backends(settings(tmp_path)) as backends:
        assert (await backends.bus.produce([("herald.web", b"u1", b"hello")])) == [(backends.bus.partition_for("herald.web", b"u1"), 0)]
        assert await backends.store.put_meta_if_absent("k", "v") == "v"
        assert await backends.state.put_if_absent("idem", b"x", 60) is None
        assert await backends.keys.list_keys() == []
        assert await backends.templates.versions("welcome") == []
        assert await backends.users.devices("u1") == []
        assert await backends.signing_keys.read_ring() is None
        assert await backends.logstore.statuses("n1") == []
        assert await backends.broker.publish("u1", b"nobody listens") == 0
        assert (tmp_path / LOCK_FILE).read_text().strip().isdigit()  # the holder's pid, for the message
    assert {FILES[p] for p in ("store", "state", "keys", "templates", "users", "logstore")} <= {p.name for p in tmp_path.iterdir()}
    with pytest.raises(RuntimeError, match="not open"):
        await backends.store.get_meta("k")
    with pytest.raises(BusClosed):
        await backends.bus.produce([("herald.web", b"u1", b"late")])
    async with open_backends(settings(tmp_path)) as again:  # the lock went with the block; the bus kept its record
        assert await again.store.get_meta("k") == "v"
        assert await again.bus.end_offset("herald.web", again.bus.partition_for("herald.web", b"u1")) == 1


async def test_a_second_opener_of_an_embedded_data_dir_is_refused_before_it_opens_anything(tmp_path):
    async with open_backends(settings(tmp_path)) as first:
        (tmp_path / FILES["store"]).rename(tmp_path / "store-moved.sqlite3")  # would be made again by an opener
        with pytest.raises(BackendUnavailable, match=rf"{tmp_path} is in use by another Herald \(pid \d+\).*HERALD_DATA_DIR"):
            async with open_backends(settings(tmp_path)):
                pass
        assert not (tmp_path / FILES["store"]).exists()
        (tmp_path / "store-moved.sqlite3").rename(tmp_path / FILES["store"])
        # the offline CLI's ports (API keys, the signing key ring) open beside the node, without the lock
        async with open_backends(settings(tmp_path), ("keys", "signing_keys")) as offline:
            assert await offline.keys.list_keys() == []
            with pytest.raises(RuntimeError, match="the bus port was not opened here"):
                await offline.bus.produce([("herald.web", b"u", b"v")])
        assert await first.store.get_meta("anything") is None  # the first one is untouched


async def test_an_unknown_port_or_scheme_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown ports"):
        async with open_backends(settings(tmp_path), ("bus", "queue")):
            pass
    with pytest.raises(ValueError, match="no backend serves memcached://"):
        async with open_backends(settings(tmp_path, state="memcached://localhost")):
            pass
    assert not tmp_path.joinpath(LOCK_FILE).exists()  # refused before anything was opened


async def test_the_embedded_bus_restarts_in_place_after_a_crash(tmp_path):
    """The actors hold the bus object the storage stage reported: a crash of its writer reopens that same object."""
    async with open_backends(settings(tmp_path)) as backends:
        bus = backends.bus
        files = bus._log  # type: ignore[attr-defined]  # the bus's SegmentLog, appended to from worker threads
        write = files.write_partition
        crashes = []

        def failing_once(part, records):
            if not crashes:
                crashes.append(len(records))
                raise OSError(5, "Input/output error")  # the disk failed under one batch
            return write(part, records)

        files.write_partition = failing_once
        with pytest.raises(BusClosed):
            await bus.produce([("herald.web", b"u1", b"lost-or-not")])
        with trio.fail_after(10):
            while True:  # the supervisor reopens it after its backoff
                try:
                    produced = await bus.produce([("herald.web", b"u1", b"after")])
                    break
                except BusClosed:
                    await trio.sleep(0.02)
        assert crashes == [1] and produced[0][1] == 0  # the failed batch was never acknowledged, nor written
        records = await bus.fetch("g", "herald.web", produced[0][0], 0, 10)
        assert [r.value for r in records] == [b"after"]
