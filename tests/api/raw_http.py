"""Raw-socket HTTP/1.1 clients for framing tests: malformed requests no HTTP library would send.

A `Case` is the bytes one connection sends (in steps, with pauses so that the server may
answer early) and how many answers it is owed. `run_case` plays it and reads what comes
back until the server closes the connection: every case that reads ends so that a correct
server closes (a framing error, `Connection: close`, HTTP/1.0, an early answer), so a
server that keeps a connection open shows up as `hung`; the others end with a reset.
`burst` mixes every category over every route.
"""

from __future__ import annotations

import random
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

import trio

KEY = "test-key"

# (method, path): every route of the API, placeholders filled in, and one that does not exist.
ROUTES: list[tuple[str, str]] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/notifications"),
    ("GET", "/v1/notifications/n-1"),
    ("GET", "/v1/admin/circuits"),
    ("GET", "/v1/admin/dlq"),
    ("DELETE", "/v1/admin/dlq"),
    ("POST", "/v1/admin/dlq/replay"),
    ("GET", "/v1/admin/keys"),
    ("POST", "/v1/admin/keys"),
    ("DELETE", "/v1/admin/keys/k-1"),
    ("GET", "/v1/poll?timeout=0"),
    ("GET", "/v1/sse?token=garbage"),
    ("GET", "/v1/ws"),
    ("GET", "/v1/templates/t1"),
    ("POST", "/v1/templates/t1"),
    ("POST", "/v1/templates/t1/render"),
    ("GET", "/v1/templates/t1/versions"),
    ("POST", "/v1/templates/t1/versions/1/activate"),
    ("POST", "/v1/unsubscribe?token=garbage"),
    ("GET", "/v1/unsubscribe?token=garbage"),
    ("POST", "/v1/users/u1/devices"),
    ("DELETE", "/v1/users/u1/devices/tok"),
    ("GET", "/v1/users/u1/inbox"),
    ("POST", "/v1/users/u1/inbox/n-1/archive"),
    ("POST", "/v1/users/u1/inbox/n-1/read"),
    ("POST", "/v1/users/u1/inbox/read_all"),
    ("GET", "/v1/users/u1/inbox/unread_count"),
    ("GET", "/v1/users/u1/notifications"),
    ("GET", "/v1/users/u1/preferences"),
    ("PUT", "/v1/users/u1/preferences"),
    ("PATCH", "/v1/users/u1/preferences"),
    ("POST", "/v1/users/u1/tokens"),
    ("GET", "/v1/nowhere"),
]


def head(method: str, path: str, *, auth: str | None = KEY, extra: str = "", close: bool = False, version: str = "1.1") -> bytes:
    """A request head; `extra` is more header lines, each ending in CRLF; `auth` the bearer token, if any."""
    lines = f"{method} {path} HTTP/{version}\r\nHost: x\r\n"
    if auth is not None:
        lines += f"Authorization: Bearer {auth}\r\n"
    if close:
        lines += "Connection: close\r\n"
    return (lines + extra + "\r\n").encode("latin-1")


def request(method: str, path: str, body: bytes = b"", **kwargs: Any) -> bytes:
    """A whole request: the head (`head`'s keyword arguments) and a JSON body with its Content-Length."""
    has_body = body or method in ("POST", "PUT", "PATCH")
    length = f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n" if has_body else ""
    return head(method, path, extra=length, **kwargs) + body


@dataclass
class Case:
    category: str
    steps: list[bytes | float]  # bytes to send, or seconds to wait
    # Answers owed: one per request whose framing completed (a framing error's own 400 included), up to the first
    # answer that says `Connection: close`.
    answers: int
    reset: bool = False  # end with a TCP reset instead of reading the answers


@dataclass
class Outcome:
    case: Case
    statuses: list[int] = field(default_factory=list)
    closing: int | None = None  # the index of the first answer that said `Connection: close`
    closed: bool = False  # the server closed the connection (EOF or reset) after its answers
    hung: bool = False  # neither answered nor closed within the bound
    send_failed: bool = False  # the server reset the connection while we were still sending
    error: str = ""
    received: bytes = b""

    @property
    def unanswered(self) -> int:
        owed = self.case.answers if self.closing is None else min(self.case.answers, self.closing + 1)
        return max(0, owed - len(self.statuses))


