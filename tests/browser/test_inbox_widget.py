"""The inbox widget at /demo/inbox in headless Chromium: live delivery, the bell, reads across tabs, the SSE fallback."""

from __future__ import annotations

import time
from typing import Any

from tests.browser.conftest import ADMIN_KEY, Node, screenshot, wait_for

# Makes every WebSocket fail before it opens, as a proxy that blocks them would.
BLOCK_WEBSOCKET = """
window.WebSocket = class BlockedWebSocket {
  static OPEN = 1;
  constructor() { this.readyState = 3; setTimeout(() => { if (this.onerror) this.onerror(new Event('error'));
    if (this.onclose) this.onclose({ code: 1006, reason: '' }); }, 10); }
  send() { throw new Error('blocked'); }
  close() {}
};
"""


def post_web(node: Node, user: str, title: str, body: str = "b", url: str | None = None) -> str:
    web: dict[str, Any] = {"title": title, "body": body}
    if url is not None:
        web["url"] = url
    with node.client() as client:
        response = client.post("/v1/notifications", json={"user_id": user, "channels": ["web"], "content": {"web": web}})
    assert response.status_code == 202, response.text
    return str(response.json()["notification_id"])


def open_inbox(context: Any, node: Node, user: str) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(node.url + "/demo/inbox")
    page.fill("#api-key", ADMIN_KEY)
    page.fill("#user-id", user)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#status[data-state=live]")
    return page


def item(page: Any, nid: str) -> Any:
    return page.locator(f"li.item[data-id='{nid}']")


def test_a_notification_appears_live_and_the_bell_counts_it(node: Node, context: Any) -> None:
    page = open_inbox(context, node, "bw-live")
    assert page.get_attribute("#status", "data-transport") == "websocket"
    assert page.text_content("#badge") == "0"
    started = time.monotonic()
    nid = post_web(node, "bw-live", "Your order shipped", "It is on its way")
    item(page, nid).wait_for(timeout=1000)  # within a second of the API's 202
    elapsed = time.monotonic() - started
    assert item(page, nid).get_attribute("data-read") == "false"
    assert "Your order shipped" in item(page, nid).inner_text()
    page.wait_for_function("() => document.getElementById('badge').textContent === '1'")
    second = post_web(node, "bw-live", "Second")
    item(page, second).wait_for(timeout=1000)
    page.wait_for_function("() => document.getElementById('badge').textContent === '2'")
    screenshot(page, "inbox-live")
    item(page, nid).locator("button.read").click()
    page.wait_for_function("() => document.getElementById('badge').textContent === '1'")
    assert item(page, nid).get_attribute("data-read") == "true"
    item(page, second).locator("button.archive").click()
    item(page, second).wait_for(state="detached")
    page.wait_for_function("() => document.getElementById('badge').textContent === '0'")
    with node.client() as client:  # the server agrees
        assert client.get("/v1/users/bw-live/inbox/unread_count").json() == {"unread": 0}
    assert page.errors == [], page.errors
    print(f"shown {elapsed * 1000:.0f} ms after the POST")


def test_reading_in_one_tab_updates_the_other(node: Node, context: Any) -> None:
    first, second = open_inbox(context, node, "bw-tabs"), open_inbox(context, node, "bw-tabs")
    ids = [post_web(node, "bw-tabs", f"Tab news {n}") for n in range(3)]
    for page in (first, second):
        for nid in ids:
            item(page, nid).wait_for()
        page.wait_for_function("() => document.getElementById('badge').textContent === '3'")
    first.locator(f"li.item[data-id='{ids[0]}'] button.read").click()
    second.wait_for_function(f"() => document.querySelector(\"li.item[data-id='{ids[0]}']\").dataset.read === 'true'")
    second.wait_for_function("() => document.getElementById('badge').textContent === '2'")
    second.click("#read-all")
    first.wait_for_function("() => document.getElementById('badge').textContent === '0'")
    for nid in ids:
        assert item(first, nid).get_attribute("data-read") == "true"
    screenshot(first, "inbox-read-in-other-tab")


def test_with_the_websocket_blocked_the_widget_receives_over_sse(node: Node, context: Any) -> None:
    context.add_init_script(BLOCK_WEBSOCKET)
    page = open_inbox(context, node, "bw-sse")
    assert page.get_attribute("#status", "data-transport") == "sse"
    nid = post_web(node, "bw-sse", "Over SSE")
    item(page, nid).wait_for(timeout=1000)
    page.wait_for_function("() => document.getElementById('badge').textContent === '1'")
    screenshot(page, "inbox-sse-fallback")


