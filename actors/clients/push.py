"""What the push clients (FCM, APNs) share: a delivery's device tokens, each sent at once, and one verdict of theirs.

A push delivery reaches every token it holds (`addresses`, or `address` alone); each token
gets its own request, all at once (over one HTTP/2 connection), and its own verdict. The
delivery's verdict (`combine`):

* some device took it: Sent (the others' errors in the detail). Those that failed are
  not sent again: a retry would reach the devices that have it a second time.
* none did, one or more retryable: RetryLater (throttled if every retryable one was,
  after the longest wait asked);
* none did, none retryable: PermanentFailure.

Tokens a provider called unregistered ride on any of the three (`unregistered_tokens`):
the Provider removes them from the user's devices.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

from protocol.lifecycle import Status
from protocol.messages import Crashed, Delivery, Outcome, PermanentFailure, RetryLater, Sent

MAX_ERROR = 1000  # characters of a combined verdict's text


def tokens_of(delivery: Delivery) -> list[str]:
    return list(delivery.addresses) if delivery.addresses else ([delivery.address] if delivery.address else [])


def unregistered(provider: str, token: str, error: str) -> PermanentFailure:
    """The verdict of a token the provider called gone: a permanent failure that removes the token."""
    return PermanentFailure(f"{provider}: device {token[:8]}… unregistered: {error}", unregistered_tokens=[token])


def combine(results: Sequence[Outcome]) -> Outcome:
    """One delivery's verdict from its tokens' verdicts, in token order (pure)."""
    gone = [t for r in results if not isinstance(r, Crashed) for t in r.unregistered_tokens]
    sent = [r for r in results if isinstance(r, Sent)]
    failed = [r for r in results if not isinstance(r, Sent)]
    errors = "; ".join(r.error for r in failed if not isinstance(r, Sent))  # a Crashed is not among them: clients answer
    if len(results) == 1 and not gone:
        return results[0]
    if sent:
        detail = f"{len(sent)} of {len(results)} device(s): {sent[0].detail}" + (f"; not sent: {errors}" if errors else "")
        return Sent(Status.SENT, detail=detail[:MAX_ERROR], unregistered_tokens=gone)
    retry = [r for r in results if isinstance(r, RetryLater)]
    if retry:
        waits = [r.after_s for r in retry if r.after_s is not None]
        throttled = all(r.throttled for r in retry)
        return RetryLater(errors[:MAX_ERROR], after_s=max(waits) if waits else None, throttled=throttled, unregistered_tokens=gone)
    return PermanentFailure(errors[:MAX_ERROR], unregistered_tokens=gone)


async def each_token(delivery: Delivery, send_one: Callable[[str], Awaitable[Outcome]]) -> Outcome:
    """Send to every token of the delivery at once; the combined verdict (no token: a dead-lettered delivery)."""
    tokens = tokens_of(delivery)
    if not tokens:
        return PermanentFailure("push: no device token", dead_letter=True)
    if len(tokens) == 1:  # the common case: no nursery, no task of its own
        return combine([await send_one(tokens[0])])
    results: list[Outcome | None] = [None] * len(tokens)

    async def one(n: int, token: str) -> None:
        results[n] = await send_one(token)

    async with trio.open_nursery() as nursery:
        for n, token in enumerate(tokens):
            nursery.start_soon(one, n, token)
    return combine([r for r in results if r is not None])
