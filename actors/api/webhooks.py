"""POST /v1/webhooks/sendgrid and /v1/webhooks/twilio: providers' delivery receipts (actors/services/receipts.py).

No Herald API key: the provider's signature is the credential. Served on the ASGI fast path
(actors/api/fast_path.py) for their own body limit (RECEIPT_MAX_BODY: a SendGrid batch is
larger than the app-wide `max_body_bytes`); the Quart routes below answer the same through
the same function (and put the routes in the app's url_map and /openapi.json).

Answers: 200 with what was done (ReceiptCounts); 401 unsigned; 403 badly signed, stale or
replayed; 404 no provider of that kind configured for receipts; 413 too large; 415 not the
provider's body type; 422 a signed body that is not what the provider sends, naming the
field; 503 the State or the log store unreachable (the provider retries). Never a 500 for a
body a client controls.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from quart import Blueprint, Response, request

from protocol.problems import FieldError, Problem

from ..domain.receipts import SENDGRID_SIGNATURE, SENDGRID_TIMESTAMP, TWILIO_SIGNATURE, Malformed, Refused
from ..services.receipts import Unconfigured
from .errors import Answer, ProblemError, json_answer, problem_answer, to_response
from .request_rules import check, query_names

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

log = logging.getLogger("herald.gateway")

RECEIPT_MAX_BODY = 1024 * 1024  # SendGrid posts batches of up to 768 KB
PATHS = {"/v1/webhooks/sendgrid": "sendgrid", "/v1/webhooks/twilio": "twilio"}
_FORM = "application/x-www-form-urlencoded"
_TITLES = {401: "Unauthorized", 403: "Forbidden"}


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


async def answer_receipt(gw: Gateway, provider: str, headers: dict[str, str], query_string: str, body: bytes) -> Answer:
    """The answer to a receipt POST (headers: lower-case names)."""
    receipts = gw.receipts
    try:  # unknown query parameters (400) and, for SendGrid's JSON, the body type (415): as on every route
        check("POST", f"/v1/webhooks/{provider}", query_names(query_string.encode("latin-1")), headers.get("content-type"))
        if receipts is None:
            raise Unconfigured("this node takes no receipts")
        receipts.check_configured(provider)
        content_type = headers.get("content-type")
        if provider == "sendgrid":
            counts = await receipts.sendgrid(headers.get(SENDGRID_SIGNATURE.lower()), headers.get(SENDGRID_TIMESTAMP.lower()), body)
        else:
            if not headers.get(TWILIO_SIGNATURE.lower()):  # before anything of the body is read
                raise Refused(401, f"unsigned: {TWILIO_SIGNATURE} is required", TWILIO_SIGNATURE)
            if _media(content_type) != _FORM:
                raise _unsupported(_FORM, content_type)
            try:
                params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
                query = parse_qsl(query_string, keep_blank_values=True)
            except (UnicodeDecodeError, ValueError):
                raise Malformed("body", "not a UTF-8 form (name=value&...)") from None
            nid = dict(query).get("n")
            counts = await receipts.twilio(headers.get(TWILIO_SIGNATURE.lower()), query_string, params, nid)
        return json_answer(counts)
    except Refused as exc:
        log.info("receipts: %s receipt refused: %s", provider, exc)  # INFO: anyone can post one
        challenge = {"WWW-Authenticate": f'Signature realm="{provider}"'} if exc.status == 401 else {}
        return problem_answer(Problem(_TITLES[exc.status], exc.status, f"{provider} receipt refused: {exc}",
                                      errors=[FieldError(exc.header, str(exc))]), challenge)
    except Malformed as exc:
        return problem_answer(Problem("Unprocessable receipt", 422, str(exc), errors=[FieldError(exc.field, exc.message)]))
    except Unconfigured as exc:
        return problem_answer(Problem("Not Found", 404, f"{provider} receipts: {exc}"))
    except ProblemError as exc:
        return problem_answer(exc.problem, exc.headers)


def _unsupported(expected: str, got: str | None) -> ProblemError:
    detail = f"Content-Type: expected {expected}, got {got!r}"
    return ProblemError(Problem("Unsupported Media Type", 415, detail, errors=[FieldError("Content-Type", f"expected {expected}")]))


def blueprint(gw: Gateway) -> Blueprint:
    bp = Blueprint("webhooks", __name__)

    async def _receipt(provider: str) -> Response:
        length = request.content_length
        if length is not None and length > gw.max_body_bytes:  # beyond Quart's own limit; the fast path reads more
            return to_response(problem_answer(Problem("Payload Too Large", 413, f"body over {gw.max_body_bytes} bytes")))
        body = await request.get_data(cache=False, as_text=False, parse_form_data=False)
        headers = {k.lower(): v for k, v in request.headers.items()}
        return to_response(await answer_receipt(gw, provider, headers, request.query_string.decode("latin-1"), body))

    @bp.post("/v1/webhooks/sendgrid")
    async def sendgrid_receipts() -> Response:
        return await _receipt("sendgrid")

    @bp.post("/v1/webhooks/twilio")
    async def twilio_receipts() -> Response:
        return await _receipt("twilio")

    return bp
