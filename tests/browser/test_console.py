"""The operator console at /console in headless Chromium: a breaker opening, a DLQ replay, the key kept out of URLs."""

from __future__ import annotations

import json
from typing import Any

from tests.browser.conftest import ADMIN_KEY, Node, screenshot, wait_for


def open_console(context: Any, node: Node, live: bool = True) -> Any:
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.urls = urls
    page.goto(node.url + "/console")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#login button[type=submit]")
    if live:
        page.wait_for_selector("#status[data-state=live]")
    return page


def send_sms(node: Node, user: str, n: int) -> list[str]:
    body = {"user_id": user, "channels": ["sms"], "content": {"sms": {"text": "Code 1234"}}, "to": {"phone": "+15555550100"}}
    with node.client() as client:
        answers = [client.post("/v1/notifications", json=body) for _ in range(n)]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    return [str(a.json()["notification_id"]) for a in answers]


def sms_status(node: Node, nid: str) -> str:
    with node.client() as client:
        return str(client.get(f"/v1/notifications/{nid}").json()["channels"]["sms"]["status"])


def test_the_console_shows_the_breaker_opening_then_replays_the_dead_letters(node: Node, context: Any) -> None:
    page = open_console(context, node)
    page.wait_for_selector("#providers tr[data-channel=sms] .state[data-state=closed]")
    with node.client() as client:
        assert client.put("/v1/admin/sandbox/faults/sms", json={"error_rate": 1.0}).status_code == 200
    try:
        ids = send_sms(node, "console-sms", 3)
        page.wait_for_selector("#providers tr[data-channel=sms] .state[data-state=open]")
        page.wait_for_selector("#transitions li[data-channel=sms][data-now=open]")
        screenshot(page, "console-breaker-open")
        # every attempt failed (one attempt per delivery here): all three are dead letters
        wait_for(lambda: all(sms_status(node, nid) == "dead_lettered" for nid in ids), 20, "three dead letters")
    finally:
        with node.client() as client:
            assert client.delete("/v1/admin/sandbox/faults/sms").status_code == 200
    page.wait_for_selector("#dlq-counts tr[data-channel=sms]")
    page.select_option("#dlq-channel", "sms")
    page.click("#dlq-filter button[type=submit]")
    for nid in ids:
        page.wait_for_selector(f"#dlq td:text-is('{nid}')")
    screenshot(page, "console-dlq")
    page.click("#dlq-replay")
    page.wait_for_selector("#dlq-job[data-state=done]")
    assert "3 replayed" in page.inner_text("#dlq-job")
    # the replayed deliveries go out once the breaker lets them (half-open after 3 s, then closed)
    wait_for(lambda: all(sms_status(node, nid) == "delivered" for nid in ids), 20, "the replayed entries delivered")
    page.wait_for_selector("#providers tr[data-channel=sms] .state[data-state=closed]")
    page.click("#dlq-filter button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 0")
    # the latest notifications, with a timeline: the first SMS from dead letter to delivered
    page.click(f"#recent tr[data-id='{ids[0]}']")
    page.wait_for_selector("#timeline [data-channel=sms] li:has-text('delivered')")
    timeline = page.inner_text("#timeline")
    assert "dead_lettered" in timeline and "delivered" in timeline, timeline
    screenshot(page, "console-replayed")
    assert not any(ADMIN_KEY in url for url in page.urls), page.urls


def test_the_console_counts_throughput_and_sessions(node: Node, context: Any) -> None:
    inbox = context.new_page()  # a subscriber session over WebSocket, for the console to count
    inbox.goto(node.url + "/demo/inbox")
    inbox.fill("#api-key", ADMIN_KEY)
    inbox.fill("#user-id", "console-web")
    inbox.click("#login button[type=submit]")
    inbox.wait_for_selector("#status[data-transport=websocket][data-state=live]")
    page = open_console(context, node)
    page.wait_for_function("() => Number(document.querySelector('#sessions tr[data-transport=websocket] td:nth-child(2)')"
                           ".textContent) >= 1")
    with node.client() as client:
        for n in range(5):
            body = {"user_id": "console-web", "channels": ["web"], "content": {"web": {"title": f"n{n}"}}}
            assert client.post("/v1/notifications", json=body).status_code == 202
    page.wait_for_function("() => parseFloat(document.querySelector('#throughput tr[data-channel=web] td:nth-child(2)')"
                           ".textContent) > 0")
    page.wait_for_selector("#recent tbody tr")
    screenshot(page, "console-throughput")


HOSTILE = "<img src=x onerror=\"window.pwned=1\"><script>window.pwned=2</script>"


