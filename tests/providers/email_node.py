"""A whole node whose email channel goes through a configured provider, and one email sent through it until `sent`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from actors.app import run_herald
from actors.config import load_config

CODE_EMAIL = {"user_id": "bob", "channels": ["email"], "to": {"email": "bob@example.org"},
              "content": {"email": {"subject": "Your code", "text": "Code 1234"}}}


@asynccontextmanager
async def email_node(
    tmp_path: Path, providers: dict[str, Any], secrets: dict[str, str], **settings: Any,
) -> AsyncIterator[httpx.AsyncClient]:
    """A node configured as an operator would (HERALD_PROVIDERS and the secrets' variables); a client with its key."""
    env = {"HERALD_PROVIDERS": json.dumps(providers), **secrets}
    config = load_config(env=env, data_dir=tmp_path / "data", port=0, api_key="test-key", retry_initial_s=0.01, shutdown_grace_s=5,
                         **settings)
    async with trio.open_nursery() as nursery:
        herald = await nursery.start(lambda task_status: run_herald(config, signals=False, task_status=task_status))
        try:
            async with httpx.AsyncClient(base_url=herald.url, headers={"Authorization": "Bearer test-key"}, timeout=10) as client:
                yield client
        finally:
            herald.system.request_shutdown()


async def send_until_sent(client: httpx.AsyncClient) -> tuple[str, dict[str, Any]]:
    """POST CODE_EMAIL; its id and its status once the email channel is `sent` (bounded)."""
    response = await client.post("/v1/notifications", json=CODE_EMAIL)
    assert response.status_code == 202, response.text
    nid = response.json()["notification_id"]
    with trio.fail_after(30):
        while (status := (await client.get(f"/v1/notifications/{nid}")).json())["channels"]["email"]["status"] != "sent":
            await trio.sleep(0.05)
    return nid, status
