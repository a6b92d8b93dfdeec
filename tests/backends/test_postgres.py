"""The PostgreSQL backend (reactor/backends/postgres/) beyond the conformance suites: its URL, its migrations
when processes start at once, claims from two processes, and what it does when the server goes away.

The conformance suites (tests/conformance/) check every operation of its ports on the suite's server;
these tests start a server of their own (tests/servers.py postgres_cluster), which one of them stops and starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from reactor.backends import BackendSettings, BackendUnavailable, check_url, open_backends
from reactor.backends.postgres import PostgresUnavailable, parse_url
from reactor.backends.postgres import store as store_sql
from reactor.ports import PortUnavailable, Scheduled
from tests.servers import PostgresCluster, postgres_cluster, stopped

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000_000
LEASE = 60_000


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as started:
        yield started


def schema() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@asynccontextmanager
async def opened(url: str, *ports: str) -> AsyncIterator[Any]:
    async with open_backends(BackendSettings({"store": url}, Path("/nonexistent"), {}), ports or ["store"]) as backends:
        yield backends


# -- the URL ------------------------------------------------------------------------------------------


def test_the_url_takes_herald_options_out_and_passes_the_rest_to_libpq() -> None:
    settings = parse_url("postgres://herald:pw@db:6432/notify?schema=tenant_a&pool_size=7&statement_timeout_ms=2500&sslmode=disable"
                         "&connect_timeout=5&application_name=herald")
    assert (settings.schema, settings.pool_size, settings.statement_timeout_ms, settings.connect_timeout_s) == ("tenant_a", 7, 2500, 5)
    assert settings.conninfo == "postgresql://herald:pw@db:6432/notify?sslmode=disable&application_name=herald"
    assert "pw" not in settings.where and "db:6432/notify" in settings.where
    assert parse_url("postgresql://h/db").schema == "herald"
    for url in ("postgresql://", "postgres://"):
        assert check_url(url + "h/db") == url + "h/db"
        with pytest.raises(ValueError, match="needs a location"):
            check_url(url)


@pytest.mark.parametrize(("query", "named"), [
    ("schema=Bad-Name", "schema"), ("schema=", "schema"), ("pool_size=0", "pool_size"), ("pool_size=x", "pool_size"),
    ("statement_timeout_ms=5", "statement_timeout_ms"), ("connect_timeout=0", "connect_timeout"),
])
def test_a_bad_option_is_named(query: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        parse_url(f"postgresql://h/db?{query}")


async def test_opening_with_a_bad_option_says_the_backend_is_unavailable_and_why() -> None:
    with pytest.raises(BackendUnavailable, match="pool_size"):
        async with opened("postgresql://127.0.0.1:1/db?pool_size=-1"):
            pass


# -- migrations ---------------------------------------------------------------------------------------


async def test_processes_starting_at_once_apply_each_migration_once(cluster: PostgresCluster) -> None:
    url = f"{cluster.endpoint.url}?schema={schema()}"
    ports = ("store", "keys", "templates", "users", "signing_keys")

    async def start(i: int) -> None:
        async with opened(url, *ports) as backends:
            assert await backends.store.put_meta_if_absent("first", f"node {i}")

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(start, i)
    async with opened(url, *ports):  # a restart: nothing left to apply
        pass
    with psycopg.connect(cluster.endpoint.url) as conn:
        rows = conn.execute(f"SELECT component, version FROM {url.rsplit('=', 1)[1]}.herald_migrations").fetchall()
    from reactor.backends.postgres import key_store, signing_keys, store, template_store, user_store

    every = [(m.COMPONENT, migration.version) for m in (store, key_store, template_store, user_store, signing_keys) for migration in m.MIGRATIONS]
    assert ("store", 2) in every  # the digests' tables came as a second migration of the store
    assert sorted(rows) == sorted(every)  # each applied once: no row twice (the primary key), none missing


# -- claims from two processes ------------------------------------------------------------------------

CLAIMER = """
import json, sys, trio
from pathlib import Path
from reactor.backends import BackendSettings, open_backends

async def main(url, name, start_at):
    got = []
    async with open_backends(BackendSettings({"store": url}, Path("/nonexistent"), {}), ["store"]) as backends:
        store = backends.store
        await trio.sleep_until(start_at)  # every claimer starts together, however long its imports took

        async def claimer(owner):
            while batch := await store.claim_due(owner, %(now)d, 5, %(lease)d):
                got.extend(entry.id for entry in batch)
                await store.unschedule([entry.id for entry in batch])

        async with trio.open_nursery() as nursery:
            for n in range(4):
                nursery.start_soon(claimer, f"{name}-{n}")
    print(json.dumps(got))

trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]), clock=None)
"""


def test_two_processes_claiming_at_once_never_claim_one_entry_twice(cluster: PostgresCluster) -> None:
    url = f"{cluster.endpoint.url}?schema={schema()}&pool_size=4"
    count = 1500

    async def fill() -> None:
        async with opened(url) as backends:
            for start in range(0, count, 100):
                async with trio.open_nursery() as nursery:
                    for i in range(start, start + 100):
                        nursery.start_soon(backends.store.schedule, Scheduled(f"e{i:05}", T0 + i % 23, "herald.sms", b"k", b"v"))

    trio.run(fill)
    code = CLAIMER % {"now": T0 + 100, "lease": LEASE}
    # trio.run's clock starts anew in each process: the claimers share a start on the wall clock instead
    script = code.replace("await trio.sleep_until(start_at)", "import time; time.sleep(max(0.0, start_at - time.time()))")
    import time

    start_at = time.time() + 4
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url, name, str(start_at)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for name in ("a", "b")
    ]
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    got = Counter(claimed[0] + claimed[1])
    print(f"claims: process a {len(claimed[0])}, process b {len(claimed[1])}")
    assert [entry for entry, n in got.items() if n > 1] == [], "an entry claimed twice"
    assert len(got) == count, "an entry never claimed"
    assert claimed[0] and claimed[1], "one process claimed everything: they did not race"


async def test_two_handles_claiming_at_once_in_one_process_never_claim_one_entry_twice(cluster: PostgresCluster) -> None:
    url = f"{cluster.endpoint.url}?schema={schema()}&pool_size=4"
    count = 600
    got: Counter[str] = Counter()
    async with opened(url) as one, opened(url) as other:
        for start in range(0, count, 100):
            async with trio.open_nursery() as nursery:
                for i in range(start, start + 100):
                    nursery.start_soon(one.store.schedule, Scheduled(f"e{i:05}", T0 + i % 13, "herald.sms", b"k", b"v"))

        async def claimer(store: Any, owner: str) -> None:
            while batch := await store.claim_due(owner, T0 + 100, 3, LEASE):
                got.update(entry.id for entry in batch)
                await store.unschedule([entry.id for entry in batch])

        async with trio.open_nursery() as nursery:
            for n in range(6):
                nursery.start_soon(claimer, one.store, f"one-{n}")
                nursery.start_soon(claimer, other.store, f"other-{n}")
    assert [entry for entry, n in got.items() if n > 1] == [] and len(got) == count


# -- the server away: fast, clear failures; recovery without a restart -----------------------------------


async def test_a_call_fails_fast_while_the_server_is_down_and_succeeds_once_it_is_back() -> None:
    with postgres_cluster() as own:
        url = f"{own.endpoint.url}?schema={schema()}&connect_timeout=2&statement_timeout_ms=2000"
        async with opened(url, "store", "templates") as backends:
            store, templates = backends.store, backends.templates
            await store.put_meta_if_absent("kept", "yes")
            await store.schedule(Scheduled("e1", T0, "herald.sms", b"k", b"v"))
            await trio.to_thread.run_sync(own.stop)
            for call in (lambda: store.get_meta("kept"), lambda: store.claim_due("n1", T0, 10, LEASE),
                         lambda: templates.create_template("t", b"{}", T0)):
                started = trio.current_time()
                with trio.fail_after(60):  # a guard against a hang, not a figure
                    with pytest.raises(PostgresUnavailable, match="unavailable") as raised:
                        await call()
                print(f"failed after {trio.current_time() - started:.3f} s: {raised.value}")
                assert own.endpoint.host in str(raised.value) and "schema" in str(raised.value)
                assert isinstance(raised.value, PortUnavailable)  # what the front end answers 503 to
            await trio.to_thread.run_sync(own.start)
            assert await store.get_meta("kept") == "yes"  # the same handle, no restart
            assert [e.id for e in await store.claim_due("n1", T0, 10, LEASE)] == ["e1"]
            assert (await templates.create_template("t", b"{}", T0)) is not None


async def test_opening_while_the_server_is_down_says_so() -> None:
    with postgres_cluster() as own:
        own.stop()
        with trio.fail_after(60), pytest.raises(BackendUnavailable, match="unavailable"):
            async with opened(f"{own.endpoint.url}?schema={schema()}&connect_timeout=2"):
                pass


async def test_connections_the_server_dropped_are_replaced_without_an_error(cluster: PostgresCluster) -> None:
    name = schema()
    async with opened(f"{cluster.endpoint.url}?schema={name}&pool_size=3") as backends:
        store = backends.store
        async with trio.open_nursery() as nursery:  # three connections in the pool
            for i in range(6):
                nursery.start_soon(store.mark_sent, f"n{i}", "sms", "sent", T0)
        with psycopg.connect(cluster.endpoint.url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND datname = 'postgres'"
                " AND backend_type = 'client backend'"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        assert await store.sent_status("n1", "sms") == "sent"  # retried once on a new connection: the others are gone too
        await store.mark_sent("n9", "sms", "delivered", T0)
        assert await store.sent_status("n9", "sms") == "delivered"


async def test_a_statement_over_its_timeout_fails_clearly_and_the_trio_thread_runs_meanwhile(cluster: PostgresCluster) -> None:
    name = schema()
    async with opened(f"{cluster.endpoint.url}?schema={name}&statement_timeout_ms=800", "templates") as backends:
        templates = backends.templates
        await templates.create_template("welcome", b"{}", T0)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await trio.sleep(0.01)
                ticks += 1

        with psycopg.connect(cluster.endpoint.url) as holder:  # another client holds the template's row
            holder.execute(f"SELECT 1 FROM {name}.templates WHERE id = 'welcome' FOR UPDATE")
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                with trio.fail_after(60), pytest.raises(PostgresUnavailable, match="did not answer within 800 ms"):
                    await templates.add_version("welcome", b"{}", T0 + 1)
                nursery.cancel_scope.cancel()
            holder.rollback()
        assert ticks > 0, "the event loop did not run while the statement waited"
        assert (await templates.add_version("welcome", b"{}", T0 + 2)) is not None  # the connection is still good


def test_every_store_sql_module_keeps_its_migrations_in_order() -> None:
    from reactor.backends.postgres import key_store, signing_keys, template_store, user_store

    for module in (store_sql, key_store, template_store, user_store, signing_keys):
        assert [m.version for m in module.MIGRATIONS] == list(range(1, len(module.MIGRATIONS) + 1)), module.__name__


# -- a whole node with its store on PostgreSQL -------------------------------------------------------------

TEMPLATE = {
    "name": "Welcome",
    "default_locale": "en",
    "locales": {
        "en": {"email": {"subject": "Welcome, {{name}}", "text": "Hi {{name}}", "html": "<p>Hi {{name}}</p>"}},
        "fr": {"email": {"subject": "Bienvenue, {{name}}", "text": "Salut {{name}}", "html": "<p>Salut {{name}}</p>"}},
    },
}
PREFERENCES = {"contact": {"email": "zoe@example.org"}, "locale": "fr-CA"}


async def test_a_node_whose_store_is_postgres_delivers_with_its_templates_and_preferences(cluster: PostgresCluster, tmp_path: Path) -> None:
    import email
    import email.policy

    from tests.helpers import http, running_node, wait_final

    name = schema()
    url = f"{cluster.endpoint.url}?schema={name}"
    async with running_node(tmp_path / "one", store=url) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/welcome", json=TEMPLATE)).status_code == 201
        assert (await client.put("/v1/users/zoe/preferences", json=PREFERENCES)).status_code == 200
        response = await client.post("/v1/notifications", json={
            "user_id": "zoe", "channels": ["email"], "template_id": "welcome", "data": {"name": "Zoë"},
        })
        assert response.status_code == 202, response.text
        nid = response.json()["notification_id"]
        status = await wait_final(client, nid)
        assert status["channels"]["email"]["status"] == "delivered", status
        reader = await client.post("/v1/admin/keys", json={"scopes": ["read"], "name": "a reader"})
        assert reader.status_code == 201, reader.text
        data_dir = herald.config.data_dir
        message = email.message_from_bytes((herald.config.outbox_dir / f"{nid}.eml").read_bytes(), policy=email.policy.default)
    assert (message["Subject"], message["To"]) == ("Bienvenue, Zoë", "zoe@example.org")  # the template in the locale of the preferences
    for embedded in ("store.sqlite3", "keys.sqlite3", "templates.sqlite3", "users.sqlite3", "signing-keys.json"):
        assert not (data_dir / embedded).exists(), f"{embedded} in the data dir: the store setting was not used"
    with psycopg.connect(cluster.endpoint.url) as conn:
        conn.execute(f"SET search_path TO {name}")
        assert conn.execute("SELECT id, latest_version FROM templates").fetchall() == [("welcome", 1)]
        assert conn.execute("SELECT user_id FROM preferences").fetchall() == [("zoe",)]
        assert conn.execute("SELECT status FROM send_ledger WHERE notification_id = %s", (nid,)).fetchall() == [("delivered",)]
        assert conn.execute("SELECT count(*) FROM signing_keys").fetchone() == (1,)
        assert conn.execute("SELECT name FROM api_keys WHERE name = 'a reader'").fetchall() == [("a reader",)]
    # another node, a data dir of its own, the same store: the same templates and preferences
    async with running_node(tmp_path / "two", store=url) as herald, http(herald, reader.json()["key"]) as client:
        assert (await client.get("/v1/users/zoe/preferences")).json()["contact"] == PREFERENCES["contact"]
        assert (await client.get("/v1/templates/welcome")).status_code == 200


async def test_a_server_that_accepts_and_never_answers_fails_the_open_within_the_connect_timeout() -> None:
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        started = trio.current_time()
        with trio.fail_after(30), pytest.raises(PostgresUnavailable, match="timeout"):
            async with opened(f"postgresql://herald@127.0.0.1:{port}/postgres?schema={schema()}&connect_timeout=1"):
                pass
        print(f"gave up after {trio.current_time() - started:.2f} s")
        assert held, "the client never connected: the test did not test a silent server"
        nursery.cancel_scope.cancel()


@pytest.mark.skipif(os.geteuid() != 0, reason="freezing the server's processes needs root (they run as the postgres user)")
async def test_a_call_to_a_server_that_stopped_answering_is_cut_off_and_the_next_one_succeeds(cluster: PostgresCluster) -> None:
    """A frozen server enforces no statement timeout: the pool's watchdog cuts the connection on the client's side."""
    app = f"frozen{uuid.uuid4().hex[:8]}"
    url = f"{cluster.endpoint.url}?schema={schema()}&statement_timeout_ms=300&connect_timeout=2&pool_size=1&application_name={app}"
    async with opened(url) as backends:
        store = backends.store
        await store.put_meta_if_absent("k", "v")
        with psycopg.connect(cluster.endpoint.url, autocommit=True) as admin:
            [pid] = [row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))]
        os.kill(pid, signal.SIGSTOP)
        try:
            await stopped(pid)
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    await trio.sleep(0.01)
                    ticks += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(tick)
                started = trio.current_time()
                with trio.fail_after(60), pytest.raises(PostgresUnavailable, match="did not answer within"):
                    await store.get_meta("k")
                print(f"cut off after {trio.current_time() - started:.2f} s")
                nursery.cancel_scope.cancel()
            assert ticks > 0, "the event loop did not run while the call waited"
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await store.get_meta("k") == "v"  # a new connection


async def test_a_send_ledger_that_cannot_be_written_is_waited_for_in_place_and_its_record_not_committed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL goes away while an SMS is at the provider: the ledger write after its Sent is made again in place
    (backoff) until the server is back; meanwhile the record is not committed (it would come again if the worker
    stopped) and the provider is not called again; then it is recorded delivered and committed. The worker's
    other users of the Store (the Scheduler's, fan-out's and digester's polls) wait too: nothing crashes."""
    from protocol.channels import LANES, Channel
    from tests.helpers import http, running_node, wait_final

    async def committed_all(herald: Any) -> bool:
        for lane in LANES:
            topic = Channel.SMS.topic(lane)
            for p in range(herald.config.partitions_of(Channel.SMS)):
                if await herald.bus.committed("herald-sms", topic, p) != await herald.bus.end_offset(topic, p):
                    return False
        return True

    body = {"user_id": "lg", "channels": ["sms"], "content": {"sms": {"text": "hi"}}, "to": {"phone": "+15555550100"}}
    with postgres_cluster() as own:
        url = f"{own.endpoint.url}?schema={schema()}&connect_timeout=1&statement_timeout_ms=1000"
        async with running_node(tmp_path, store=url, faults={"sms": {"latency_ms": 1500}}) as herald, http(herald) as client:
            posted = await client.post("/v1/notifications", json=body)
            assert posted.status_code == 202, posted.text
            nid = posted.json()["notification_id"]
            provider = herald.providers[Channel.SMS]
            with trio.fail_after(20):
                while provider.in_flight < 1:  # at the provider's client (1.5 s of latency)
                    await trio.sleep(0.01)
            await trio.to_thread.run_sync(own.stop)
            with trio.fail_after(30):
                while provider.ledger_waits < 2:  # Sent, and the ledger write made again while the server is away
                    await trio.sleep(0.05)
            assert not await committed_all(herald)  # its record is not committed: it would come again
            assert provider.calls == 1
            await trio.to_thread.run_sync(own.start)
            done = await wait_final(client, nid, 30)
            assert done["channels"]["sms"]["status"] == "delivered", done
            assert await herald.store.sent_status(nid, "sms") is not None  # the ledger has it
            with trio.fail_after(30):
                while not await committed_all(herald):
                    await trio.sleep(0.05)
            assert provider.calls == 1  # one call, no retry
    crashed = [r.getMessage() for r in caplog.records if r.name == "herald.supervisor" and "crashed" in r.getMessage()]
    assert crashed == []  # before: the provider crashed on the ledger, the Scheduler on its poll (restarts escalate)
