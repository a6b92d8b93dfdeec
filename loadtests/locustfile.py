"""A locust suite for Herald's REST API: post notifications, read their status and a user's history.

Locust monkey-patches its process with gevent, so it must never run inside Herald's
virtualenv, inside pytest's process or beside the server: install it in a throwaway
venv and point it at a running `herald serve`. This file imports nothing of Herald's.

    # a server (any terminal):
    .venv/bin/herald serve --port 8080 --data-dir locust-data
    export HERALD_API_KEY=$(cat locust-data/api-key)

    # locust, from its own venv:
    python3 -m venv ../locust-venv && ../locust-venv/bin/pip install locust
    ../locust-venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless -u 50 -r 10 -t 30s

    # one locust process tops out near 2k req/s here (FastHttpUser); to push harder:
    ../locust-venv/bin/locust -f loadtests/locustfile.py --host ... --headless -u 200 -r 50 -t 60s --processes 2

Environment:
    HERALD_API_KEY       the server's API key (required; `herald serve` writes it to <data-dir>/api-key)
    HERALD_USERS         how many distinct user ids to spread notifications over (default 1000)
    HERALD_WAIT_MAX_S    each simulated client waits uniform [0, this] s between requests (default 0.1;
                         0 makes it closed-loop, as fast as the server answers)

What each simulated client does (weights in brackets):
    [6] POST /v1/notifications, web channel only                      expects 202
    [2] POST /v1/notifications, all four channels with `to` addresses  expects 202
    [2] GET  /v1/notifications/{id} of one it posted                   expects 200 (404 only while the
                                                                       record is younger than 2 s: the
                                                                       status is written just after the 202)
    [1] GET  /v1/users/{user}/notifications?limit=20                   expects 200 and an `items` list

Requests are grouped by route template in locust's table ("/v1/notifications/[id]"), and a
503 (ingress saturated, or shutting down) counts as a failure, so the failure ratio is the
share of notifications refused.
"""

from __future__ import annotations

import os
import random
import time
from collections import deque
from typing import Any

from locust import FastHttpUser, events, task
from locust.exception import StopUser

API_KEY = os.environ.get("HERALD_API_KEY", "")
USERS = int(os.environ.get("HERALD_USERS", "1000"))
WAIT_MAX_S = float(os.environ.get("HERALD_WAIT_MAX_S", "0.1"))
STATUS_GRACE_S = 2.0


@events.test_start.add_listener
def _check_settings(environment: Any, **_: Any) -> None:
    if not API_KEY:
        raise SystemExit("locustfile: set HERALD_API_KEY (the server writes it to <data-dir>/api-key)")
    host = environment.host or ""
    if not host.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        print(f"locustfile: note: --host {host!r} is not loopback; make sure you mean to load it")


def web_only(user_id: str, n: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "channels": ["web"],
        "content": {"web": {"title": f"Hello {n}", "body": "You have a new message", "url": "https://example.org/inbox"}},
    }


def all_channels(user_id: str, n: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "channels": ["email", "sms", "push", "web"],
        "content": {
            "email": {
                "subject": f"Your code {n}",
                "text": f"Code {n % 10000:04d}",
                "html": f"<p>Code <b>{n % 10000:04d}</b></p>",
            },
            "sms": {"text": f"Code {n % 10000:04d}"},
            "push": {"title": "Code", "body": f"{n % 10000:04d}", "data": {"kind": "otp"}},
            "web": {"title": "Code", "body": f"{n % 10000:04d}", "url": "https://example.org/codes"},
        },
        "to": {"email": f"{user_id}@example.org", "phone": "+15555550100", "device_token": "tok"},
        "priority": "high",
    }


class HeraldUser(FastHttpUser):
    """One API client: posts notifications and reads back what it posted."""

    def wait_time(self) -> float:
        return random.uniform(0, WAIT_MAX_S) if WAIT_MAX_S > 0 else 0.0

    def on_start(self) -> None:
        if not API_KEY:
            raise StopUser()
        self.headers = {"Authorization": f"Bearer {API_KEY}"}
        self.posted: deque[tuple[str, float]] = deque(maxlen=200)  # (notification id, when accepted)
        self.count = 0

    def _user(self) -> str:
        return f"load-{random.randrange(USERS)}"

    def _post(self, body: dict[str, Any], name: str) -> None:
        with self.client.post("/v1/notifications", json=body, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code != 202:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                nid = response.json()["notification_id"]
            except (ValueError, KeyError, TypeError):
                response.failure("202 without a notification_id")
                return
            self.posted.append((nid, time.monotonic()))
            response.success()

    @task(6)
    def post_web(self) -> None:
        self.count += 1
        self._post(web_only(self._user(), self.count), "POST /v1/notifications [web]")

    @task(2)
    def post_all_channels(self) -> None:
        self.count += 1
        self._post(all_channels(self._user(), self.count), "POST /v1/notifications [all channels]")

    @task(2)
    def read_status(self) -> None:
        if not self.posted:
            return
        nid, accepted_at = random.choice(self.posted)
        with self.client.get(
            f"/v1/notifications/{nid}", headers=self.headers, name="GET /v1/notifications/[id]", catch_response=True
        ) as response:
            if response.status_code == 200:
                response.success()
            elif response.status_code == 404 and time.monotonic() - accepted_at < STATUS_GRACE_S:
                response.success()  # accepted, status not written yet
            else:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")

    @task(1)
    def read_history(self) -> None:
        path = f"/v1/users/{self._user()}/notifications?limit=20"
        with self.client.get(
            path, headers=self.headers, name="GET /v1/users/[user]/notifications", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {(response.text or '')[:200]}")
                return
            try:
                items = response.json()["items"]
            except (ValueError, KeyError, TypeError):
                response.failure("history without items")
                return
            if not isinstance(items, list):
                response.failure("items is not a list")
            else:
                response.success()
