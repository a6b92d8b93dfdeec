"""The signing key ring shared by several nodes through one SigningKeyStore (two in-process "nodes",
each with its own connection to the store: here two SigningKeyFiles on one file).

- A rotation on one node: a token signed by the new key verifies on the other at once
  (the unknown kid makes it read the stored ring again), and the other signs with the new key
  within `refresh_s` (its periodic refresh); a retirement stops the key everywhere within it.
- Rotations on two nodes at once keep both keys (compare-and-set on the ring's version).
- Made-up kids cannot make a node read the store more than once per `reread_min_s`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from actors.domain.tokens import InvalidToken, SigningKeys, issue_token, read_token
from actors.services.credentials import SharedSigningKeys, open_signing_keys, retire_signing_key, rotate_signing_keys
from protocol.keys import SigningKey
from reactor.backends.embedded import SigningKeyFile, SqliteStore
from reactor.clock import wall_ms
from reactor.ports import KeyRing

REFRESH_S = 30.0


class Node:
    """What a node holds of the ring: its connection to the store, its copy, and what keeps the copy fresh."""

    def __init__(self, rings: SigningKeyFile, ring: SigningKeys, refresh_s: float | None = REFRESH_S) -> None:
        self.rings = rings
        self.ring = ring
        self.shared = SharedSigningKeys(rings, ring, refresh_s=refresh_s)

    async def verify(self, token: str) -> str:
        await self.shared.learn(token)
        return read_token(self.ring, token, wall_ms()).user_id


async def two_nodes(tmp_path: Path, refresh_s: float | None = REFRESH_S) -> tuple[Node, Node]:
    store = SqliteStore(tmp_path / "store.sqlite3")  # the legacy-secret check of first start reads it
    await store.open()
    try:
        path = tmp_path / "signing-keys.json"
        nodes = []
        for _ in range(2):
            rings = SigningKeyFile(path)
            nodes.append(Node(rings, await open_signing_keys(rings, store, wall_ms()), refresh_s))
    finally:
        await store.close()
    return nodes[0], nodes[1]


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03  # the ring file is read in a thread
    return mock_clock


async def test_both_nodes_start_on_one_ring(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    assert [k.kid for k in a.ring.keys()] == [k.kid for k in b.ring.keys()] and a.ring.current.kid == b.ring.current.kid


async def test_a_token_signed_by_a_key_made_on_another_node_verifies_at_once(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    old = issue_token(b.ring, "alice", wall_ms() + 60_000)
    await rotate_signing_keys(a.rings, wall_ms(), False, a.ring)
    token = issue_token(a.ring, "alice", wall_ms() + 60_000)
    assert token.split(".")[0] != old.split(".")[0]
    with pytest.raises(InvalidToken):
        read_token(b.ring, token, wall_ms())  # b's copy does not have the key yet ...
    started = trio.current_time()
    assert await b.verify(token) == "alice"  # ... it reads the ring again for the unknown kid
    assert trio.current_time() == started  # no waiting for a refresh
    assert await b.verify(old) == "alice"  # the older key still verifies
    assert b.ring.current.kid == a.ring.current.kid  # and b signs with the new key from now on


async def test_the_other_node_signs_with_the_new_key_and_drops_a_retired_one_within_the_refresh(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    first = a.ring.current.kid
    first_token = issue_token(a.ring, "alice", wall_ms() + 3_600_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.shared.keep_fresh)
        await trio.sleep(7)  # somewhere in b's refresh period
        await rotate_signing_keys(a.rings, wall_ms(), False, a.ring)
        rotated_at = trio.current_time()
        while b.ring.current.kid == first:
            await trio.sleep(1)
        assert b.ring.current.kid == a.ring.current.kid
        assert trio.current_time() - rotated_at <= REFRESH_S
        assert await b.verify(first_token) == "alice"
        assert await retire_signing_key(a.rings, first, a.ring)
        retired_at = trio.current_time()
        while b.ring.get(first) is not None:
            await trio.sleep(1)
        assert trio.current_time() - retired_at <= REFRESH_S
        with pytest.raises(InvalidToken):
            await b.verify(first_token)  # the retired key verifies nowhere
        b.shared.stop()


class BothReadFirst(SigningKeyFile):
    """A node's connection whose writes wait until both nodes have read the ring: two rotations at the same moment."""

    def __init__(self, path: Path, read_both: list[trio.Event], me: int) -> None:
        super().__init__(path)
        self.read_both, self.me = read_both, me

    async def read_ring(self) -> KeyRing | None:
        found = await super().read_ring()
        self.read_both[self.me].set()
        return found

    async def write_ring(self, keys: Sequence[SigningKey], current: str, expected_version: int | None) -> KeyRing | None:
        for read in self.read_both:
            await read.wait()
        return await super().write_ring(keys, current, expected_version)