def test_with_websocket_and_sse_blocked_it_long_polls(node: Node, context: Any) -> None:
    context.add_init_script(BLOCK_WEBSOCKET)
    context.route("**/v1/sse*", lambda route: route.abort())
    page = open_inbox(context, node, "bw-poll")
    assert page.get_attribute("#status", "data-transport") == "poll"
    nid = post_web(node, "bw-poll", "Over long-poll")
    item(page, nid).wait_for()
    page.wait_for_function("() => document.getElementById('badge').textContent === '1'")


def test_after_a_network_drop_it_resumes_with_no_gap(node: Node, context: Any) -> None:
    page = context.new_page()
    sockets: list[Any] = []
    page.on("websocket", lambda socket: sockets.append(socket))
    page.goto(node.url + "/demo/inbox")
    page.fill("#api-key", ADMIN_KEY)
    page.fill("#user-id", "bw-drop")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#status[data-state=live]")
    before = post_web(node, "bw-drop", "Before the drop")
    item(page, before).wait_for()
    # the network drops: the widget closes its socket (a new one is opened once back online), nothing reaches the page
    context.set_offline(True)
    page.wait_for_selector("#status[data-state=offline]")
    missed = [post_web(node, "bw-drop", f"While offline {n}") for n in range(2)]
    context.set_offline(False)
    for nid in missed:
        item(page, nid).wait_for()
    page.wait_for_selector("#status[data-transport=websocket][data-state=live]")
    page.wait_for_function("() => document.getElementById('badge').textContent === '3'")
    # it reconciled the list over HTTP, then resumed the stream from the newest notification it held: no gap either way
    assert len(sockets) >= 2 and sockets[-1].url.rsplit("last_id=", 1)[-1] in (before, *missed), sockets[-1].url


def test_user_content_is_shown_as_text_never_run(node: Node, context: Any) -> None:
    page = open_inbox(context, node, "bw-xss")
    page.evaluate("() => { window.__pwned = 0; }")
    title = "<img src=x onerror=\"window.__pwned=1\"><script>window.__pwned=2</script>"
    nid = post_web(node, "bw-xss", title, "<b>bold?</b>", url="javascript:window.__pwned=3")
    item(page, nid).wait_for()
    shown = item(page, nid)
    assert shown.locator(".title").inner_text() == title
    assert shown.locator(".body").inner_text() == "<b>bold?</b>"
    assert shown.locator("img, script, b, a").count() == 0  # no element made of the text; a javascript: link is dropped
    assert page.evaluate("() => window.__pwned") == 0
    screenshot(page, "inbox-escaped")


def test_the_demo_token_reads_one_user_only(node: Node, context: Any) -> None:
    page = open_inbox(context, node, "bw-scope")
    token = page.evaluate("() => JSON.parse(sessionStorage.getItem('herald.inbox')).token")
    assert ADMIN_KEY not in page.evaluate("() => JSON.stringify(sessionStorage)")  # the API key is not kept
    with node.client(token) as client:
        assert client.get("/v1/users/bw-scope/inbox").status_code == 200
        assert client.get("/v1/users/someone-else/inbox").status_code == 403
        assert client.get("/v1/admin/dlq").status_code == 401


def wait_unread(node: Node, user: str, count: int) -> None:
    with node.client() as client:
        wait_for(lambda: client.get(f"/v1/users/{user}/inbox/unread_count").json()["unread"] == count, 5, f"{count} unread")


def test_an_emptied_inbox_stays_empty_when_the_widget_opens(node: Node, context: Any) -> None:
    """Archived notifications do not come back: with nothing to resume from, the widget asks for no replay."""
    nid = post_web(node, "bw-archived", "Old news")
    with node.client() as client:
        wait_for(lambda: client.get("/v1/users/bw-archived/inbox").json()["items"], 5, "the notification in the inbox")
        assert client.post(f"/v1/users/bw-archived/inbox/{nid}/archive").status_code == 200
    page = open_inbox(context, node, "bw-archived")
    fresh = post_web(node, "bw-archived", "New news")
    item(page, fresh).wait_for()
    page.wait_for_function("() => document.getElementById('badge').textContent === '1'")  # the count follows the item
    assert item(page, nid).count() == 0 and page.text_content("#badge") == "1"
