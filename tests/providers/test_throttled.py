"""The throttled verdict (RetryLater.throttled: a provider's 429, FCM's QUOTA_EXCEEDED): honoured by the gate as a wait,
shared with the provider's other workers through the bucket, never counted as a breaker failure, and sent again in place
by the Provider while the waits stay within its throttle_wait_s."""

from __future__ import annotations

import trio

from actors.messages import Attempt
from actors.provider import Provider
from actors.services.gate import Limits, ResilienceGate
from protocol.channels import Channel
from protocol.content import Content, SmsContent
from protocol.messages import Delivery, Outcome, RetryLater, Sent
from reactor.ask import Reply
from reactor.backends.embedded import MemoryState
from reactor.circuit_breaker import BreakerConfig, BreakerState
from reactor.mailbox import Mailbox

BREAKER = BreakerConfig(failure_threshold=2, open_timeout_s=60, success_threshold=1)


def delivery(nid: str = "n-1") -> Delivery:
    return Delivery(nid, "u1", Channel.SMS, 0, Content(sms=SmsContent("hi")), address="+15555550100")


def throttled(after_s: float | None = 5.0) -> RetryLater:
    return RetryLater("twilio: 429 20429: Too Many Requests", after_s=after_s, throttled=True)


async def test_throttled_verdicts_never_open_the_breaker_and_the_next_admission_waits(autojump_clock) -> None:
    gate = ResilienceGate("sms", Limits(100, 100, BREAKER), MemoryState())
    for _ in range(5):  # more than the failure threshold
        await gate.admit(delivery())
        started = trio.current_time()
        await gate.settle(delivery(), throttled(5.0))
        await gate.admit(delivery())
        assert trio.current_time() - started >= 5.0  # the wait the provider asked for, honoured at the gate
        await gate.settle(delivery(), Sent())
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.CLOSED and gate.breaker.statistics().consecutive_failures == 0
    assert gate.throttles == 5 and gate.throttled >= 5
    for _ in range(2):  # the same answers as plain retryable failures open it: the check above can fail
        await gate.admit(delivery())
        await gate.settle(delivery(), RetryLater("twilio: 503"))
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.OPEN


async def test_a_throttle_without_a_wait_neither_waits_nor_counts(autojump_clock) -> None:
    gate = ResilienceGate("push", Limits(100, 100, BREAKER), MemoryState())
    for _ in range(3):  # APNs's TooManyRequests to one device
        await gate.admit(delivery())
        await gate.settle(delivery(), throttled(None))
    started = trio.current_time()
    await gate.admit(delivery())
    assert trio.current_time() == started and gate.breaker.statistics().consecutive_failures == 0


async def test_another_worker_of_the_provider_waits_through_the_shared_bucket(autojump_clock) -> None:
    state = MemoryState()
    limits = Limits(capacity=10, refill_per_s=10, breaker=BREAKER)
    first, second = ResilienceGate("sms", limits, state), ResilienceGate("sms", limits, state)
    await first.admit(delivery())
    await second.admit(delivery())
    start = trio.current_time()
    await first.settle(delivery("n-2"), throttled(30.0))
    await second.admit(delivery("n-3"))  # its slice was spent: the next comes from the emptied, indebted bucket
    await second.admit(delivery("n-4"))
    waited = trio.current_time() - start
    assert 1.0 <= waited < 30.0, waited  # about the bucket's depth (capacity / refill), not nothing


class Scripted:
    """A client answering from a list, then Sent."""

    def __init__(self, *answers: Outcome) -> None:
        self.answers = list(answers)
        self.calls: list[float] = []

    async def send(self, d: Delivery) -> Outcome:
        self.calls.append(trio.current_time())
        return self.answers.pop(0) if self.answers else Sent()


async def run_one(client: Scripted, gate: ResilienceGate | None = None, throttle_wait_s: float = 60.0) -> tuple[Outcome, Provider]:
    mailbox: Mailbox[Attempt] = Mailbox("provider:test", 4)

    class Ledger:
        async def sent_status(self, nid: str, channel: str) -> None:
            return None

        async def mark_sent(self, *args: object) -> None:
            return None

    provider = Provider(Channel.SMS, client, mailbox, Ledger(), gate, throttle_wait_s=throttle_wait_s)  # type: ignore[arg-type]
    reply: Reply[Outcome] = Reply()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(provider.run)
        await mailbox.send(Attempt(delivery(), reply, False))
        outcome = await reply.wait()
        mailbox.close()
    return outcome, provider


async def test_the_provider_sends_a_throttled_delivery_again_after_the_wait(autojump_clock) -> None:
    gate = ResilienceGate("sms", Limits(100, 100, BREAKER), MemoryState())
    client = Scripted(throttled(2.0), throttled(3.0))
    outcome, provider = await run_one(client, gate)
    assert isinstance(outcome, Sent), outcome  # not a retry through the scheduler: sent in place, in the user's order
    assert len(client.calls) == 3 and client.calls[1] - client.calls[0] >= 2.0 and client.calls[2] - client.calls[1] >= 3.0
    assert provider.throttled_resends == 2 and gate.breaker.statistics().consecutive_failures == 0


