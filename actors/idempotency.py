"""Idempotency-Key on POSTs: the same key and request within the TTL get the original response.

A key's record lives in the State port under the caller's scope (the API key and the
route: two API keys never see each other's records). While the first request runs, the
record is a `pending` lease of LEASE_S seconds that the request renews every RENEW_S:
if the process dies mid-request the lease runs out within seconds, and a retry with the
key goes ahead instead of being refused for a day. Once there is a response the record
holds it for `ttl_s` (24 h). A second request with the key and the same request waits
for the first (up to WAIT_FOR_FIRST_S, longer than a lease) and gets its response with
`Idempotent-Replayed: true`; a different request is a 422. A 5xx (or 503) is not kept,
so the client may retry with the same key.

"The same request" is the decoded body, canonicalised (object keys sorted, no
whitespace), as Stripe compares parameters: a client that re-serialises its JSON on a
retry is not refused. A body that is not JSON is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Awaitable, Callable

import msgspec
import outcome
import trio

from protocol.problems import FieldError, Problem
from reactor.ports import State

from .api.errors import Answer, problem_answer

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
LEASE_S = 5.0  # a pending marker outlives its request by at most this
RENEW_S = 1.5  # how often a running request renews its lease
WAIT_FOR_FIRST_S = 10.0  # how long a second request waits for the first (longer than a lease)
POLL_S = 0.1  # how often a waiter looks again at a record another process holds
KEPT_HEADERS = ("Location", "Retry-After")


class _Record(msgspec.Struct, frozen=True, omit_defaults=True):
    fingerprint: str
    done: bool = False
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = {}
    owner: str = ""  # the request holding a pending lease


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode
_canonical = msgspec.json.Encoder(order="sorted").encode


def fingerprint(body: bytes) -> str:
    """What two requests must share to be the same request: the canonical JSON of the body (or its bytes)."""
    try:
        canonical = b"json\0" + _canonical(msgspec.json.decode(body))
    except (msgspec.DecodeError, RecursionError):
        canonical = b"raw\0" + body
    return hashlib.sha256(canonical).hexdigest()


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Answer:
    return problem_answer(Problem(title, status, detail, errors=[FieldError(HEADER, detail)]), headers)


class Idempotency:
    def __init__(self, state: State, ttl_s: float = 24 * 3600, lease_s: float = LEASE_S) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self._inflight: dict[str, trio.Event] = {}
        self.replayed = 0

    async def run(self, scope: str, key: str | None, body: bytes, handler: Callable[[], Awaitable[Answer]]) -> Answer:
        """Answer through `handler` once per (scope, key); replay its response after that.

        `scope` names the caller and the route (e.g. `<api key id>:POST /v1/notifications`).
        """
        if key is None:
            return await handler()
        if not key or len(key) > MAX_KEY_LENGTH:
            return _problem(400, "Invalid Idempotency-Key", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
        name = f"idempotency:{scope}:{key}"
        mine = _Record(fingerprint(body), owner=secrets.token_hex(8))
        deadline = trio.current_time() + WAIT_FOR_FIRST_S
        while True:
            existing = await self.state.put_if_absent(name, _encode(mine), self.lease_s)
            if existing is None:
                return await self._first(name, mine, handler)
            record = _decode(existing)
            if record.fingerprint != mine.fingerprint:
                return _problem(422, "Idempotency-Key reused", f"this {HEADER} was used with a different request body")
            if record.done:
                self.replayed += 1
                return Answer(record.status, record.body, record.content_type, {**record.headers, "Idempotent-Replayed": "true"})
            # pending: wait until the first request answers, fails (and releases the key) or dies (its lease runs out)
            now = trio.current_time()
            if now >= deadline:
                detail = f"a request with this {HEADER} is still in progress"
                return _problem(409, "Request in progress", detail, {"Retry-After": "1"})
            event = self._inflight.get(name)
            with trio.move_on_after(min(deadline - now, POLL_S if event is None else self.lease_s)):
                await (event.wait() if event is not None else trio.sleep_forever())

    async def _first(self, name: str, lease: _Record, handler: Callable[[], Awaitable[Answer]]) -> Answer:
        event = self._inflight[name] = trio.Event()
        kept = False
        try:
            result: list[outcome.Outcome[Answer]] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._renew, name, lease)

                async def work() -> None:
                    try:
                        result.append(outcome.Value(await handler()))
                    except Exception as exc:  # raised again below, outside the nursery (not in an ExceptionGroup)
                        result.append(outcome.Error(exc))
                    finally:
                        nursery.cancel_scope.cancel()  # stops the renewals before the record is written

                nursery.start_soon(work)
            answer = result[0].unwrap()
            if answer.status < 500:
                headers = {h: answer.headers[h] for h in KEPT_HEADERS if h in answer.headers}
                record = _Record(lease.fingerprint, True, answer.status, answer.body, answer.content_type, headers)
                await self.state.set(name, _encode(record), self.ttl_s)
                kept = True
            return answer
        finally:
            if not kept:
                with trio.CancelScope(shield=True):
                    await self.state.delete(name)
            event.set()
            del self._inflight[name]

    async def _renew(self, name: str, lease: _Record) -> None:
        """Keep the pending lease alive while the request runs (never overwriting a record it no longer holds)."""
        encoded = _encode(lease)
        while True:
            await trio.sleep(RENEW_S)
            current = await self.state.get(name)
            if current != encoded:
                return  # lost (the lease ran out and another request took the key): leave it to that one
            await self.state.set(name, encoded, self.lease_s)
