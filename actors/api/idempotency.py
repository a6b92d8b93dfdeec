"""Idempotency-Key on POSTs: the same key and request within the TTL get the original response.

A key's entry (`_Entry`) lives in the State port under the caller's scope (the API key and the
route: two API keys never see each other's entries). While the first request runs, the
entry is a `pending` lease of LEASE_S seconds; `keep_leases` (a supervised child of the
node) renews the lease of every request that has run for RENEW_S: if the process dies
mid-request the lease runs out within seconds, and a retry with the key goes ahead
instead of being refused for a day. (One keeper rather than a task per request: most
requests end in milliseconds, and a nursery per request cost several times the rest of
this module.) Once there is a response the entry holds it for `ttl_s` (24 h). A second
request with the key and the same request waits for the first (up to WAIT_FOR_FIRST_S,
longer than a lease) and gets its response with `Idempotent-Replayed: true`; a
different request is a 422. A 5xx (or 503) is not kept, so the client may retry with
the same key.

One 503 keeps something: an append whose outcome is unknown (AppendUncertain: the bus did not
acknowledge in time, but may still write it). Every entry carries a seed and the first try's time,
from which the Ingress derives the request's notification ids (`KeyedIds`, actors/ingress.py);
after an AppendUncertain the entry stays, `uncertain`, for `ttl_s`, and the retry with the key
runs again with the same seed (every keyed delivery asks the send ledger first: Delivery.keyed),
so the caller gets one notification per item whether or not, or when, the first try's records
are written. (Two retries
racing for an uncertain entry both run, with the same ids: the ledger still lets one call through.
A retry whose process dies mid-request lets its lease run out, and the seed with it.)

"The same request" is the request's fingerprint (actors/domain/fingerprints.py).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Awaitable, Callable

import msgspec
import trio

from protocol.problems import FieldError, Problem
from reactor.clock import wall_ms
from reactor.ports import AppendUncertain, State

from ..domain.fingerprints import fingerprint
from ..messages import KeyedIds
from .errors import Answer, problem_answer

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
LEASE_S = 5.0  # a pending marker outlives its request by at most this
RENEW_S = 1.5  # a running request's lease is renewed once it is this old (checked every RENEW_S / 2)
WAIT_FOR_FIRST_S = 10.0  # how long a second request waits for the first (longer than a lease)
POLL_S = 0.1  # how often a waiter looks again at a record another process holds
KEPT_HEADERS = ("Location", "Retry-After")


class _Entry(msgspec.Struct, frozen=True, omit_defaults=True):
    """A key's entry in the State: pending (a lease) or done (the response to replay)."""

    fingerprint: str
    done: bool = False
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    headers: dict[str, str] = {}
    owner: str = ""  # the request holding a pending lease
    seed: str = ""  # with first_ms, what the notification ids of the request are derived from (KeyedIds)
    first_ms: int = 0
    uncertain: bool = False  # a try's append may have been written (AppendUncertain): a retry makes the same ids


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(_Entry).decode


@dataclass(eq=False)
class _Lease:
    """A pending record this process holds, for keep_leases."""

    encoded: bytes
    written: float  # trio time of the last write
    over: bool = False  # the request has its answer (or gave up): no renewal from now on
    renewing: trio.Event | None = None  # a renewal under way: the request's final write waits for it

    async def settle(self) -> None:
        """Stop renewals: from the return on, no renewal of this lease writes to the state."""
        self.over = True
        if self.renewing is not None:
            await self.renewing.wait()


def _problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> Answer:
    return problem_answer(Problem(title, status, detail, errors=[FieldError(HEADER, detail)]), headers)


