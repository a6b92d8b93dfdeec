"""The inbox API over HTTP: pagination, unread count, read, read-all, archive, the web
channel's `read` status, and read-state frames pushed to the user's other open sessions."""

from __future__ import annotations

import trio

from tests.helpers import http, receive_json, running_node, token_for
from tests.realtime.streams import open_sse, open_ws, send_web, subscriber_client, wait_unread, ws_sync


async def test_list_count_read_archive_and_read_all(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        ids = [await send_web(client, "u1", f"n{i}") for i in range(5)]
        await wait_unread(client, "u1", 5)

        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/users/u1/inbox", params=params)).json()
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids))
        first = (await client.get("/v1/users/u1/inbox", params={"limit": 1})).json()["items"][0]
        assert first == {
            "id": ids[-1], "created_at": first["created_at"], "title": "n4", "body": "b", "url": None, "data": {},
            "read_at": None, "archived_at": None,
        }

        read = await client.post(f"/v1/users/u1/inbox/{ids[1]}/read")
        assert read.status_code == 200 and read.json()["id"] == ids[1] and read.json()["read_at"] is not None
        again = await client.post(f"/v1/users/u1/inbox/{ids[1]}/read")
        assert again.json()["read_at"] == read.json()["read_at"]  # idempotent: the first read time stays
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 4}
        unread = (await client.get("/v1/users/u1/inbox", params={"unread": "true"})).json()["items"]
        assert [item["id"] for item in unread] == [ids[4], ids[3], ids[2], ids[0]]
        status = (await client.get(f"/v1/notifications/{ids[1]}")).json()["channels"]["web"]
        assert status["status"] == "read" and status["attempts"][-1]["status"] == "read"

        archived = await client.post(f"/v1/users/u1/inbox/{ids[0]}/archive")
        assert archived.status_code == 200 and archived.json()["archived_at"] is not None
        listed = [item["id"] for item in (await client.get("/v1/users/u1/inbox")).json()["items"]]
        assert listed == [ids[4], ids[3], ids[2], ids[1]]
        only_archived = (await client.get("/v1/users/u1/inbox", params={"archived": "true"})).json()["items"]
        assert [item["id"] for item in only_archived] == [ids[0]]
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 3}

        # read_all counts what unread_count counts: ids[0] is archived (unread, but out of the count), 1 was read
        upto = await client.post("/v1/users/u1/inbox/read_all", json={"through": ids[3]})
        assert upto.status_code == 200 and upto.json()["count"] == 2 and upto.json()["through"] == ids[3]  # 2, 3
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 1}
        rest = await client.post("/v1/users/u1/inbox/read_all")
        assert rest.json()["count"] == 1 and rest.json()["through"] == ids[4]
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 0}
        assert (await client.post("/v1/users/u1/inbox/read_all")).json()["count"] == 0
        for nid in ids[1:]:
            assert (await client.get(f"/v1/notifications/{nid}")).json()["channels"]["web"]["status"] == "read"
        assert (await client.get(f"/v1/notifications/{ids[0]}")).json()["channels"]["web"]["status"] == "sent"
        [archived_item] = (await client.get("/v1/users/u1/inbox", params={"archived": "true"})).json()["items"]
        assert archived_item["id"] == ids[0] and archived_item["read_at"] is None


async def test_bad_input_names_the_field(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client:
        nid = await send_web(client, "u1")
        await wait_unread(client, "u1", 1)
        cases = {
            ("GET", "/v1/users/u1/inbox?cursor=!!"): (400, "cursor"),
            ("GET", "/v1/users/u1/inbox?limit=0"): (400, "limit"),
            ("GET", "/v1/users/u1/inbox?unread=maybe"): (400, "unread"),
            ("GET", "/v1/users/u1/inbox?colour=red"): (400, "colour"),
            ("GET", "/v1/users/bad%20user/inbox"): (400, "user_id"),
            ("POST", "/v1/users/u1/inbox/not-an-id/read"): (400, "notification_id"),
            ("POST", "/v1/users/u1/inbox/not-an-id/archive"): (400, "notification_id"),
            ("POST", "/v1/users/u2/inbox/" + nid + "/read"): (404, None),  # u1's notification is not in u2's inbox
            ("POST", "/v1/users/u1/inbox/01J0000000000000000000000A/read"): (404, None),
        }
        for (method, path), (status, field) in cases.items():
            response = await client.request(method, path)
            assert response.status_code == status, (path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            if field is not None:
                assert response.json()["errors"][0]["field"] == field, (path, response.json())
        bad_through = await client.post("/v1/users/u1/inbox/read_all", json={"through": "nope"})
        assert bad_through.status_code == 400 and bad_through.json()["errors"][0]["field"] == "through"
        unknown_field = await client.post("/v1/users/u1/inbox/read_all", json={"before": nid})
        assert unknown_field.status_code == 400 and "before" in unknown_field.text
        assert (await client.get("/v1/users/u1/inbox/unread_count")).json() == {"unread": 1}


async def test_read_state_is_pushed_to_the_users_other_sessions(tmp_path):
    async with running_node(tmp_path) as herald, http(herald) as client, subscriber_client(herald.url) as browser:
        token = await token_for(client, "u1")
        other_token = await token_for(client, "u2")
        async with open_ws(herald.url, token) as ws, open_sse(browser, token) as sse, open_ws(herald.url, other_token) as other:
            assert await ws_sync(ws) == [] and await sse.until_synced() == [] and await ws_sync(other) == []
            ids = [await send_web(client, "u1", f"n{i}") for i in range(3)]
            with trio.fail_after(10):
                assert [(await receive_json(ws))["id"] for _ in ids] == ids
                assert [(await sse.next_event()).id for _ in ids] == ids
            await wait_unread(client, "u1", 3)

            # a browser tab marks one read with its token: every session of u1 hears of it
            read = await browser.post(f"/v1/users/u1/inbox/{ids[0]}/read", headers={"Authorization": f"Bearer {token}"})
            assert read.status_code == 200, read.text
            with trio.fail_after(5):
                frame = await receive_json(ws)
                event = await sse.next_event()
            assert frame == {"type": "read", "ids": [ids[0]], "read_at": read.json()["read_at"], "v": 1}
            assert event.event == "read" and event.id is None and event.data == frame

            archived = await client.post(f"/v1/users/u1/inbox/{ids[1]}/archive")
            read_all = await client.post("/v1/users/u1/inbox/read_all")
            with trio.fail_after(5):
                assert await receive_json(ws) == {"type": "archived", "ids": [ids[1]], "archived_at": archived.json()["archived_at"], "v": 1}
                assert await receive_json(ws) == {"type": "read_all", "through": ids[2], "count": 1, "read_at": read_all.json()["read_at"], "v": 1}
                assert [(await sse.next_event()).event for _ in range(2)] == ["archived", "read_all"]

            # nothing of it reached u2: the next frame u2 gets is its pong
            await other.send_message('{"type": "ping"}')
            with trio.fail_after(5):
                assert await receive_json(other) == {"type": "pong"}
