"""Sandbox faults (actors/clients/faults.py): the setting, the config file, and what it makes the node do.

Under MockClock (the autojump threshold at 30 ms, as in test_provider_faults.py: the
node's file and SQLite I/O runs in threads) a whole node with its real sandbox clients:
an SMS fault produces retries with backoff in the timeline, opens the breaker, dead-letters
the notification; cleared, a replay delivers it and the breaker closes. The outage window
ends by itself; a permanent fault fails the channel at once and leaves the breaker closed;
latency holds the (one-call-at-a-time) provider for exactly as long as it says.
"""

from __future__ import annotations

import pytest
import trio

from actors.clients.call_log import count_call_logs
from actors.clients.faults import ChannelFaults
from actors.config import ConfigError, load_config
from protocol.api import NotificationRequest
from protocol.channels import Channel
from protocol.content import Content, PushContent, Recipient, SmsContent
from protocol.faults import NO_FAULT, FaultSpec
from protocol.lifecycle import FINAL
from reactor.circuit_breaker import BreakerState
from reactor.ports import DlqFilter
from tests.faults.support import restarts
from tests.helpers import running_node

F, TIMEOUT_S, S = 5, 60.0, 3


@pytest.fixture
def clock(mock_clock):
    mock_clock.autojump_threshold = 0.03
    return mock_clock


def sms(user: str, text: str = "hi") -> NotificationRequest:
    return NotificationRequest(user_id=user, channels=[Channel.SMS], content=Content(sms=SmsContent(text)), to=Recipient(phone="+15555550100"))


def settings(**extra):
    limits = {"sms": {"capacity": 1000, "refill_per_s": 1000, "failure_threshold": F, "open_timeout_s": TIMEOUT_S, "success_threshold": S}}
    return {"limits": limits, "max_attempts": 5, "retry_initial_s": 0.5, "retry_max_s": 30, **extra}


async def final_status(herald, nid: str, channel: str, seconds: float = 3600) -> str:
    """The channel's status once final, polled once a simulated second (each poll costs the autojump threshold in real time)."""
    finals = {s.value for s in FINAL}
    with trio.fail_after(seconds):
        while True:
            status = {r.channel: r.status for r in await herald.logstore.statuses(nid)}.get(channel)
            if status in finals:
                return str(status)
            await trio.sleep(1)


def sms_lines(herald) -> list[str]:
    path = herald.config.data_dir / "sms.jsonl"
    return path.read_text().splitlines() if path.exists() else []


# -- the setting itself (pure)


def test_the_choice_of_failing_calls_is_seeded_and_the_outage_window_ends():
    half = FaultSpec(error_rate=0.5, seed=7)
    one, two = ChannelFaults(Channel.SMS, half, 0.0), ChannelFaults(Channel.SMS, half, 0.0)
    first = [one.decide(10.0) is not None for _ in range(400)]
    assert first == [two.decide(10.0) is not None for _ in range(400)]  # seeded: the same calls fail
    assert 150 < sum(first) < 250 and one.failed == sum(first) and one.calls == 400
    other_seed = ChannelFaults(Channel.SMS, FaultSpec(error_rate=0.5, seed=8), 0.0)
    assert [other_seed.decide(10.0) is not None for _ in range(400)] != first
    always, never = ChannelFaults(Channel.SMS, FaultSpec(error_rate=1.0), 0.0), ChannelFaults(Channel.SMS, NO_FAULT, 0.0)
    assert all(always.decide(t) for t in range(100)) and not any(never.decide(t) for t in range(100))
    outage = ChannelFaults(Channel.SMS, FaultSpec(fail_for_s=30, kind="permanent"), 100.0)
    assert outage.decide(100.0) and outage.decide(129.99) and outage.decide(130.0) is None and outage.decide(1000.0) is None
    assert "sandbox fault on sms (permanent): outage" in (outage.decide(110.0) or "")


