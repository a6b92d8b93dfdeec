"""SSE and long-poll behaviour: heartbeats, parameters, waiting and timeouts, paging, draining;
and the WebSocket holding live frames until the client's first frame."""

from __future__ import annotations

import json

import trio

from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import SSE, open_sse, open_ws, poll, send_web, subscriber_client, wait_unread


async def test_poll_answers_at_once_pages_with_limit_and_times_out_empty(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        ids = [await send_web(client, "u1", f"n{i}") for i in range(5)]
        await wait_unread(client, "u1", 5)
        got, after = [], ids[0]
        start = trio.current_time()
        while len(got) < 4:
            body = await poll(browser, token, after=after, limit=2, timeout=30)
            assert 1 <= len(body["items"]) <= 2
            got += [item["id"] for item in body["items"]]
            after = body["last_id"]
        assert got == ids[1:] and trio.current_time() - start < 5  # each answered at once, not after 30 s
        start = trio.current_time()
        empty = await poll(browser, token, after=after, timeout=0.3)
        assert empty == {"items": [], "last_id": ids[-1]}
        assert 0.3 <= trio.current_time() - start < 5
        assert await poll(browser, token, timeout=0) == {"items": [], "last_id": None}


async def test_poll_waits_for_the_next_notification(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        result: dict = {}

        async def waiting() -> None:
            result.update(await poll(browser, token, timeout=20))

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            with trio.fail_after(5):
                while herald.registry.session_count() < 1:
                    await trio.sleep(0.01)
            nid = await send_web(client, "u1")
        assert [item["id"] for item in result["items"]] == [nid] and result["last_id"] == nid
        assert result["items"][0] == {**result["items"][0], "type": "notification", "title": "Hello", "body": "b"}
        assert trio.current_time() - start < 10


async def test_poll_and_sse_parameters_are_checked(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        auth = {"Authorization": f"Bearer {token}"}
        cases = [
            ("/v1/poll", {"timeout": "61"}, {}, "timeout"),
            ("/v1/poll", {"timeout": "-1"}, {}, "timeout"),
            ("/v1/poll", {"timeout": "nan"}, {}, "timeout"),
            ("/v1/poll", {"timeout": "soon"}, {}, "timeout"),
            ("/v1/poll", {"after": "not-an-id"}, {}, "after"),
            ("/v1/poll", {"limit": "0"}, {}, "limit"),
            ("/v1/poll", {"since": "x"}, {}, "since"),
            ("/v1/sse", {"last_event_id": "nope"}, {}, "last_event_id"),  # the field the id came in
            ("/v1/sse", {}, {"Last-Event-ID": "nope"}, "Last-Event-ID"),
            ("/v1/sse", {"after": "x"}, {}, "after"),
        ]
        for path, params, headers, field in cases:
            response = await browser.get(path, params=params, headers={**auth, **headers})
            assert response.status_code == 400, (path, params, response.status_code)
            assert response.json()["errors"][0]["field"] == field, (path, params, response.json())
        assert herald.registry.session_count() == 0


async def test_sse_sends_heartbeats_and_resumes_from_the_query_parameter(tmp_path):
    async with running_node(tmp_path, heartbeat_s=0.1) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        ids = [await send_web(client, "u1", f"n{i}") for i in range(3)]
        await wait_unread(client, "u1", 3)
        async with browser.stream("GET", "/v1/sse", params={"token": token, "last_event_id": ids[0]}) as response:
            assert response.headers["cache-control"] == "no-cache"
            stream = SSE(response)
            assert [e.id for e in await stream.until_synced()] == ids[1:]
            with trio.move_on_after(0.45):  # idle: no event, a comment line every heartbeat_s
                raise AssertionError(f"no event expected while idle: {await stream.next_event()}")
            assert len(stream.comments) >= 3 and set(stream.comments) == {"heartbeat"}


async def test_streams_and_polls_end_when_the_node_drains(tmp_path):
    async with running_node(tmp_path, shutdown_grace_s=10) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        polled: dict = {}

        async def waiting_poll() -> None:
            polled.update(await poll(browser, token, timeout=60))

        async with open_sse(browser, token) as sse:
            assert await sse.until_synced() == []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting_poll)
                with trio.fail_after(5):
                    while herald.registry.session_count() < 2:
                        await trio.sleep(0.01)
                start = trio.current_time()
                herald.system.request_shutdown()
                with trio.fail_after(5):  # not after the poll's 60 s, nor the 10 s grace
                    event = await sse.next_event()
                    assert event.event == "error" and "shutting down" in event.data["detail"]
                    try:
                        await sse.next_event()
                        raise AssertionError("the stream should have ended")
                    except EOFError:
                        pass
            assert polled == {"items": [], "last_id": None}
            assert trio.current_time() - start < 5


async def test_a_websocket_holds_live_frames_until_the_clients_first_frame(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        token = await token_for(client, "u1")
        async with open_ws(herald.url, token) as ws:
            with trio.fail_after(5):
                while herald.registry.session_count() < 1:
                    await trio.sleep(0.01)
            nid = await send_web(client, "u1")
            with trio.fail_after(5):  # pushed to the session (sent), held until the client speaks
                while (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["web"]["status"] != "sent":
                    await trio.sleep(0.02)
            with trio.move_on_after(0.3):
                raise AssertionError(f"nothing should arrive before the first frame: {await ws.get_message()}")
            await ws.send_message(json.dumps({"type": "ping"}))
            with trio.fail_after(5):
                assert (await receive_json(ws))["id"] == nid
                assert await receive_json(ws) == {"type": "pong"}
