"""The event loop is never held by rendering (issue 7, item 10).

A pathological template nests sections three deep over a list in 48 KB of data, in six
fields. Each field alone stays under the budget; together they go over it: the budget
is per request (a send or a preview), not per field, so the request is refused (422)
after bounded work. Previews always render in a worker thread, and a send whose
estimate is large does too, so /healthz answers while five previews run at once.

The /healthz latency is a benchmark figure: printed here (run with -s), never asserted.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

import httpx
import msgspec
import pytest
import trio

import actors.services.template_service as template_service
from actors.domain.rendering import RENDER_BUDGET, Budget, RenderTooLarge, compile_template, parse, render_nodes, render_template
from protocol.channels import Channel
from protocol.template_schemas import TemplateSpec
from tests.helpers import http, running_node
from tests.process import herald_process

NEST = "{{#l}}{{#l}}{{#l}}{{/l}}{{/l}}{{/l}}"  # 55 items: 55 + 55² + 55³ iterations, no output
PATHOLOGICAL = {
    "locales": {
        "en": {
            "email": {"subject": "Reset " + NEST, "text": "t" + NEST, "html": "<p>h</p>" + NEST},
            "sms": {"text": "s" + NEST},
            "web": {"title": "w" + NEST, "body": NEST},
        },
    },
}
DATA = {"l": [{"note": f"{i:03d}" + "x" * 850} for i in range(55)]}  # 48 KB of JSON
SIMPLE = {"locales": {"en": {"sms": {"text": "Hi {{name}}"}}}}


def test_the_data_is_48_kb() -> None:
    assert 47_000 < len(msgspec.json.encode(DATA)) < 50_000


def test_the_budget_is_per_request_not_per_field() -> None:
    template = compile_template("p", 1, msgspec.convert(PATHOLOGICAL, TemplateSpec))
    one_field = parse(NEST)
    budget = Budget()
    render_nodes(one_field, DATA, budget)  # one field alone fits ...
    assert 0 < budget.spent < RENDER_BUDGET // 2
    result = render_template(template, [Channel.EMAIL, Channel.SMS, Channel.WEB], DATA)  # ... six of them do not
    assert isinstance(result, list) and len(result) == 1, result
    assert result[0].field.startswith("locales.en.") and "budget" in result[0].message
    # The same work spread over fewer channels fits.
    assert not isinstance(render_template(template, [Channel.SMS], DATA), list)
    # Work that writes nothing is charged too: many empty lookups in a loop stop at the budget.
    with pytest.raises(RenderTooLarge):
        render_nodes(parse("{{#l}}" + "{{nothing.here}}" * 5000 + "{{/l}}"), DATA, RENDER_BUDGET)


def test_a_list_index_past_any_list_is_missing_not_a_crash() -> None:
    assert render_nodes(parse("[{{l." + "9" * 5000 + "}}]"), {"l": [1]}) == "[]"


async def test_previews_and_long_sends_render_off_the_event_loop(tmp_path, monkeypatch) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    real = template_service.render_template

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(template_service, "render_template", recording)
    async with running_node(tmp_path) as herald, http(herald) as client:
        assert (await client.post("/v1/templates/pathological", json=PATHOLOGICAL)).status_code == 201
        assert (await client.post("/v1/templates/simple", json=SIMPLE)).status_code == 201
        answers: list[httpx.Response] = []
        latencies: list[float] = []
        done = trio.Event()

        async def preview() -> None:
            answers.append(await client.post("/v1/templates/pathological/render", json={"data": DATA}))

        async def healthz() -> None:
            while not done.is_set():
                start = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                latencies.append(time.perf_counter() - start)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(healthz)
            with trio.fail_after(60):
                async with trio.open_nursery() as previews:
                    for _ in range(5):
                        previews.start_soon(preview)
            done.set()
        assert [a.status_code for a in answers] == [422] * 5, [a.text for a in answers]
        assert all("budget" in a.json()["errors"][0]["message"] for a in answers)
        assert len(threads) == 5 and loop_thread not in threads  # every preview rendered in a worker thread
        report("in-process node", latencies)

        # A send from a template respects the same per-request budget, rendered in a thread too ...
        send = {"user_id": "u1", "channels": ["email", "sms", "web"], "template_id": "pathological", "data": DATA,
                "to": {"email": "u1@example.org", "phone": "+15555550100"}}
        refused = await client.post("/v1/notifications", json=send)
        assert refused.status_code == 422 and "budget" in refused.text, refused.text
        assert threads[-1] != loop_thread
        # ... while a simple one renders inline: no thread hop on the common path.
        before = herald.templates.rendered_in_thread
        simple = await client.post("/v1/notifications", json={"user_id": "u1", "channels": ["sms"], "template_id": "simple",
                                                                "data": {"name": "Ada"}, "to": {"phone": "+15555550100"}})
        assert simple.status_code == 202, simple.text
        assert threads[-1] == loop_thread and herald.templates.rendered_in_thread == before


async def test_healthz_answers_during_five_parallel_previews_on_a_node_process(tmp_path) -> None:
    """The figure: /healthz latency on a `herald serve` process while five previews of the template render."""
    async with herald_process(tmp_path / "data") as server:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=60) as client:
            assert (await client.post("/v1/templates/pathological", json=PATHOLOGICAL)).status_code == 201
            idle: list[float] = []
            for _ in range(50):
                start = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                idle.append(time.perf_counter() - start)
            answers: list[int] = []
            busy: list[float] = []
            done = trio.Event()

            async def preview() -> None:
                answers.append((await client.post("/v1/templates/pathological/render", json={"data": DATA})).status_code)

            async def healthz() -> None:
                while not done.is_set():
                    start = time.perf_counter()
                    assert (await client.get("/healthz")).status_code == 200
                    busy.append(time.perf_counter() - start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(healthz)
                with trio.fail_after(120):
                    for _round in range(4):  # long enough to sample the latency well
                        async with trio.open_nursery() as previews:
                            for _ in range(5):
                                previews.start_soon(preview)
                done.set()
            assert answers == [422] * 20  # over the per-request budget: refused, after bounded work
            report("node process, idle", idle)
            report("node process, 5 parallel previews", busy)


def report(what: str, latencies: list[float]) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"\n/healthz ({what}): n={len(ms)} p50={statistics.median(ms):.1f} ms p99={p99:.1f} ms max={ms[-1]:.1f} ms (goal: under 50 ms)")