def test_the_config_file_and_the_environment_set_faults_and_refuse_bad_ones_by_name(tmp_path):
    toml = tmp_path / "herald.toml"
    toml.write_text('[herald.faults.sms]\nerror_rate = 0.5\nkind = "permanent"\nlatency_ms = 50\n[herald.faults.email]\nfail_for_s = 30\n')
    config = load_config(toml, env={})
    assert config.faults_of(Channel.SMS) == FaultSpec(error_rate=0.5, kind="permanent", latency_ms=50)
    assert config.faults_of(Channel.EMAIL) == FaultSpec(fail_for_s=30) and config.faults_of(Channel.PUSH) == NO_FAULT
    from_env = load_config(env={"HERALD_FAULTS": "sms.error_rate=1,sms.kind=retryable,push.latency_ms=20,push.seed=3"})
    assert from_env.faults_of(Channel.SMS) == FaultSpec(error_rate=1.0)
    assert from_env.faults_of(Channel.PUSH) == FaultSpec(latency_ms=20, seed=3)
    for env, named in (
        ("sms.error_rate=2", "HERALD_FAULTS: faults.sms.error_rate"),
        ("sms.error_rate=lots", "faults.sms.error_rate"),
        ("sms.kind=sometimes", "faults.sms.kind"),
        ("sms.latency_ms=10001", "faults.sms.latency_ms"),
        ("sms.seed=0.5", "faults.sms.seed"),
        ("sms.rate=1", "faults.sms.rate"),
        ("web.error_rate=1", "faults.web"),
        ("sms=1", "<channel>.<key>=<value>"),
    ):
        with pytest.raises(ConfigError, match=named):
            load_config(env={"HERALD_FAULTS": env})
    for text, named in (
        ('[herald.faults.sms]\nkind = 1\n', "faults.sms.kind"),
        ('[herald.faults.sms]\nerror_rate = -0.5\n', "faults.sms.error_rate"),
        ('[herald.faults.fax]\nerror_rate = 0.5\n', "faults.fax"),
        ('[herald]\nfaults = 1\n', "faults"),
    ):
        toml.write_text(text)
        with pytest.raises(ConfigError, match=named) as refused:
            load_config(toml, env={})
        assert str(toml) in str(refused.value)


# -- a node with its sandbox clients, under MockClock


async def test_an_sms_fault_retries_opens_the_breaker_dead_letters_and_recovers_after_clearing(tmp_path, clock):
    async with running_node(tmp_path, **settings()) as herald:
        faults, gate = herald.sandbox_faults, herald.providers[Channel.SMS].gate
        assert faults is not None and [c.value for c in faults.channels()] == ["email", "sms", "push", "webhook"]
        faults.set(Channel.SMS, FaultSpec(error_rate=1.0))
        nid = (await herald.ingress.accept(sms("bob"))).notification_id
        assert await final_status(herald, nid, "sms") == "dead_lettered"

        # five attempts, each failed by the fault, each retry scheduled with backoff; then the DLQ
        timeline = [e for e in await herald.logstore.events(nid) if e.channel == "sms"]
        retries = [e for e in timeline if e.status == "queued" and "sandbox fault on sms (retryable): error_rate 1" in e.detail]
        assert len(retries) == 4 and all(f"attempt {n}" in r.detail for n, r in enumerate(retries, 1)), retries
        assert [r.at_ms for r in retries] == sorted(r.at_ms for r in retries)
        assert timeline[-1].status == "dead_lettered" and "sandbox fault" in timeline[-1].detail
        [entry] = await herald.store.dead_letters(DlqFilter(channel="sms"))
        assert entry.notification_id == nid and entry.attempts == 5 and "sandbox fault" in entry.error
        # five failures in a row opened the breaker; nothing reached the sandbox file
        assert gate.breaker.state_at(trio.current_time()) is BreakerState.OPEN and gate.transitions == {"closed->open": 1}
        assert faults.clients[Channel.SMS].state.failed == 5 and sms_lines(herald) == []

        # cleared: the replay and two new SMS wait out the open breaker, then three probes close it
        view = faults.set(Channel.SMS, NO_FAULT)
        assert not view.active and view.calls == 0
        assert await herald.gateway.dead_letters.replay(DlqFilter(channel="sms")) == 1
        more = [(await herald.ingress.accept(sms("carol", f"hello {i}"))).notification_id for i in range(2)]
        for one in (nid, *more):
            assert await final_status(herald, one, "sms") == "delivered"
        with trio.fail_after(600):
            while gate.breaker.state_at(trio.current_time()) is not BreakerState.CLOSED:
                await trio.sleep(1)
        assert gate.transitions == {"closed->open": 1, "open->half_open": 1, "half_open->closed": 1}
        assert await herald.store.dead_letter_count("sms") == 0
        assert sorted(line.split('"notification_id":"')[1][:26] for line in sms_lines(herald)) == sorted([nid, *more])
        assert sum(restarts(herald).values()) == 0
    calls = count_call_logs(herald.config.data_dir)["sms"]
    print(f"sms fault: {calls.line()} transitions={gate.transitions}")
    assert (calls.calls, calls.retries, calls.deliveries, calls.duplicates) == (8, 5, 3, 0)  # 4 retries, and the replay


