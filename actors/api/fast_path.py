"""POST /v1/notifications and POST /v1/notifications/batch straight on ASGI, in front of the Quart app.

The hottest route skips Quart's per-request machinery (request and app contexts,
before/after hooks, the Response object), which costs about a quarter of a request's
CPU on this route (docs/performance.md). It runs the same code as the Quart route
once the request is read: `check_access`, `submit_notification`, the same answers.
The batch route is here for its body limit (`max_batch_body_bytes`, larger than the
app-wide `max_body_bytes` Quart enforces), not for speed: Quart's share of a batch of
100 is small (docs/performance.md, "Batch ingest").
Every other request, and any other method on these paths, goes to the Quart app.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from protocol.api import MAX_BATCH_ITEMS
from protocol.problems import FieldError, Problem
from reactor.ports import PortUnavailable

from .errors import Answer, ProblemError, check_access, problem_answer, unavailable
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .notifications import BATCH_PATH, submit_batch, submit_notification
from .request_rules import check, query_names
from .webhooks import PATHS as WEBHOOK_PATHS
from .webhooks import RECEIPT_MAX_BODY, answer_receipt

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

log = logging.getLogger("herald.gateway")

PATH = "/v1/notifications"
_AUTHORIZATION = b"authorization"
_IDEMPOTENCY = IDEMPOTENCY_HEADER.lower().encode()
_CONTENT_LENGTH = b"content-length"
_CONTENT_TYPE = b"content-type"

class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


def _too_slow(timeout_s: float) -> Answer:
    """408, as the Quart routes answer a body that takes longer than BODY_TIMEOUT (both `body_timeout_s`); then the connection closes."""
    detail = f"the request body did not arrive within {timeout_s:g} s"
    return problem_answer(Problem("Request Timeout", 408, detail, errors=[FieldError("body", detail)]), {"Connection": "close"})


def _too_large(gw: Gateway, path: str) -> Answer:
    if path == BATCH_PATH:
        detail = (f"body over {gw.max_batch_body_bytes} bytes (max_batch_body_bytes): split the batch "
                  f"(at most {MAX_BATCH_ITEMS} items, each at most {gw.max_body_bytes} bytes)")
    else:
        detail = f"body over {gw.max_body_bytes} bytes"
    return problem_answer(Problem("Payload Too Large", 413, detail))


class FastSubmit:
    def __init__(self, app: ASGIFramework, gw: Gateway) -> None:
        self.app = app
        self.gw = gw
        self.served = 0

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in (PATH, BATCH_PATH):
            await self._respond(send, await self._answer(scope, receive))
            self.served += 1
        elif scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in WEBHOOK_PATHS:
            await self._respond(send, await self._receipt(scope, receive))  # their own body limit (actors/api/webhooks.py)
        else:
            await self.app(scope, receive, send)

    async def _answer(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> Answer:
        gw = self.gw
        path = scope["path"]
        batch = path == BATCH_PATH
        if gw.draining.is_set():
            return problem_answer(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
        headers = {name.lower(): value for name, value in scope["headers"]}
        try:
            content_type = headers.get(_CONTENT_TYPE)
            check("POST", path, query_names(scope["query_string"]), content_type.decode("latin-1") if content_type is not None else None)
            authorization = headers.get(_AUTHORIZATION)
            caller = await check_access(gw, authorization.decode("latin-1") if authorization is not None else None, "send")
            limit = gw.max_batch_body_bytes if batch else gw.max_body_bytes
            body = await self._read_body(receive, headers.get(_CONTENT_LENGTH), limit)
            key = headers.get(_IDEMPOTENCY)
            submit = submit_batch if batch else submit_notification
            return await submit(gw, caller, body, key.decode("latin-1") if key is not None else None)
        except ProblemError as error:
            return problem_answer(error.problem, error.headers)
        except _TooLarge:
            return _too_large(gw, path)
        except _TooSlow:
            return _too_slow(self.gw.body_timeout_s)
        except PortUnavailable as exc:  # a Redis down: fast 503, and the next request after it is back succeeds
            return unavailable(exc)
        except Exception:
            log.exception("unhandled error on POST %s", path)
            return problem_answer(Problem(title="Internal Server Error", status=500, detail="unexpected error; see the server log"))

    async def _receipt(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> Answer:
        """A provider's delivery receipt (actors/api/webhooks.py), read up to RECEIPT_MAX_BODY."""
        path = scope["path"]
        if self.gw.draining.is_set():
            return problem_answer(Problem("Service Unavailable", 503, "shutting down"), {"Retry-After": "5"})
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body = await self._read_body(receive, headers.get("content-length", "").encode(), RECEIPT_MAX_BODY)
            return await answer_receipt(self.gw, WEBHOOK_PATHS[path], headers, scope["query_string"].decode("latin-1"), body)
        except ProblemError as error:
            return problem_answer(error.problem, error.headers)
        except _TooLarge:
            return problem_answer(Problem("Payload Too Large", 413, f"body over {RECEIPT_MAX_BODY} bytes"))
        except _TooSlow:
            return _too_slow(self.gw.body_timeout_s)
        except PortUnavailable as exc:
            return unavailable(exc)
        except Exception:
            log.exception("unhandled error on POST %s", path)
            return problem_answer(Problem(title="Internal Server Error", status=500, detail="unexpected error; see the server log"))

    async def _read_body(self, receive: ASGIReceiveCallable, content_length: bytes | None, limit: int) -> bytes:
        """The whole body within the gateway's `body_timeout_s` (else _TooSlow), at most `limit` bytes (else _TooLarge)."""
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            raise _TooLarge
        with trio.move_on_after(self.gw.body_timeout_s):
            return await self._receive_body(receive, limit)
        raise _TooSlow

    @staticmethod
    async def _receive_body(receive: ASGIReceiveCallable, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect, the only other event of an HTTP request
                raise _TooLarge if size > limit else ProblemError(Problem("Bad Request", 400, "the client went away"))
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _respond(send: ASGISendCallable, answer: Answer) -> None:
        headers = [(b"content-type", answer.content_type.encode()), (b"content-length", str(len(answer.body)).encode())]
        headers += [(name.lower().encode(), value.encode("latin-1")) for name, value in answer.headers.items()]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})
