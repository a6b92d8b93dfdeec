"""What the SaaS emulators share: an ASGI app served by Hypercorn on a free loopback port, plain HTTP/1.1 or TLS with ALPN h2.

TLS uses a throwaway CA (trustme) whose certificate the client trusts through its
`ca_file` setting, as an operator's client would a private CA; Hypercorn offers h2 first
in ALPN, so the HTTP/2 client (actors/clients/http2.py) speaks HTTP/2 to it (the emulators record each request's HTTP
version, and the APNs one refuses anything else, as Apple does).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio
import trustme
from hypercorn.config import Config
from hypercorn.trio import serve

MAX_REQUEST = 1024 * 1024  # an emulator reads at most this of a request body (then answers 413)


@dataclass
class Answer:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # answer after this long (a provider that is slow)
    raw: bytes | None = None  # a body sent as is (not JSON)
    drip_s: float = 0.0  # the body a byte at a time, this long apart (a server trickling its answer)


@dataclass(frozen=True)
class Tls:
    ca_file: Path  # what the client trusts
    cert_file: Path
    key_file: Path


def make_tls(directory: Path) -> Tls:
    """A throwaway CA and a certificate for 127.0.0.1 and localhost, written under `directory`."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    tls = Tls(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(tls.ca_file))
    cert.cert_chain_pems[0].write_to_path(str(tls.cert_file))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(tls.cert_file), append=True)
    cert.private_key_pem.write_to_path(str(tls.key_file))
    return tls


class Handler(Protocol):
    def answer(self, method: str, path: str, headers: dict[str, str], body: bytes, http_version: str) -> Answer: ...


async def read_body(receive: Any) -> bytes | None:
    """The request body, or None if it is larger than MAX_REQUEST."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if len(raw) > MAX_REQUEST:
            return None
        if not message.get("more_body"):
            return raw


class App:
    """An ASGI app that asks its handler for each request's answer."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = await read_body(receive)
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if raw is None:
            answer = Answer(413, {"error": "request too large"})
        else:
            path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
            answer = self.handler.answer(scope["method"], path, headers, raw, scope["http_version"])
        if answer.delay_s:
            await trio.sleep(answer.delay_s)
        out = [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        payload = answer.raw if answer.raw is not None else (json.dumps(answer.body).encode() if answer.body is not None else b"")
        if payload and answer.raw is None:
            out.append((b"content-type", b"application/json"))
        await send({"type": "http.response.start", "status": answer.status, "headers": out})
        if answer.drip_s:
            for n in range(len(payload)):
                await send({"type": "http.response.body", "body": payload[n:n + 1], "more_body": True})
                await trio.sleep(answer.drip_s)
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def serving(handler: Handler, tls: Tls | None = None) -> AsyncIterator[str]:
    """Serve the handler on a free loopback port until the block ends; yields its base URL."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    if tls is not None:
        config.certfile, config.keyfile = str(tls.cert_file), str(tls.key_file)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(App(handler), config, shutdown_trigger=stop.wait, task_status=task_status))  # type: ignore[arg-type]
        try:
            yield binds[0]  # https://127.0.0.1:<port> with TLS: the certificate names the address
        finally:
            stop.set()
