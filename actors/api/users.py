"""Users: preferences, push devices, pending digests, and the one-click unsubscribe link.

Scopes: reading preferences or devices needs `read`; changing them needs `send` (the
backend that sends to a user is the one that knows where to reach them and registers
its app's push tokens; `admin` stays for operators). The pending digests also take a subscriber
token issued for the user in the path (actors/api/subscriber.py), as the inbox does. `/v1/unsubscribe` takes no API
key: its signed token is the authority, and it only ever opts a user out.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

import msgspec
from quart import Blueprint, Response, request

from protocol.ids import USER_ID_RULE, is_user_id
from protocol.parsing import DEVICE_TOKEN_PATTERN, PATTERN_SENTENCES
from protocol.preferences import Device, DeviceList, DeviceRequest, Platform, Preferences, Unsubscribed
from protocol.problems import FieldError, Problem
from reactor.clock import iso, wall_ms
from reactor.ports import DeviceRow

from ..domain.preferences import InvalidUnsubscribeToken, check_preferences, verify_unsubscribe_token
from ..services.credentials import learn_kid
from ..services.user_directory import UserDirectory
from .errors import ProblemError, authorize, bad_param, decode_body, json_response, read_body
from .subscriber import authorize_user

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_preferences_decoder = msgspec.json.Decoder(Preferences)
_device_decoder = msgspec.json.Decoder(DeviceRequest)
_PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def _user(user_id: str) -> str:
    if not is_user_id(user_id):
        raise bad_param("user_id", USER_ID_RULE)
    return user_id


def _device_view(row: DeviceRow) -> Device:
    return Device(Platform(row.platform), row.token, iso(row.registered_ms))


def _page(title: str, body: str, status: int = 200) -> Response:
    document = (
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">"
        f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title></head>"
        f"<body style=\"font-family: sans-serif; max-width: 32em; margin: 3em auto\">{body}</body></html>"
    )
    return Response(document, status=status, content_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


def blueprint(gw: Gateway, directory: UserDirectory) -> Blueprint:
    bp = Blueprint("users", __name__)

    @bp.get("/v1/users/<user_id>/preferences")
    async def get_preferences(user_id: str) -> Response:
        await authorize(gw, "read")
        return json_response(await directory.preferences(_user(user_id)))

    @bp.put("/v1/users/<user_id>/preferences")
    async def put_preferences(user_id: str) -> Response:
        await authorize(gw, "send")
        user_id = _user(user_id)
        prefs: Preferences = decode_body(_preferences_decoder, await read_body(gw))
        errors = check_preferences(prefs, await directory.known_zones())
        if errors:
            detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
            raise ProblemError(Problem("Unprocessable preferences", 422, detail, errors=errors))
        await directory.put_preferences(user_id, prefs, wall_ms())
        return json_response(prefs)

    @bp.get("/v1/users/<user_id>/digests")
    async def get_digests(user_id: str) -> Response:
        # an API key with `read`, or a subscriber token issued for this user (its own digests only)
        await authorize_user(gw, user_id, "read")
        user_id = _user(user_id)
        if gw.digests is None:
            raise ProblemError(Problem("Not Found", 404, "digests are not served by this node"))
        return json_response(await gw.digests.pending(user_id), headers={"Cache-Control": "no-store"})

    @bp.get("/v1/users/<user_id>/devices")
    async def get_devices(user_id: str) -> Response:
        await authorize(gw, "read")
        rows = await directory.devices(_user(user_id))
        return json_response(DeviceList([_device_view(r) for r in rows]))

    @bp.post("/v1/users/<user_id>/devices")
    async def post_device(user_id: str) -> Response:
        await authorize(gw, "send")
        user_id = _user(user_id)
        wanted: DeviceRequest = decode_body(_device_decoder, await read_body(gw))
        row = await directory.add_device(user_id, wanted.platform, wanted.token, wall_ms())
        return json_response(_device_view(row), 201)

    @bp.delete("/v1/users/<user_id>/devices/<token>")
    async def delete_device(user_id: str, token: str) -> Response:
        await authorize(gw, "send")
        if not re.search(DEVICE_TOKEN_PATTERN, token):
            raise bad_param("token", PATTERN_SENTENCES[DEVICE_TOKEN_PATTERN])
        if not await directory.remove_device(_user(user_id), token):
            message = f"{user_id} has no device with this token"
            raise ProblemError(Problem("Not Found", 404, message, errors=[FieldError("token", message)]))
        return Response(b"", status=204)

    async def _claims() -> tuple[str, str]:
        token = request.args.get("token")
        if not token:
            raise bad_param("token", "required: the token of the unsubscribe link")
        await learn_kid(gw.key_ring, token)
        try:
            user_id, category = verify_unsubscribe_token(gw.secret, token)
        except InvalidUnsubscribeToken as exc:
            raise bad_param("token", f"not a valid unsubscribe token ({exc})") from None
        return _user(user_id), category

    @bp.get("/v1/unsubscribe")
    async def unsubscribe_page() -> Response:
        # Never unsubscribes: link scanners and mail previews follow GET links.
        _, category = await _claims()
        action = html.escape(f"/v1/unsubscribe?token={request.args['token']}", quote=True)
        return _page("Unsubscribe", (
            f"<h1>Unsubscribe</h1><p>Stop receiving <strong>{html.escape(category)}</strong> notifications?</p>"
            f"<form method=\"post\" action=\"{action}\">"
            "<input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
            "<button type=\"submit\">Unsubscribe</button></form>"
        ))

    @bp.post("/v1/unsubscribe")
    async def unsubscribe() -> Response:
        # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click"; any body is accepted.
        user_id, category = await _claims()
        try:
            await directory.opt_out(user_id, category, wall_ms())
        except ValueError as exc:
            raise ProblemError(Problem("Conflict", 409, str(exc), errors=[FieldError("opt_out", str(exc))])) from None
        if request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html":
            message = f"You will no longer receive <strong>{html.escape(category)}</strong> notifications."
            return _page("Unsubscribed", f"<h1>Unsubscribed</h1><p>{message}</p>")
        return json_response(Unsubscribed(user_id, category), headers={"Cache-Control": "no-store"})

    return bp