def parse_responses(data: bytes) -> tuple[list[int], int | None]:
    """The status codes of the whole responses in `data`, in order (bodies skipped by Content-Length or chunking; an
    incomplete one is not counted), and the index of the first one that says `Connection: close`."""
    statuses: list[int] = []
    closing: int | None = None
    rest = data
    while rest:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            break
        lines = rest[:end].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not a status line: {lines[0][:80]!r}")
        status = int(parts[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        rest = rest[end + 4 :]
        if status == 101:  # switched: what follows is WebSocket or HTTP/2 frames
            statuses.append(status)
            break
        if status < 200:
            continue
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            while True:
                line_end = rest.find(b"\r\n")
                if line_end < 0:
                    return statuses, closing  # incomplete: not counted
                size = int(rest[:line_end].split(b";")[0], 16)
                if len(rest) < line_end + 2 + size + 2:
                    return statuses, closing
                rest = rest[line_end + 2 + size + 2 :]
                if size == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                break  # incomplete: not counted
            rest = rest[length:]
        if closing is None and b"close" in headers.get(b"connection", b"").lower():
            closing = len(statuses)
        statuses.append(status)
    return statuses, closing


async def run_case(host: str, port: int, case: Case, bound_s: float = 15.0) -> Outcome:
    """Play `case` on a new connection; read until the server closes it (at most `bound_s`)."""
    outcome = Outcome(case)
    received = bytearray()
    stream = await trio.open_tcp_stream(host, port)
    try:
        with trio.move_on_after(bound_s) as scope:
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    try:
                        while chunk := await stream.receive_some(65536):
                            received.extend(chunk)
                    except trio.BrokenResourceError:  # a reset: the server closed with our bytes unread
                        pass
                    outcome.closed = True

                if not case.reset:
                    nursery.start_soon(read)
                try:
                    for step in case.steps:
                        if isinstance(step, float):
                            await trio.sleep(step)
                        else:
                            await stream.send_all(step)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    outcome.send_failed = True  # the server closed first: what it answered is still read
                if case.reset:
                    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    nursery.cancel_scope.cancel()
        outcome.hung = scope.cancelled_caught and not case.reset
    finally:
        await stream.aclose()
    outcome.received = bytes(received)
    try:
        outcome.statuses, outcome.closing = parse_responses(outcome.received)
    except ValueError as error:
        outcome.error = str(error)
    return outcome


_H2C = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
_UPGRADE = (
    "Connection: upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
)
_BAD_UPGRADES = [_UPGRADE.replace("13", "99"), _UPGRADE.split("Sec-WebSocket-Key")[0]]  # a version other than 13; no key
_GARBAGE_LINES = [b"\x00\x01 / HTTP/1.1\r\n\r\n", b"GET\r\n\r\n", b"FOO BAR BAZ QUX\r\n\r\n", b"GET / HTTP/1.1\r\nHost x\r\n\r\n"]


def _body_for(method: str) -> bytes:
    return b'{"x": 1}' if method in ("POST", "PUT", "PATCH", "DELETE") else b""


def cases(rng: random.Random) -> list[Case]:
    """One case of each category for a random route (and a random auth: none, garbage or the key)."""
    method, path = rng.choice(ROUTES)
    auth = rng.choice([None, "garbage", KEY])
    other_method, other_path = rng.choice(ROUTES)
    follow = request(other_method, other_path, _body_for(other_method), auth=auth, close=True)
    unsubscribe = head("POST", "/v1/unsubscribe?token=garbage", auth=None, extra="Content-Length: 1\r\n")
    json_length = "Content-Length: 8\r\nContent-Type: application/json\r\n"
    chunked = "Transfer-Encoding: chunked\r\n"
    return [
        # A body longer than its Content-Length: the rest is the start of a garbage request (a 400, then close).
        Case("overlong", [unsubscribe + b"{}" + follow], 2),
        Case("overlong", [head(method, path, auth=auth, extra="Content-Length: 2\r\n") + b'{"a": 1}\r\n' + follow], 2),
        # An early answer (401, 404, 405, 413) before the body arrives, then the body, then the next request.
        Case("early", [head(method, path, auth=auth, extra=json_length), 0.02, b'{"a": 1}', follow], 1),
        Case("early", [head("POST", "/v1/notifications", auth=auth, extra="Content-Length: 99999999\r\n"), 0.02, b"{" * 5000], 1),
        # Bad chunked encoding: a size that is not hex, or data longer than its size.
        Case("chunked", [head(method, path, auth=auth, extra=chunked) + b"zz\r\n{}\r\n0\r\n\r\n"], 1),
        Case("chunked", [head(method, path, auth=auth, extra=chunked), 0.01, b"2\r\n{}}}\r\n0\r\n\r\n" + follow], 1),
        # Garbage request lines; both Content-Length and chunked (answered, then closed: RFC 9112 6.3); a transfer
        # coding other than one chunked (h11 says 501: a 400 here).
        Case("garbage", [rng.choice(_GARBAGE_LINES)], 1),
        Case("garbage", [head(method, path, auth=auth, extra="Content-Length: 5\r\n" + chunked) + b"0\r\n\r\n" + follow], 1),
        Case("garbage", [head(method, path, auth=auth, extra=rng.choice(["Transfer-Encoding: gzip\r\n", chunked + chunked]))], 1),
        # Headers past the server's limit.
        Case("oversized", [head(method, path, auth=auth, extra="X-Big: " + "a" * 70000 + "\r\n")], 1),
        # Pipelined requests, sent at once; the last asks to close.
        Case("pipelined", [request(method, path, _body_for(method), auth=auth) + request("GET", "/healthz") + follow], 3),
        # HTTP/1.0: answered, then closed.
        Case("http10", [request(method, path, _body_for(method), auth=auth, version="1.0")], 1),
        # Other protocols on the same port: a WebSocket handshake (a bad token) with garbage after it, later or in
        # the same packet: an answer (101 then a close frame, or 400), then the end; an invalid handshake (a version
        # other than 13, or no key): a 400, then the end. HTTP/2 is not served: its preface is a 400, then the end;
        # an h2c upgrade is ignored (answered in HTTP/1.1), and the garbage after it is a 400, then the end.
        Case("switch", [head("GET", "/v1/ws?token=garbage", extra=_UPGRADE), 0.01, rng.randbytes(64)], 1),
        Case("switch", [head("GET", "/v1/ws?token=", extra=_UPGRADE) + rng.randbytes(64)], 1),
        Case("switch", [head("GET", "/v1/ws?token=garbage", extra=rng.choice(_BAD_UPGRADES))], 1),
        Case("switch", [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + rng.randbytes(64)], 1),
        Case("switch", [head("GET", "/healthz", extra=_H2C), 0.01, rng.choice(_GARBAGE_LINES)], 2),
        # Early closes: half a request, or a whole one then a reset; nothing is owed.
        Case("early-close", [head(method, path, auth=auth, extra="Content-Length: 10\r\n")[:-7]], 0, reset=True),
        Case("early-close", [request(method, path, _body_for(method), auth=auth)], 0, reset=True),
    ]


def burst(seed: int, rounds: int) -> list[Case]:
    """`rounds` rounds of every category over random routes: 19 connections and 26 requests (most malformed) a round."""
    rng = random.Random(seed)
    out = [case for _ in range(rounds) for case in cases(rng)]
    rng.shuffle(out)
    return out


async def play(host: str, port: int, plan: list[Case], concurrency: int, bound_s: float = 15.0) -> list[Outcome]:
    """Every case of `plan`, `concurrency` connections at a time."""
    outcomes: list[Outcome] = []
    limiter = trio.CapacityLimiter(concurrency)

    async def one(case: Case) -> None:
        async with limiter:
            try:
                outcomes.append(await run_case(host, port, case, bound_s))
            except OSError as error:  # refused: the server is down or restarting
                outcomes.append(Outcome(case, error=f"connect: {error!r}"))

    async with trio.open_nursery() as nursery:
        for case in plan:
            nursery.start_soon(one, case)
    return outcomes