async def test_a_throttle_beyond_the_providers_wait_goes_back_as_a_retry(autojump_clock) -> None:
    client = Scripted(throttled(40.0), throttled(40.0))
    outcome, provider = await run_one(client, ResilienceGate("sms", Limits(100, 100, BREAKER), MemoryState()), throttle_wait_s=60)
    assert isinstance(outcome, RetryLater) and outcome.throttled and outcome.after_s == 40.0, outcome  # 40 + 40 > 60
    assert len(client.calls) == 2 and provider.throttled_resends == 1


async def test_without_limits_the_open_gate_honours_the_wait_too(autojump_clock) -> None:
    client = Scripted(throttled(7.0))
    outcome, _ = await run_one(client, None)
    assert isinstance(outcome, Sent) and client.calls[1] - client.calls[0] >= 7.0, client.calls


async def test_a_throttle_with_no_wait_is_sent_again_a_bounded_number_of_times(autojump_clock) -> None:
    from actors.provider import MAX_THROTTLED_RESENDS

    client = Scripted(*[throttled(0.0)] * 50)  # Retry-After: 0, again and again
    outcome, provider = await run_one(client, ResilienceGate("sms", Limits(100, 100, BREAKER), MemoryState()))
    assert isinstance(outcome, RetryLater) and outcome.throttled, outcome  # back to the consumer's retries
    assert len(client.calls) == 1 + MAX_THROTTLED_RESENDS and provider.throttled_resends == MAX_THROTTLED_RESENDS


def recipient_throttled(after_s: float = 5.0) -> RetryLater:
    """A webhook endpoint's 429: that recipient's rate, not the provider's (actors/clients/webhook.py)."""
    return RetryLater("webhook: 429", after_s=after_s, throttled=True, recipient=True)


async def test_a_recipients_throttle_holds_no_one_else_and_goes_back_to_the_consumer(autojump_clock) -> None:
    gate = ResilienceGate("webhook", Limits(100, 100, BREAKER), MemoryState())
    for _ in range(3):  # more than the failure threshold: still no breaker failure
        await gate.admit(delivery())
        await gate.settle(delivery(), recipient_throttled(30.0))
    started = trio.current_time()
    await gate.admit(delivery("n-2"))  # another user's delivery: not held by the first endpoint's Retry-After
    assert trio.current_time() == started and gate.throttles == 0
    assert gate.breaker.statistics().consecutive_failures == 0
    for open_gate in (gate, None):  # with limits or without, not sent again in place: a retry after the wait
        client = Scripted(recipient_throttled(2.0))
        outcome, provider = await run_one(client, open_gate)
        assert isinstance(outcome, RetryLater) and outcome.recipient and outcome.after_s == 2.0, outcome
        assert len(client.calls) == 1 and provider.throttled_resends == 0


async def test_a_recipients_failure_is_no_failure_of_the_channel_and_frees_a_probe(autojump_clock) -> None:
    """A webhook endpoint's 5xx or timeout (RetryLater(recipient=True)): that endpoint's own breaker counts it
    (actors/clients/endpoint_breakers.py); the channel's breaker, which every user's webhooks go through, does not."""
    gate = ResilienceGate("webhook", Limits(100, 100, BREAKER), MemoryState())
    for _ in range(BREAKER.failure_threshold * 3):
        await gate.admit(delivery())
        await gate.settle(delivery(), RetryLater("webhook: 503", recipient=True))
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.CLOSED and gate.breaker.consecutive_failures == 0
    for _ in range(BREAKER.failure_threshold):  # the channel's own failures still open it
        await gate.admit(delivery())
        await gate.settle(delivery(), RetryLater("webhook: the sandbox cannot write"))
    assert gate.breaker.state_at(trio.current_time()) is BreakerState.OPEN
    await trio.sleep(BREAKER.open_timeout_s)
    await gate.admit(delivery("probe"))
    await gate.settle(delivery("probe"), RetryLater("webhook: 503", recipient=True))  # no word: the probe is freed
    started = trio.current_time()
    await gate.admit(delivery("next"))  # the next probe goes at once, not after another open timeout
    assert trio.current_time() == started
    await gate.settle(delivery("next"), Sent())


async def test_the_calls_in_flight_when_throttling_began_hold_the_bucket_once_not_each(autojump_clock) -> None:
    """Twenty calls in flight all answered 429 with Retry-After 1 s: one wait of about 1 s for everyone, not twenty
    stacked debts (the simulation of an email provider throttling at 60/s delivered a tenth of its rate so)."""
    state = MemoryState()
    limits = Limits(capacity=60, refill_per_s=60, breaker=BREAKER)
    gate, other = ResilienceGate("email", limits, state), ResilienceGate("email", limits, state)
    for n in range(20):
        await gate.admit(delivery(f"n-{n}"))
    began = trio.current_time()
    for n in range(20):
        await gate.settle(delivery(f"n-{n}"), throttled(1.0))
    await other.admit(delivery("later"))  # the provider's other worker, through the shared bucket
    await gate.admit(delivery("later-here"))
    # one throttle's wait and the bucket's depth (capacity / refill: 1 s) spent by the slices leased before it and
    # the debt it left, about 3 s; each answer adding its own debt made it 40 s
    assert trio.current_time() - began <= 1.0 + 2 * 1.0 + 0.5, trio.current_time() - began
    assert gate.throttles == 20
