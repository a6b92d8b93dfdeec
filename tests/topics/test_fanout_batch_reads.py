"""The fan-out reads a page's profiles at once (UserStore.users), and each subscriber's preferences still apply."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.helpers import http, running_node
from tests.topics.test_topic_send import topic_status

USERS = [f"m{i:02d}" for i in range(40)]
WEB_OFF = set(USERS[::3])  # a user who turned web off gets nothing on web


def count_calls(obj: Any, names: tuple[str, ...], calls: Counter[str]) -> None:
    for name in names:
        method = getattr(obj, name)

        async def counted(*args: Any, _name: str = name, _method: Any = method) -> Any:
            calls[_name] += 1
            return await _method(*args)

        setattr(obj, name, counted)


async def test_a_fan_out_reads_each_pages_profiles_in_one_store_read_and_skips_web_off(tmp_path) -> None:
    async with running_node(tmp_path, fanout_batch=16) as herald, http(herald) as client:
        for user in WEB_OFF:
            assert (await client.put(f"/v1/users/{user}/preferences", json={"channels": {"web": False}})).status_code == 200
        assert (await client.put("/v1/topics/news/subscribers", json={"user_ids": USERS})).status_code in (200, 204)
        assert herald.fanout is not None and herald.fanout.planner.users is not None
        calls: Counter[str] = Counter()
        count_calls(herald.fanout.planner.users.store, ("users", "devices", "get_preferences"), calls)
        send = {"topic": "news", "channels": ["web"], "content": {"web": {"title": "Hi", "body": "b"}}}
        response = await client.post("/v1/notifications", json=send)
        assert response.status_code == 202, response.text
        status = await topic_status(client, response.json()["notification_id"])
        assert status["expanded"] == len(USERS)
        assert status["channels"] == {"web": {"queued": len(USERS) - len(WEB_OFF), "held": 0, "failed": len(WEB_OFF)}}, status
        # three pages of 16 (the last short): one batch read each, no read per subscriber
        assert calls["users"] == 3 and calls["devices"] == 0, calls
        for user in USERS:
            body = (await client.get(f"/v1/users/{user}/notifications")).json()
            [item] = body["items"]
            assert item["channel"] == "web" and (item["status"] == "failed") == (user in WEB_OFF), (user, item)
            if user in WEB_OFF:
                assert "web" in item["detail"], item
