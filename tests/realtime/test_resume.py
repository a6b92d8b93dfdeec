"""The check issue 4 names: on each transport (WebSocket, SSE, long-poll) a client dropped
mid-stream, while notifications keep flowing, resumes from the last id it saw and gets
every notification exactly once, in delivery order: no gap, no duplicate.

A sender posts N web notifications for one user, a few ms apart (each POST returns once
the record is on the bus, so the posting order is the delivery order). Meanwhile the
client reads, drops its connection at fixed points (leaving frames in flight), reconnects
with the last id it processed, and carries on until it has N.
"""

from __future__ import annotations

import trio

from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_sse, open_ws, poll, send_web, subscriber_client, wait_unread, ws_sync

N = 60
DROP_AFTER = (6, 21, 38)  # the client drops its connection once it has processed this many
PAUSE_S = 0.01


class Flow:
    """Posts N web notifications for one user, paced; `sent` in posting (= delivery) order."""

    def __init__(self, client, user: str) -> None:
        self.client = client
        self.user = user
        self.sent: list[str] = []
        self.done = trio.Event()

    async def run(self) -> None:
        for i in range(N):
            self.sent.append(await send_web(self.client, self.user, f"n{i}"))
            await trio.sleep(PAUSE_S)
        self.done.set()


def assert_exactly_once(received: list[str], flow: Flow, drops_mid_flow: int) -> None:
    duplicates = sorted({i for i in received if received.count(i) > 1})
    missing = [i for i in flow.sent if i not in received]
    assert not duplicates and not missing, f"duplicates {duplicates}, missing {missing}"
    assert received == flow.sent  # and in delivery order
    assert drops_mid_flow >= 2, "the client should have dropped while notifications were flowing"
    print(f"received={len(received)} sent={len(flow.sent)} drops_mid_flow={drops_mid_flow} duplicates=0 missing=0")


async def test_websocket_resumes_without_gap_or_duplicate(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "ws-user")
        flow = Flow(client, "ws-user")
        received: list[str] = []
        drops_mid_flow = 0
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                for drop_after in (*DROP_AFTER, N):
                    async with open_ws(herald.url, token) as ws:
                        received += [f["id"] for f in await ws_sync(ws, received[-1] if received else None)]
                        if drop_after == DROP_AFTER[0]:
                            nursery.start_soon(flow.run)  # once the first session is live
                        while len(received) < drop_after:
                            frame = await receive_json(ws)
                            assert frame["type"] == "notification", frame
                            received.append(frame["id"])
                    drops_mid_flow += drop_after < N and not flow.done.is_set()
        assert_exactly_once(received, flow, drops_mid_flow)


async def test_websocket_resumes_from_last_id_in_the_url(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "ws-url-user")
        first = await send_web(client, "ws-url-user", "first")
        await wait_unread(client, "ws-url-user", 1)
        flow = Flow(client, "ws-url-user")
        received: list[str] = []
        drops_mid_flow = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flow.run)
            with trio.fail_after(30):
                for drop_after in (*DROP_AFTER, N):
                    last_id = received[-1] if received else first
                    async with open_ws(herald.url, f"{token}&last_id={last_id}") as ws:
                        while len(received) < drop_after:
                            frame = await receive_json(ws)
                            if frame["type"] == "synced":
                                continue
                            assert frame["type"] == "notification", frame
                            received.append(frame["id"])
                    drops_mid_flow += drop_after < N and not flow.done.is_set()
        assert_exactly_once(received, flow, drops_mid_flow)


async def test_sse_resumes_with_last_event_id_without_gap_or_duplicate(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "sse-user")
        flow = Flow(client, "sse-user")
        received: list[str] = []
        drops_mid_flow = 0
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                for drop_after in (*DROP_AFTER, N):
                    async with open_sse(browser, token, received[-1] if received else None, header=bool(received)) as stream:
                        received += [e.id for e in await stream.until_synced()]
                        if drop_after == DROP_AFTER[0]:
                            nursery.start_soon(flow.run)  # a stream without Last-Event-ID starts from now: once it is live
                        while len(received) < drop_after:
                            event = await stream.next_event()
                            assert event.event == "notification" and event.id == event.data["id"], event
                            received.append(event.id)
                    drops_mid_flow += drop_after < N and not flow.done.is_set()
        assert_exactly_once(received, flow, drops_mid_flow)
        with trio.fail_after(5):  # a closed stream leaves no session behind
            while herald.registry.session_count():
                await trio.sleep(0.01)


async def test_long_poll_resumes_after_lost_responses_without_gap_or_duplicate(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "poll-user")
        # a client starts from the newest id of its inbox (read with its token), then polls after it
        first = await send_web(client, "poll-user", "first")
        await wait_unread(client, "poll-user", 1)
        page = await browser.get("/v1/users/poll-user/inbox", params={"limit": 1}, headers={"Authorization": f"Bearer {token}"})
        after = page.json()["items"][0]["id"]
        assert after == first
        flow = Flow(client, "poll-user")
        received: list[str] = []
        drops_mid_flow = 0
        polls = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flow.run)
            with trio.fail_after(30):
                while len(received) < N:
                    polls += 1
                    if polls in (2, 5, 9):  # cancelled in flight: the connection closes mid-request
                        with trio.move_on_after(0.003):
                            await poll(browser, token, after=after, timeout=5, limit=7)
                        drops_mid_flow += not flow.done.is_set()
                        continue
                    body = await poll(browser, token, after=after, timeout=5, limit=7)
                    if polls in (3, 7, 12):  # answered, but the response is lost before the client reads it
                        drops_mid_flow += not flow.done.is_set()
                        continue
                    assert all(item["type"] == "notification" for item in body["items"]), body
                    received += [item["id"] for item in body["items"]]
                    after = body["last_id"]
                    assert after == (received[-1] if received else first)
        assert_exactly_once(received, flow, drops_mid_flow)
        with trio.fail_after(5):  # cancelled polls leave no session behind
            while herald.registry.session_count():
                await trio.sleep(0.01)