def test_the_console_shows_what_the_server_sends_as_text_never_markup(node: Node, context: Any) -> None:
    """Whatever the feed, the DLQ or a timeline holds (a provider's error, a detail) is shown as text: the API is
    replaced here by answers full of markup, as a hostile provider's error text or a compromised store could give."""
    snap = {
        "at": "2026-11-30T18:00:00.000Z", "role": "all", "accepted": {"sms": 1}, "deliveries": {"sms": {"delivered": 1}},
        "circuits": [{"channel": "sms", "state": HOSTILE, "consecutive_failures": 0, "opened": 0, "rejected": 0, "calls": 0,
                      "suppressed_duplicates": 0, "tokens": 1.0, "bucket_capacity": 1.0, "refill_per_s": 1.0, "in_flight": 0,
                      "max_in_flight": 1, "retry_at": None, "transitions": {}}],
        "transitions": [{"channel": "sms", "was": HOSTILE, "now": "open", "at": "2026-11-30T18:00:00.000Z"}],
        "lag": [{"group": "g", "topic": HOSTILE, "partition": 0, "lag": 1}], "dlq": {"sms": 1}, "sessions": {HOSTILE: 1},
        "recent": [{"id": "01M8PVPCA8E0T8Z848HNXR1VDF", "user_id": HOSTILE, "channels": ["sms"], "at": "2026-11-30T18:00:00.000Z"}],
    }
    dead = {"items": [{"id": 1, "channel": "sms", "notification_id": "01M8PVPCA8E0T8Z848HNXR1VDF", "user_id": HOSTILE, "error": HOSTILE,
                       "attempts": 1, "created_at": "2026-11-30T18:00:00.000Z", "dead_lettered_at": "2026-11-30T18:00:00.000Z",
                       "history": [], "replays": 0}], "next_cursor": None, "total": 1}
    status = {"notification_id": "01M8PVPCA8E0T8Z848HNXR1VDF", "user_id": HOSTILE, "final": True, "channels": {"sms": {
        "status": "failed", "updated_at": "2026-11-30T18:00:00.000Z", "final": True,
        "attempts": [{"status": "failed", "at": "2026-11-30T18:00:00.000Z", "detail": HOSTILE}]}}}
    feed = "event: snapshot\ndata: " + json.dumps(snap) + "\n\n"
    context.route("**/v1/admin/stream", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=feed))
    context.route("**/v1/admin/dlq*", lambda route: route.fulfill(status=200, json=dead))
    context.route("**/v1/notifications/*", lambda route: route.fulfill(status=200, json=status))
    page = open_console(context, node, live=False)  # the feed here is one snapshot, then it ends (the page reconnects)
    page.evaluate("() => { window.pwned = 0; }")
    page.wait_for_selector("#recent tbody tr")
    page.click("#recent tbody tr")
    page.wait_for_selector("#timeline li")
    page.wait_for_selector("#dlq tbody tr")
    for where in ("#recent", "#dlq", "#timeline", "#providers", "#transitions", "#lag", "#sessions"):
        assert HOSTILE in page.inner_text(where), where
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("() => window.pwned") == 0
    screenshot(page, "console-escaped")


def test_the_console_forgets_a_wrong_key_and_keeps_a_key_out_of_urls(node: Node, context: Any) -> None:
    page = open_console(context, node)
    assert not any(ADMIN_KEY in url for url in page.urls) and ADMIN_KEY not in page.url
    page.click("#logout")
    assert page.evaluate("() => sessionStorage.getItem('herald.console.key')") is None
    page.fill("#admin-key", "not-a-key")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login:not([hidden]) #login-error:not(:empty)")
    assert page.evaluate("() => sessionStorage.getItem('herald.console.key')") is None


def test_the_console_filters_the_dead_letters_by_notification_and_discards_them(node: Node, context: Any) -> None:
    body = {"user_id": "console-discard", "channels": ["email"], "content": {"email": {"subject": "s", "text": "t"}},
            "to": {"email": "discard@example.org"}}
    with node.client() as client:
        assert client.put("/v1/admin/sandbox/faults/email", json={"error_rate": 1.0}).status_code == 200
        try:
            ids = [str(client.post("/v1/notifications", json=body).json()["notification_id"]) for _ in range(2)]
            wait_for(lambda: all(client.get(f"/v1/notifications/{nid}").json()["channels"]["email"]["status"] == "dead_lettered"
                                 for nid in ids), 20, "two dead letters")
        finally:
            assert client.delete("/v1/admin/sandbox/faults/email").status_code == 200
    page = open_console(context, node)
    page.on("dialog", lambda dialog: dialog.accept())  # "Discard ...? This cannot be undone."
    page.fill("#dlq-nid", ids[0])
    page.click("#dlq-filter button[type=submit]")
    page.wait_for_selector(f"#dlq td:text-is('{ids[0]}')")
    assert page.locator("#dlq tbody tr").count() == 1
    page.click("#dlq-discard")
    page.wait_for_selector("#dlq-job[data-state=done]")
    assert "1 discarded" in page.inner_text("#dlq-job")
    page.wait_for_function("() => document.querySelectorAll('#dlq tbody tr').length === 0")
    with node.client() as client:
        assert client.get("/v1/admin/dlq", params={"notification_id": ids[0]}).json()["items"] == []
        left = client.get("/v1/admin/dlq", params={"notification_id": ids[1]}).json()["items"]
        assert [e["notification_id"] for e in left] == [ids[1]]  # the other notification's entry stays
        assert client.request("DELETE", "/v1/admin/dlq", json={"notification_id": ids[1]}).status_code == 202
