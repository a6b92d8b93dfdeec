"""Idempotency-Key on POST /v1/notifications: per API key, canonical bodies, short pending leases."""

import json

import pytest
import trio

from actors.api.errors import Answer
from actors.api.idempotency import LEASE_S, WAIT_FOR_FIRST_S, Idempotency
from actors.domain.fingerprints import fingerprint
from reactor.backends.embedded import MemoryState, SqliteState
from tests.helpers import http, running_node, web_notification


async def test_same_key_same_body_replays_the_original_response(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem1")
        first = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-1"})
        again = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == again.status_code == 202
        assert again.json()["notification_id"] == first.json()["notification_id"]
        assert again.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert again.headers["location"] == first.headers["location"]
        history = (await client.get("/v1/users/idem1/notifications")).json()
        assert len(history["items"]) == 1


async def test_same_key_different_body_is_422(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        await client.post("/v1/notifications", json=web_notification("idem2", "a"), headers={"Idempotency-Key": "k-2"})
        other = await client.post("/v1/notifications", json=web_notification("idem2", "b"), headers={"Idempotency-Key": "k-2"})
        assert other.status_code == 422
        assert other.headers["content-type"] == "application/problem+json"
        assert other.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_concurrent_requests_with_one_key_make_one_notification(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem3")
        results = []

        async def post():
            response = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-3"})
            results.append((response.status_code, response.json()["notification_id"]))

        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(post)
        assert {status for status, _ in results} == {202}
        assert len({nid for _, nid in results}) == 1
        assert herald.ingress.accepted == 1


async def test_keys_longer_than_255_are_400_and_bad_bodies_are_not_kept(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        too_long = await client.post("/v1/notifications", json=web_notification(), headers={"Idempotency-Key": "x" * 256})
        assert too_long.status_code == 400
        assert too_long.json()["errors"][0]["field"] == "Idempotency-Key"
        ok = await client.post("/v1/notifications", json=web_notification("idem4"), headers={"Idempotency-Key": "x" * 255})
        assert ok.status_code == 202
        # a 4xx answer is kept too: the same bad request with the same key gets the same answer
        bad = {"user_id": "idem4", "channels": ["sms"], "content": {}}
        first = await client.post("/v1/notifications", json=bad, headers={"Idempotency-Key": "k-5"})
        second = await client.post("/v1/notifications", json=bad, headers={"Idempotency-Key": "k-5"})
        assert first.status_code == second.status_code == 422
        assert second.headers["idempotent-replayed"] == "true"


async def test_keys_expire_after_24_hours(tmp_path, mock_clock):
    # time jumps only after 0.25 s of real idleness: never in the middle of a request
    mock_clock.autojump_threshold = 0.25
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = web_notification("idem6")
        first = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-6"})
        await trio.sleep(24 * 3600 + 1)
        later = await client.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k-6"})
        assert later.status_code == 202
        assert later.json()["notification_id"] != first.json()["notification_id"]


async def test_idempotency_keys_are_scoped_per_api_key(tmp_path):
    async with running_node(tmp_path) as herald:
        _, first = await herald.gateway.keys.create(["send", "read"], "service a")
        _, second = await herald.gateway.keys.create(["send", "read"], "service b")
        async with http(herald, first) as a, http(herald, second) as b:
            body = web_notification("idem7")
            from_a = await a.post("/v1/notifications", json=body, headers={"Idempotency-Key": "shared"})
            from_b = await b.post("/v1/notifications", json=body, headers={"Idempotency-Key": "shared"})
            assert from_a.status_code == from_b.status_code == 202
            assert "idempotent-replayed" not in from_b.headers  # b never sees a's answer ...
            assert from_a.json()["notification_id"] != from_b.json()["notification_id"]
            other = await b.post("/v1/notifications", json=web_notification("idem7", "else"), headers={"Idempotency-Key": "k2"})
            mine = await a.post("/v1/notifications", json=body, headers={"Idempotency-Key": "k2"})
            assert other.status_code == mine.status_code == 202  # ... nor is refused because of it
            # each key still replays its own
            again = await a.post("/v1/notifications", json=body, headers={"Idempotency-Key": "shared"})
            assert again.headers["idempotent-replayed"] == "true"
            assert again.json()["notification_id"] == from_a.json()["notification_id"]
        assert herald.ingress.accepted == 4


async def test_the_same_json_reserialised_is_the_same_request(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        body = {"user_id": "idem8", "channels": ["web"], "content": {"web": {"title": "Hé", "body": "b"}},
                "data": {"b": [1, 2.5, {"y": None, "x": True}], "a": "z"}}
        compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        spaced = json.dumps(body, indent=3, ensure_ascii=True).encode()  # other whitespace, \u00e9 for é
        reordered = json.dumps(body, sort_keys=True).encode()  # every object's keys in another order
        assert len({compact, spaced, reordered}) == 3
        headers = {"Idempotency-Key": "k-8", "Content-Type": "application/json"}
        first = await client.post("/v1/notifications", content=compact, headers=headers)
        assert first.status_code == 202
        for again in (spaced, reordered):
            replayed = await client.post("/v1/notifications", content=again, headers=headers)
            assert replayed.status_code == 202, replayed.text
            assert replayed.headers["idempotent-replayed"] == "true"
            assert replayed.json()["notification_id"] == first.json()["notification_id"]
        changed = json.dumps({**body, "data": {**body["data"], "a": "y"}}).encode()
        assert (await client.post("/v1/notifications", content=changed, headers=headers)).status_code == 422


def test_fingerprints_compare_decoded_json_and_bytes_otherwise():
    same = (b'{"a":1,"b":[1,2]}', b' { "b" : [1, 2],\n "a": 1 } ', b'{"\\u0061":1,"b":[1,2]}')
    assert len({fingerprint(body) for body in same}) == 1
    assert fingerprint(b'{"a":1}') != fingerprint(b'{"a":1.0}') != fingerprint(b'{"a":"1"}')
    assert fingerprint(b'{"b":[1,2]}') != fingerprint(b'{"b":[2,1]}')  # arrays keep their order
    assert fingerprint(b"not json") == fingerprint(b"not json") != fingerprint(b"not  json")
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON, too deep to decode: compared as bytes
    assert fingerprint(deep) == fingerprint(deep) != fingerprint(b"[" * 99_999 + b"]" * 99_999)


class Crashed(Exception):
    """The process is gone: nothing it would still do reaches the state."""


class DyingState:
    """A State that works until `die()`; then every call fails, as a killed process's would never happen."""

    def __init__(self, state):
        self.state = state
        self.dead = False

    def die(self):
        self.dead = True

    def __getattr__(self, name):
        method = getattr(self.state, name)

        async def call(*args, **kwargs):
            if self.dead:
                raise Crashed(name)
            return await method(*args, **kwargs)

        return call


async def test_a_crash_mid_request_frees_the_key_within_seconds(tmp_path, mock_clock):
    mock_clock.autojump_threshold = 0
    state = SqliteState(tmp_path / "state.sqlite3")
    await state.open()
    try:
        dying = DyingState(state)
        crashed = Idempotency(dying)
        entered = trio.Event()

        async def stuck(_ids: object = None) -> Answer:
            entered.set()
            await trio.sleep_forever()
            raise AssertionError

        async def doomed_request() -> None:
            with pytest.raises(Crashed):  # its clean-up cannot reach the state any more
                await crashed.run("k:route", "crash-1", b'{"a":1}', stuck)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(doomed_request)
            await entered.wait()
            dying.die()  # killed mid-request: its pending record stays as it was
            with pytest.raises(Crashed):
                await dying.get("anything")
            nursery.cancel_scope.cancel()
        assert await state.get("idempotency:k:route:crash-1") is not None

        restarted = Idempotency(state)  # the node after its restart, on the same state
        calls = []

        async def handler(_ids: object = None) -> Answer:
            calls.append(trio.current_time())
            return Answer(202, b'{"ok":true}')

        start = trio.current_time()
        answer = await restarted.run("k:route", "crash-1", b'{"a":1}', handler)
        assert answer.status == 202 and len(calls) == 1  # one retry, no 409
        assert calls[0] - start <= LEASE_S  # seconds, not a day
        replay = await restarted.run("k:route", "crash-1", b'{"a":1}', handler)
        assert replay.headers["Idempotent-Replayed"] == "true" and len(calls) == 1
    finally:
        await state.close()


async def test_a_long_request_keeps_its_lease_and_a_waiter_gets_its_answer(tmp_path, mock_clock):
    mock_clock.autojump_threshold = 0
    # In memory: no thread hops, so the mock clock cannot jump past a lease while a write is on its way.
    state = MemoryState()
    node_a, node_b = Idempotency(state), Idempotency(state)  # two processes on one state
    calls = []
    release = trio.Event()

    async def slow(_ids: object = None) -> Answer:
        calls.append("a")
        await release.wait()
        return Answer(202, b'{"n":"a"}')

    async def other(_ids: object = None) -> Answer:
        calls.append("b")
        return Answer(202, b'{"n":"b"}')

    answers = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(node_a.keep_leases)

        async def first():
            answers["a"] = await node_a.run("k:route", "long", b"{}", slow)

        nursery.start_soon(first)
        await trio.sleep(1)
        # 3 leases long: without renewals the lease would have run out and b would run the request again
        answers["b-early"] = await node_b.run("k:route", "long", b"{}", other)
        assert trio.current_time() >= 1 + WAIT_FOR_FIRST_S
        assert answers["b-early"].status == 409 and answers["b-early"].headers["Retry-After"] == "1"

        async def second():
            answers["b"] = await node_b.run("k:route", "long", b"{}", other)

        nursery.start_soon(second)
        await trio.sleep(2)
        release.set()
        node_a.stop()  # the keeper returns; the two requests finish
    assert calls == ["a"] and node_a.renewals >= 5
    assert answers["a"].body == answers["b"].body == b'{"n":"a"}'
    assert answers["b"].headers["Idempotent-Replayed"] == "true"


async def test_the_node_renews_the_lease_of_a_long_request(tmp_path, mock_clock):
    mock_clock.autojump_threshold = 0.01  # time jumps only when the node is idle
    async with running_node(tmp_path) as herald:
        node = herald.gateway.idempotency
        elsewhere = Idempotency(node.state)  # another process on the same state
        calls = []

        async def slow(_ids: object = None) -> Answer:
            calls.append("node")
            await trio.sleep(3 * LEASE_S)
            return Answer(202, b'{"by":"node"}')

        async def other(_ids: object = None) -> Answer:
            calls.append("elsewhere")
            return Answer(202, b'{"by":"elsewhere"}')

        answers = {}
        async with trio.open_nursery() as nursery:
            async def on_the_node() -> None:
                answers["node"] = await node.run("k:route", "slow-1", b"{}", slow)

            nursery.start_soon(on_the_node)
            await trio.sleep(LEASE_S + 1)  # past the first lease: only a renewal keeps the key
            answers["elsewhere"] = await elsewhere.run("k:route", "slow-1", b"{}", other)
        assert calls == ["node"] and node.renewals >= 2
        assert answers["elsewhere"].body == b'{"by":"node"}' and answers["elsewhere"].headers["Idempotent-Replayed"] == "true"


async def test_the_lease_keeper_sleeps_when_its_only_lease_was_lost(mock_clock):
    """A lease lost to another process (it ran out; the key was taken) is not renewed, and the keeper
    does not spin on it while its request runs on (it used to loop at once, for ever, at 100% CPU)."""
    mock_clock.rate = 1000  # time runs without autojump: a spinning task cannot stop it
    state = MemoryState()
    node = Idempotency(state)
    release = trio.Event()
    leased = trio.Event()

    async def slow(_ids: object = None) -> Answer:
        leased.set()
        await release.wait()
        return Answer(202, b"{}")

    async with trio.open_nursery() as nursery:
        await nursery.start(node.keep_leases)
        nursery.start_soon(node.run, "k:route", "lost", b"{}", slow)
        await leased.wait()
        await state.set("idempotency:k:route:lost", b"taken by another process", 60)
        await trio.sleep(30)  # twenty renewal periods of virtual time
        turns = node.keeper_turns
        release.set()
        node.stop()
    assert node.renewals == 0
    assert turns <= 10, f"the keeper turned {turns} times in 30 s of one lost lease"



async def test_an_append_of_unknown_outcome_keeps_the_keys_ids_for_its_retries():
    from actors.messages import KeyedIds
    from reactor.ports import AppendUncertain

    keys = Idempotency(MemoryState())
    given: list[KeyedIds | None] = []
    outcomes: list[object] = [AppendUncertain("not acknowledged in time"), Answer(503, b"{}"), Answer(202, b'{"n":1}')]

    async def handler(ids: KeyedIds | None) -> Answer:
        given.append(ids)
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        assert isinstance(outcome, Answer)
        return outcome

    with pytest.raises(AppendUncertain):
        await keys.run("k:route", "u-1", b'{"a":1}', handler)
    assert (await keys.run("k:route", "u-1", b'{"a":1}', handler)).status == 503  # a later 503: still uncertain
    assert (await keys.run("k:route", "u-1", b'{"a":1}', handler)).status == 202
    assert given[0] is not None and given[0] == given[1] == given[2]  # the same ids on every try
    assert (await keys.run("k:route", "u-1", b'{"a":1}', handler)).headers["Idempotent-Replayed"] == "true"
    assert keys.retried_uncertain == 2

    # without an uncertain append a 5xx frees the key: the next try is a new request with new ids
    fresh: list[KeyedIds | None] = []

    async def fails_then_works(ids: KeyedIds | None) -> Answer:
        fresh.append(ids)
        return Answer(503 if len(fresh) == 1 else 202, b"{}")

    await keys.run("k:route", "u-2", b"{}", fails_then_works)
    await keys.run("k:route", "u-2", b"{}", fails_then_works)
    assert fresh[0] != fresh[1]
