"""The check: a topic send's fan-out killed (kill -9 of `herald serve`) mid-way and resumed: every subscriber gets exactly one delivery.

20,000 subscribers here (the suite stays short); loadtests/topic_fanout.py runs 100,000
(docs/performance.md, "Topic fan-out"). Counted at the provider: the call log, per
subscriber's notification id (tests/topics/fanout_crash.py). The sandbox SMS provider fails
every call until the kill, so that no delivery is in flight when it comes (a call the kill
cuts off may be made again: the crash window of every delivery, checked by
tests/e2e/test_kill_loop.py): what is checked is the fan-out's own promise, no subscriber
skipped and none expanded into a second delivery.
"""

from __future__ import annotations

import pytest

from tests.topics.fanout_crash import run_crash

pytestmark = pytest.mark.slow

SUBSCRIBERS = 20_000


async def test_a_fan_out_killed_mid_way_resumes_with_every_subscriber_delivered_once(tmp_path) -> None:
    figures = await run_crash(tmp_path / "data", SUBSCRIBERS, kill_at=0.4, timeout_s=400, provider_down=True)
    print(figures.line())
    assert 0 < figures.expanded_at_kill < SUBSCRIBERS, "the kill came mid-way through the fan-out"
    assert figures.status["state"] == "done" and figures.status["expanded"] == SUBSCRIBERS, figures.status
    assert figures.status["channels"]["sms"] == {"queued": SUBSCRIBERS, "held": 0, "failed": 0}, figures.status
    assert figures.missing == 0, f"{figures.missing} subscribers got nothing"
    assert figures.delivered == SUBSCRIBERS
    assert figures.strangers == 0
    assert figures.duplicates == 0, f"{figures.duplicates} provider calls after a sent answer"