async def test_rotations_on_two_nodes_at_once_keep_both_keys(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    path = tmp_path / "signing-keys.json"
    read_both = [trio.Event(), trio.Event()]
    racing = [BothReadFirst(path, read_both, 0), BothReadFirst(path, read_both, 1)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rotate_signing_keys, racing[0], wall_ms(), False, a.ring)
        nursery.start_soon(rotate_signing_keys, racing[1], wall_ms(), False, b.ring)
    stored = await a.rings.read_ring()
    assert stored is not None
    new_a, new_b = a.ring.current.kid, b.ring.current.kid  # each made its own new key
    assert new_a != new_b
    assert {new_a, new_b} <= {k.kid for k in stored.keys}  # neither rotation was lost
    assert len(stored.keys) == 3 and stored.version == 3
    for node in (a, b):
        await node.shared.refresh()
        assert sorted(k.kid for k in node.ring.keys()) == sorted(k.kid for k in stored.keys)  # the same ring on both, in the end
        assert node.ring.current.kid == stored.current


async def test_made_up_kids_read_the_store_at_most_once_per_interval(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    b.shared.reread_min_s = 1.0
    refused = 0
    for burst in range(3):  # 3 bursts of 100 tries, 1 s apart
        for i in range(100):
            forged = f"{burst:04x}{i:04x}.e30.AAAA"
            try:
                await b.verify(forged)
            except InvalidToken:
                refused += 1
        await trio.sleep(1)
    assert refused == 300
    assert b.shared.reads == 3


async def test_concurrent_first_starts_make_one_ring(tmp_path, clock):
    store = SqliteStore(tmp_path / "store.sqlite3")
    await store.open()
    path = tmp_path / "signing-keys.json"
    read_both = [trio.Event(), trio.Event()]
    made: list[SigningKeys] = []

    async def start(me: int) -> None:
        made.append(await open_signing_keys(BothReadFirst(path, read_both, me), store, wall_ms()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start, 0)
        nursery.start_soon(start, 1)
    await store.close()
    assert [k.kid for k in made[0].keys()] == [k.kid for k in made[1].keys()]  # the second took the first's ring


async def test_an_unreachable_store_refuses_the_unknown_token_and_the_node_carries_on(tmp_path, clock):
    a, b = await two_nodes(tmp_path)
    await rotate_signing_keys(a.rings, wall_ms(), False, a.ring)
    token = issue_token(a.ring, "alice", wall_ms() + 3_600_000)

    class Down(SigningKeyFile):
        async def read_ring(self) -> KeyRing | None:
            raise OSError("the store is down")

    b.shared.store = Down(tmp_path / "elsewhere.json")
    with pytest.raises(InvalidToken):
        await b.verify(token)  # refused like any unknown kid, not a crash of the request
    async with trio.open_nursery() as nursery:
        await nursery.start(b.shared.keep_fresh)
        await trio.sleep(2 * REFRESH_S + 1)  # two refreshes fail: the refresher goes on
        b.shared.store = b.rings  # the store is back
        await trio.sleep(REFRESH_S)
        assert b.ring.current.kid == a.ring.current.kid
        b.shared.stop()
    assert await b.verify(token) == "alice"


async def test_a_running_node_accepts_tokens_of_a_key_made_elsewhere_on_every_route_that_reads_one(tmp_path):
    from actors.domain.preferences import issue_unsubscribe_token
    from reactor.backends.embedded import FILES
    from tests.helpers import http, open_websocket_url, receive_json, running_node, ws_url
    from tests.realtime.streams import subscriber_client

    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        assert herald.gateway.key_ring is not None
        herald.gateway.key_ring.reread_min_s = 0  # one unknown kid per route below, in quick succession
        other_node = SigningKeyFile(herald.config.data_dir / FILES["signing_keys"])

        async def key_made_elsewhere() -> SigningKeys:
            """Another node (or the offline CLI) rotates the ring in the shared store: a key this node has not seen."""
            ring = await rotate_signing_keys(other_node, wall_ms(), False)
            assert herald.gateway.secret.get(ring.current.kid) is None
            return ring

        token = issue_token(await key_made_elsewhere(), "alice", wall_ms() + 60_000)
        poll = await browser.get("/v1/poll", params={"timeout": 0, "token": token})  # subscriber(): SSE, long-poll
        assert poll.status_code == 200, poll.text
        token = issue_token(await key_made_elsewhere(), "alice", wall_ms() + 60_000)
        inbox = await browser.get("/v1/users/alice/inbox", headers={"Authorization": f"Bearer {token}"})  # authorize_user()
        assert inbox.status_code == 200, inbox.text
        token = issue_token(await key_made_elsewhere(), "alice", wall_ms() + 60_000)
        async with open_websocket_url(ws_url(herald.url, token)) as ws:  # the WebSocket
            await ws.send_message('{"type":"sync"}')
            assert (await receive_json(ws))["type"] == "synced"
        unsubscribe = issue_unsubscribe_token(await key_made_elsewhere(), "alice", "marketing")
        page = await client.get("/v1/unsubscribe", params={"token": unsubscribe})  # unsubscribe links
        assert page.status_code == 200, page.text
        assert herald.gateway.key_ring.reads == 4
