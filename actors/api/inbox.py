"""The in-app inbox: list, unread count, mark read, mark all read, archive.

Each route takes an API key (scope `read` to look, `send` to change) or a subscriber
token issued for the user in the path (actors/api/subscriber.py). A change is asked of
the Recorder (ChangeInbox: it is the log store's only writer), which writes it together
with the web channel's `read` status of each entry a read changes and answers, once that
is durable, with what changed; that is then pushed to the user's open sessions as a
read, read_all or archived frame, so their other tabs and devices follow. Only the user's own
inbox rows change (a notification id from another inbox is a 404), and the `read` status
event is a client event: it never creates a status row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec
from quart import Blueprint, Response, request

from protocol.frames import ArchivedFrame, ReadAllFrame, ReadFrame, frame_encoder
from protocol.ids import USER_ID_RULE, is_notification_id, is_user_id
from protocol.inbox import InboxItem, InboxPage, ReadAllRequest, ReadAllResult, UnreadCount
from protocol.problems import Problem
from protocol.write_plan import InboxAction, InboxChange, InboxChanged
from reactor.ask import ask
from reactor.clock import iso, wall_ms
from reactor.mailbox import MailboxClosed
from reactor.ports import InboxRow, InvalidCursor

from ..messages import Broadcast, ChangeInbox
from .errors import ProblemError, bad_param, decode_body, json_response, limit_param, read_body, served
from .subscriber import authorize_user

if TYPE_CHECKING:  # gateway.py imports this module
    from .gateway import Gateway

_read_all_decoder: msgspec.json.Decoder[ReadAllRequest] = msgspec.json.Decoder(ReadAllRequest)
_NOTIFICATION_ID = "not a notification id (26 characters, Crockford base32)"


def inbox_item(row: InboxRow) -> InboxItem:
    """The API view of an inbox row."""
    entry = row.entry
    return InboxItem(
        id=entry.notification_id,
        created_at=iso(entry.created_ms),
        title=entry.title,
        body=entry.body,
        url=entry.url,
        data=entry.data,
        read_at=None if row.read_ms is None else iso(row.read_ms),
        archived_at=None if row.archived_ms is None else iso(row.archived_ms),
    )


def _check_user(user_id: str) -> None:
    if not is_user_id(user_id):
        raise bad_param("user_id", USER_ID_RULE)


def _flag(name: str, value: str | None) -> bool:
    """A boolean query parameter: true/false (1/0); absent is false."""
    if value is None or value in ("false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise bad_param(name, "true or false")


def blueprint(gw: Gateway) -> Blueprint:
    """The /v1/users/{user_id}/inbox routes."""
    bp = Blueprint("inbox", __name__)

    async def entry_of(user_id: str, nid: str) -> InboxRow:
        if not is_notification_id(nid):
            raise bad_param("notification_id", _NOTIFICATION_ID)
        row: InboxRow | None = await gw.logstore.inbox_get(user_id, nid)
        if row is None:
            raise ProblemError(Problem("Not Found", 404, f"no notification {nid} in the inbox of {user_id}"))
        return row

    async def change(wanted: InboxChange) -> InboxChanged:
        """Ask the Recorder for an inbox change; what changed, once it is durable (a read's `read` statuses too)."""
        return await ask(gw.recorder.send, lambda reply: ChangeInbox(wanted, reply))

    async def broadcast(user_id: str, kind: str, frame: bytes) -> None:
        """Push an inbox-state frame to the user's open sessions (skipped if the node is stopping)."""
        try:
            await served(gw.registry, "registry mailbox").send(Broadcast(user_id, kind, frame))
        except MailboxClosed:
            pass

    @bp.get("/v1/users/<user_id>/inbox")
    async def get_inbox(user_id: str) -> Response:
        await authorize_user(gw, user_id, "read")
        _check_user(user_id)
        args = request.args
        unread, archived = _flag("unread", args.get("unread")), _flag("archived", args.get("archived"))
        limit = limit_param(args.get("limit"))
        try:
            rows, cursor = await gw.logstore.inbox_page(
                user_id, unread=unread, archived=archived, cursor=args.get("cursor"), limit=limit
            )
        except InvalidCursor as exc:
            raise bad_param("cursor", str(exc)) from None
        return json_response(InboxPage([inbox_item(r) for r in rows], cursor))

    @bp.get("/v1/users/<user_id>/inbox/unread_count")
    async def get_unread_count(user_id: str) -> Response:
        await authorize_user(gw, user_id, "read")
        _check_user(user_id)
        return json_response(UnreadCount(await gw.logstore.inbox_unread_count(user_id)))

    @bp.post("/v1/users/<user_id>/inbox/<nid>/read")
    async def post_read(user_id: str, nid: str) -> Response:
        await authorize_user(gw, user_id, "send")
        _check_user(user_id)
        await entry_of(user_id, nid)
        now = wall_ms()
        changed = await change(InboxChange(user_id, InboxAction.READ, now, ids=(nid,)))
        if changed.ids:
            await broadcast(user_id, "read", frame_encoder.encode(ReadFrame(list(changed.ids), iso(now))))
        return json_response(inbox_item(await entry_of(user_id, nid)))

    @bp.post("/v1/users/<user_id>/inbox/read_all")
    async def post_read_all(user_id: str) -> Response:
        await authorize_user(gw, user_id, "send")
        _check_user(user_id)
        body = await read_body(gw)
        wanted = decode_body(_read_all_decoder, body) if body.strip() else ReadAllRequest()
        if wanted.through is not None:
            if not is_notification_id(wanted.through):
                raise bad_param("through", _NOTIFICATION_ID)
            if await gw.logstore.inbox_get(user_id, wanted.through) is None:
                raise ProblemError(Problem("Not Found", 404, f"no notification {wanted.through} in the inbox of {user_id}"))
        now = wall_ms()
        changed = await change(InboxChange(user_id, InboxAction.READ_ALL, now, through=wanted.through))
        count, through = len(changed.ids), changed.through
        if count:
            await broadcast(user_id, "read_all", frame_encoder.encode(ReadAllFrame(through, count, iso(now))))
        return json_response(ReadAllResult(count, through, iso(now)))

    @bp.post("/v1/users/<user_id>/inbox/<nid>/archive")
    async def post_archive(user_id: str, nid: str) -> Response:
        await authorize_user(gw, user_id, "send")
        _check_user(user_id)
        await entry_of(user_id, nid)
        now = wall_ms()
        if (await change(InboxChange(user_id, InboxAction.ARCHIVE, now, ids=(nid,)))).ids:
            await broadcast(user_id, "archived", frame_encoder.encode(ArchivedFrame([nid], iso(now))))
        return json_response(inbox_item(await entry_of(user_id, nid)))

    return bp
