"""Idempotency-Key on POSTs: the same key and body within the TTL get the original response.

The key's record lives in the State port (put-if-absent with a TTL): first a `pending`
marker with the body's fingerprint, then the response once there is one. A second
request with the key and the same body waits for the first and gets its response with
`Idempotent-Replayed: true`; a different body is a 422. A 5xx (or 503) is not kept, so
the client may retry with the same key.
"""

from __future__ import annotations

import hashlib
from typing import Awaitable, Callable

import msgspec
import trio

from protocol.problems import FieldError, Problem
from reactor.ports import State

from .api.errors import Answer, problem_answer

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
WAIT_FOR_FIRST_S = 10.0
KEPT_HEADERS = ("Location", "Retry-After")


class _Record(msgspec.Struct, frozen=True, omit_defaults=True):
    fingerprint: str
    done: bool = False
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = {}


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Record).decode


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Answer:
    return problem_answer(Problem(title, status, detail, errors=[FieldError(HEADER, detail)]), headers)


class Idempotency:
    def __init__(self, state: State, ttl_s: float = 24 * 3600) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self._inflight: dict[str, trio.Event] = {}
        self.replayed = 0

    async def run(self, scope: str, key: str | None, body: bytes, handler: Callable[[], Awaitable[Answer]]) -> Answer:
        """Answer through `handler` once per (scope, key); replay its response after that."""
        if key is None:
            return await handler()
        if not key or len(key) > MAX_KEY_LENGTH:
            return _problem(400, "Invalid Idempotency-Key", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
        name = f"idempotency:{scope}:{key}"
        fingerprint = hashlib.sha256(scope.encode() + b"\0" + body).hexdigest()
        existing = await self.state.put_if_absent(name, _encode(_Record(fingerprint)), self.ttl_s)
        if existing is None:
            return await self._first(name, fingerprint, handler)
        record = _decode(existing)
        if record.fingerprint != fingerprint:
            return _problem(422, "Idempotency-Key reused", f"this {HEADER} was used with a different request body")
        if not record.done:
            event = self._inflight.get(name)
            if event is not None:
                with trio.move_on_after(WAIT_FOR_FIRST_S):
                    await event.wait()
            raw = await self.state.get(name)
            if raw is None:  # the first one failed and released the key: this one goes ahead
                return await self.run(scope, key, body, handler)
            record = _decode(raw)
            if not record.done:
                return _problem(409, "Request in progress", f"a request with this {HEADER} is still in progress", {"Retry-After": "1"})
        self.replayed += 1
        headers = {**record.headers, "Idempotent-Replayed": "true"}
        return Answer(record.status, record.body, record.content_type, headers)

    async def _first(self, name: str, fingerprint: str, handler: Callable[[], Awaitable[Answer]]) -> Answer:
        event = self._inflight[name] = trio.Event()
        kept = False
        try:
            answer = await handler()
            if answer.status < 500:
                headers = {h: answer.headers[h] for h in KEPT_HEADERS if h in answer.headers}
                record = _Record(fingerprint, True, answer.status, answer.body, answer.content_type, headers)
                await self.state.set(name, _encode(record), self.ttl_s)
                kept = True
            return answer
        finally:
            if not kept:
                with trio.CancelScope(shield=True):
                    await self.state.delete(name)
            event.set()
            del self._inflight[name]