async def test_an_outage_window_ends_by_itself_and_nothing_is_lost(tmp_path, clock):
    async with running_node(tmp_path, **settings(faults={"sms": {"fail_for_s": 20}}, max_attempts=20)) as herald:
        faults = herald.sandbox_faults
        assert faults is not None and faults.clients[Channel.SMS].view().outage_until is not None
        ids = [(await herald.ingress.accept(sms(f"u{i}"))).notification_id for i in range(4)]
        for nid in ids:
            assert await final_status(herald, nid, "sms") == "delivered"
        view = faults.clients[Channel.SMS].view()
    assert view.outage_until is None and view.failed >= 1 and view.calls == view.failed + len(ids)
    assert len(sms_lines(herald)) == len(ids)


async def test_a_permanent_fault_fails_at_once_and_leaves_the_breaker_closed(tmp_path, clock):
    async with running_node(tmp_path, **settings(faults={"sms": {"error_rate": 1, "kind": "permanent"}})) as herald:
        ids = [(await herald.ingress.accept(sms(f"u{i}"))).notification_id for i in range(F + 2)]
        for nid in ids:
            assert await final_status(herald, nid, "sms") == "failed"
        gate = herald.providers[Channel.SMS].gate
        assert gate.breaker.state_at(trio.current_time()) is BreakerState.CLOSED and gate.transitions == {}
        assert await herald.store.dead_letter_count("sms") == 0
        [event] = [e for e in await herald.logstore.events(ids[0]) if e.status == "failed"]
        assert "sandbox fault on sms (permanent)" in event.detail
    assert count_call_logs(herald.config.data_dir)["sms"].calls == len(ids)  # one call each: no retry
    assert sms_lines(herald) == []


async def test_latency_holds_each_call_for_as_long_as_it_says(tmp_path, clock):
    async with running_node(tmp_path, **settings(faults={"push": {"latency_ms": 2000}})) as herald:
        request = NotificationRequest(user_id="dana", channels=[Channel.PUSH], content=Content(push=PushContent(title="t")), to=Recipient(device_token="tok-1"))
        start = trio.current_time()
        ids = [(await herald.ingress.accept(request)).notification_id for _ in range(3)]
        for nid in ids:
            assert await final_status(herald, nid, "push") == "delivered"
        elapsed = trio.current_time() - start  # simulated seconds: the provider makes one call at a time
    assert elapsed >= 3 * 2.0
    assert count_call_logs(herald.config.data_dir)["push"].deliveries == 3