class Idempotency:
    def __init__(self, state: State, ttl_s: float = 24 * 3600, lease_s: float = LEASE_S) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self._inflight: dict[str, trio.Event] = {}
        self._leases: dict[str, _Lease] = {}
        self._wake = trio.Event()  # set when the first lease arrives (keep_leases sleeps while there is none), or on stop
        self._stopped = False
        self.replayed = 0
        self.retried_uncertain = 0  # retries of a request whose earlier append may have been written
        self.renewals = 0
        self.keeper_turns = 0  # how often keep_leases looked at its leases (it must sleep between turns)

    async def run(self, scope: str, key: str | None, body: bytes, handler: Callable[[KeyedIds | None], Awaitable[Answer]]) -> Answer:
        """Answer through `handler` once per (scope, key); replay its response after that.

        `scope` names the caller and the route (e.g. `<api key id>:POST /v1/notifications`).
        `handler` gets the ids its notifications must take (None without a key).
        """
        if key is None:
            return await handler(None)
        if not key or len(key) > MAX_KEY_LENGTH:
            return _problem(400, "Invalid Idempotency-Key", f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
        name = f"idempotency:{scope}:{key}"
        mine = _Entry(fingerprint(body), owner=secrets.token_hex(8), seed=secrets.token_hex(10), first_ms=wall_ms())
        encoded = _encode(mine)
        deadline = trio.current_time() + WAIT_FOR_FIRST_S
        while True:
            existing = await self.state.put_if_absent(name, encoded, self.lease_s)
            if existing is None:
                return await self._first(name, mine, encoded, handler)
            record = _decode(existing)
            if record.fingerprint != mine.fingerprint:
                return _problem(422, "Idempotency-Key reused", f"this {HEADER} was used with a different request body")
            if record.done:
                self.replayed += 1
                return Answer(record.status, record.body, record.content_type, {**record.headers, "Idempotent-Replayed": "true"})
            if record.uncertain and not record.owner:  # an earlier try's append may be written: go again with its ids
                mine = msgspec.structs.replace(mine, seed=record.seed, first_ms=record.first_ms, uncertain=True)
                encoded = _encode(mine)
                await self.state.set(name, encoded, self.lease_s)
                self.retried_uncertain += 1
                return await self._first(name, mine, encoded, handler)
            # pending: wait until the first request answers, fails (and releases the key) or dies (its lease runs out)
            now = trio.current_time()
            if now >= deadline:
                detail = f"a request with this {HEADER} is still in progress"
                return _problem(409, "Request in progress", detail, {"Retry-After": "1"})
            event = self._inflight.get(name)
            with trio.move_on_after(min(deadline - now, POLL_S if event is None else self.lease_s)):
                if event is not None:
                    await event.wait()
                else:
                    await trio.sleep_forever()

    async def _first(self, name: str, pending: _Entry, encoded: bytes, handler: Callable[[KeyedIds | None], Awaitable[Answer]],
                     ) -> Answer:
        event = self._inflight[name] = trio.Event()
        if not any(not lease.over for lease in self._leases.values()):
            self._wake.set()
        lease = self._leases[name] = _Lease(encoded, trio.current_time())
        kept = False
        uncertain = pending.uncertain  # once uncertain, the entry keeps its ids until a try has an answer
        try:
            try:
                answer = await handler(KeyedIds(pending.seed, pending.first_ms))
            except AppendUncertain:
                uncertain = True
                raise
            if answer.status < 500:
                headers = {h: answer.headers[h] for h in KEPT_HEADERS if h in answer.headers}
                record = _Entry(pending.fingerprint, True, answer.status, answer.body, answer.content_type, headers)
                await lease.settle()
                await self.state.set(name, _encode(record), self.ttl_s)
                kept = True
            return answer
        finally:
            del self._leases[name]
            if not kept:
                with trio.CancelScope(shield=True):
                    await lease.settle()
                    if uncertain:
                        kept_ids = _Entry(pending.fingerprint, seed=pending.seed, first_ms=pending.first_ms, uncertain=True)
                        await self.state.set(name, _encode(kept_ids), self.ttl_s)
                    else:
                        await self.state.delete(name)
            event.set()
            del self._inflight[name]

    def stop(self) -> None:
        """Let keep_leases return (the node is shutting down: the front end has stopped taking requests)."""
        self._stopped = True
        self._wake.set()

    async def keep_leases(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Renew the pending lease of every request of this process that has run for RENEW_S, until stop().

        It sleeps while no request holds a lease, and otherwise until the oldest one is due."""
        task_status.started()
        while not self._stopped:
            self.keeper_turns += 1
            live = [lease.written for lease in self._leases.values() if not lease.over]
            if not live:  # none, or only leases that are settling or were lost: nothing to renew until a new one comes
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            with trio.move_on_at(min(live) + RENEW_S):
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            due = trio.current_time() - RENEW_S
            for name, lease in [(n, lease) for n, lease in self._leases.items() if lease.written <= due]:
                if lease.over:
                    continue
                lease.renewing = trio.Event()
                try:
                    if await self.state.get(name) != lease.encoded:
                        lease.over = True  # lost (it ran out and another request took the key): leave it to that one
                    elif not lease.over:
                        await self.state.set(name, lease.encoded, self.lease_s)
                        lease.written = trio.current_time()
                        self.renewals += 1
                finally:
                    lease.renewing.set()
                    lease.renewing = None
