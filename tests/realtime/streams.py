"""Client sides of the three transports for the real-time tests: WebSocket, SSE, long-poll."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from tests.helpers import open_websocket_url, receive_json, web_notification, ws_url


@dataclass
class Event:
    """One parsed Server-Sent Event."""

    event: str
    data: dict[str, Any]
    id: str | None = None


class SSE:
    """An open /v1/sse stream, parsed line by line."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next_event(self) -> Event:
        """The next event (comment lines are collected in `comments`)."""
        fields: dict[str, str] = {}
        async for line in self._lines:
            if line == "":
                if "data" in fields:
                    return Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"))
                fields.clear()
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def until_synced(self) -> list[Event]:
        """The notification events replayed before `synced` (bounded)."""
        events = []
        with trio.fail_after(10):
            while True:
                event = await self.next_event()
                if event.event == "synced":
                    assert event.data["count"] == len(events), (event, events)
                    return events
                assert event.event == "notification", event
                events.append(event)


@asynccontextmanager
async def open_sse(client: httpx.AsyncClient, token: str, last_id: str | None = None, *, header: bool = True) -> AsyncIterator[SSE]:
    """Open the stream with the token (Authorization header, or ?token=) and Last-Event-ID when given."""
    headers = {"Authorization": f"Bearer {token}"} if header else {}
    params = {} if header else {"token": token}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    async with client.stream("GET", "/v1/sse", headers=headers, params=params) as response:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSE(response)


def subscriber_client(base_url: str) -> httpx.AsyncClient:
    """A client with no API key: it speaks with subscriber tokens only."""
    return httpx.AsyncClient(base_url=base_url, timeout=10)


async def poll(client: httpx.AsyncClient, token: str, **params: Any) -> dict[str, Any]:
    """GET /v1/poll with the token; the JSON body of a 200."""
    response = await client.get("/v1/poll", params=params, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return dict(response.json())


@asynccontextmanager
async def open_ws(base_url: str, token: str) -> AsyncIterator[Any]:
    async with open_websocket_url(ws_url(base_url, token)) as ws:
        yield ws


async def ws_sync(ws: Any, last_id: str | None = None) -> list[dict[str, Any]]:
    """Send a sync; the notification frames replayed before `synced` (bounded)."""
    await ws.send_message(json.dumps({"type": "sync"} if last_id is None else {"type": "sync", "last_id": last_id}))
    frames = []
    with trio.fail_after(10):
        while True:
            frame = await receive_json(ws)
            if frame["type"] == "synced":
                assert frame["count"] == len(frames), (frame, frames)
                return frames
            assert frame["type"] == "notification", frame
            frames.append(frame)


async def send_web(client: httpx.AsyncClient, user: str, title: str = "Hello") -> str:
    """POST one web notification for `user`; its id."""
    response = await client.post("/v1/notifications", json=web_notification(user, title))
    assert response.status_code == 202, response.text
    return str(response.json()["notification_id"])


async def wait_unread(client: httpx.AsyncClient, user: str, count: int) -> None:
    """Until the user's inbox holds `count` unread notifications (bounded)."""
    with trio.fail_after(10):
        while True:
            response = await client.get(f"/v1/users/{user}/inbox/unread_count")
            assert response.status_code == 200, response.text
            if response.json()["unread"] == count:
                return
            await trio.sleep(0.02)
