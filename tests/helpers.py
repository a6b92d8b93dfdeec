"""Shared test helpers: a node in-process, HTTP and WebSocket clients."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import httpx
import trio
from trio_websocket import open_websocket_url

from actors.app import Herald, run_herald
from actors.config import Config, load_config


STORE_UNDER_TEST = "HERALD_TEST_STORE"  # a store URL (postgresql://...): the in-process nodes' store, a schema per test dir


def config_for(tmp: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = {"data_dir": tmp / "data", "port": 0, "api_key": "test-key", "retry_initial_s": 0.01, "shutdown_grace_s": 5}
    store = os.environ.get(STORE_UNDER_TEST)
    if store:  # scripts/test-store-on.sh: the node tests again, their store on a shared server
        schema = "t" + hashlib.sha256(str(tmp).encode()).hexdigest()[:16]  # a node restarted on the same dir finds its data
        settings["store"] = f"{store}{'&' if '?' in store else '?'}schema={schema}"
    return load_config(env={}, **{**settings, **overrides})


@asynccontextmanager
async def running_node(tmp: Path, **kwargs: Any) -> AsyncIterator[Herald]:
    clients = kwargs.pop("clients", None)
    config = config_for(tmp, **kwargs)
    async with trio.open_nursery() as nursery:
        herald: Herald = await nursery.start(lambda task_status: run_herald(config, clients=clients, signals=False, task_status=task_status))
        try:
            yield herald
        finally:
            herald.system.request_shutdown()


def http(herald: Herald, key: str = "test-key") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=herald.url, headers={"Authorization": f"Bearer {key}"}, timeout=10)


def web_notification(user: str = "u1", title: str = "Hello", **extra: Any) -> dict[str, Any]:
    return {"user_id": user, "channels": ["web"], "content": {"web": {"title": title, "body": "b"}}, **extra}


def all_channels(user: str = "u1") -> dict[str, Any]:
    return {
        "user_id": user,
        "channels": ["email", "sms", "push", "web"],
        "content": {
            "email": {"subject": "Your code", "text": "Code 1234", "html": "<p>Code <b>1234</b></p>"},
            "sms": {"text": "Code 1234"},
            "push": {"title": "Code", "body": "1234", "data": {"k": "v"}},
            "web": {"title": "Code", "body": "1234", "url": "https://example.invalid/x"},
        },
        "to": {"email": f"{user}@example.org", "phone": "+15555550100", "device_token": "tok-1"},
        "priority": "critical",
    }


async def token_for(client: httpx.AsyncClient, user: str) -> str:
    response = await client.post(f"/v1/users/{user}/tokens", json={})
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def ws_url(base: str, token: str) -> str:
    return base.replace("http://", "ws://") + f"/v1/ws?token={token}"


async def receive_json(ws: Any) -> dict[str, Any]:
    return dict(json.loads(await ws.get_message()))


async def wait_final(client: httpx.AsyncClient, nid: str, seconds: float = 10, *, web: str | None = None) -> dict[str, Any]:
    """Poll the status endpoint until every channel is final (bounded).

    `web`: and the web channel is that status (web is final at `sent`, in the inbox: a
    test that acked it waits for `delivered`).
    """
    body: dict[str, Any] = {}
    with trio.move_on_after(seconds):
        while True:
            response = await client.get(f"/v1/notifications/{nid}")
            if response.status_code == 200:
                body = response.json()
                if body["final"] and (web is None or body["channels"]["web"]["status"] == web):
                    return body
            await trio.sleep(0.05)
    raise AssertionError(f"not final after {seconds}s: {body}")


__all__ = ["open_websocket_url"]


class MemoryLedger:
    """The send ledger in memory, for tests of the Provider (SQLite writes would only slow a simulated clock down)."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str], str] = {}

    async def sent_status(self, notification_id: str, channel: str) -> str | None:
        return self.sent.get((notification_id, channel))

    async def mark_sent(self, notification_id: str, channel: str, status: str, at_ms: int) -> None:
        self.sent[(notification_id, channel)] = status

    async def mark_sent_many(self, marks: Sequence[tuple[str, str, str, int]]) -> None:
        for notification_id, channel, status, at_ms in marks:
            await self.mark_sent(notification_id, channel, status, at_ms)


@asynccontextmanager
async def role_nodes(tmp_path: Path, **settings: dict[str, Any]) -> AsyncIterator[dict[str, Herald]]:
    """An api, a worker and an edge node, each with its own data dir, on one set of embedded backends;
    `settings[role]`: that node's own config values (e.g. worker={"metrics_port": 0})."""
    from reactor.backends import open_backends

    shared = config_for(tmp_path / "shared")
    async with open_backends(shared.backend_settings()) as backends, trio.open_nursery() as nursery:
        started: dict[str, Herald] = {}
        for role in ("api", "worker", "edge"):
            config = dataclasses.replace(config_for(tmp_path / role), role=role, **settings.get(role, {}))  # past the refusal: shared backends
            started[role] = await nursery.start(
                lambda task_status, config=config: run_herald(config, signals=False, backends=backends, task_status=task_status)
            )
        try:
            yield started
        finally:
            for herald in started.values():
                herald.system.request_shutdown()
