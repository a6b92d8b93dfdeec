"""The WebSocket session: heartbeat, acks, sync after reconnect."""

from __future__ import annotations

from typing import Any

import msgspec
import trio
from quart import Blueprint, websocket

from protocol.channels import Channel
from protocol.frames import Ack, CloseCode, ErrorFrame, Ping, Pong, Sync, Synced, client_frame_decoder, frame_encoder
from protocol.ids import is_notification_id, notification_id_ms
from protocol.lifecycle import Status
from protocol.messages import StatusEvent
from reactor.clock import wall_ms
from reactor.mailbox import MailboxClosed

from ..auth import InvalidToken, verify_token
from ..clients.web import notification_frame
from ..messages import Record, Register, Unregister
from ..sessions import Session

_PONG = frame_encoder.encode(Pong())


def blueprint(gw: Any) -> Blueprint:
    bp = Blueprint("realtime", __name__)

    @bp.websocket("/v1/ws")
    async def ws() -> None:
        await websocket.accept()
        try:
            user_id = verify_token(gw.secret, websocket.args.get("token", ""), wall_ms())
        except InvalidToken as exc:
            await websocket.close(CloseCode.UNAUTHORIZED, str(exc))
            return
        await _serve_session(gw, user_id)

    return bp


async def _serve_session(gw: Any, user_id: str) -> None:
    session = Session(user_id, gw.session_queue)
    await gw.registry.send(Register(session))
    gw.sessions_opened += 1
    last_seen = trio.current_time()
    try:
        async with trio.open_nursery() as nursery:

            async def sender() -> None:
                async for frame in session.outbound:
                    await websocket.send(frame.decode())
                await websocket.close(session.close_code or 1000, session.close_reason)
                nursery.cancel_scope.cancel()

            async def watchdog() -> None:
                while True:
                    await trio.sleep(gw.heartbeat_s)
                    if trio.current_time() - last_seen > 3 * gw.heartbeat_s:
                        session.close(CloseCode.HEARTBEAT_MISSED, "3 heartbeats missed")
                        return

            async def drain_watch() -> None:
                await gw.draining.wait()
                session.close(CloseCode.SHUTTING_DOWN, "server shutting down; reconnect later")

            nursery.start_soon(sender)
            nursery.start_soon(watchdog)
            nursery.start_soon(drain_watch)
            while True:
                raw = await websocket.receive()
                last_seen = trio.current_time()
                try:
                    frame = client_frame_decoder.decode(raw)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    session.offer(None, frame_encoder.encode(ErrorFrame(f"bad frame: {exc}")))
                    continue
                if isinstance(frame, Ping):
                    session.offer(None, _PONG)
                elif isinstance(frame, Ack):
                    await _ack(gw, session, frame.id)
                elif isinstance(frame, Sync):
                    await _sync(gw, session, frame.last_id)
    finally:
        session.close(1000, "")
        with trio.CancelScope(shield=True):
            try:
                await gw.registry.send(Unregister(session))
            except MailboxClosed:
                pass


async def _ack(gw: Any, session: Session, notification_id: str) -> None:
    if not session.was_sent(notification_id):
        session.offer(None, frame_encoder.encode(ErrorFrame(f"ack of {notification_id}: not sent on this session")))
        return
    at = wall_ms()
    event = StatusEvent(
        notification_id, session.user_id, Channel.WEB, Status.DELIVERED, at, detail="acknowledged by the client",
        created_ms=notification_id_ms(notification_id),
    )
    await gw.recorder.send(Record((event,)))


async def _sync(gw: Any, session: Session, last_id: str | None) -> None:
    """Replay what the user missed after `last_id`, then say so; live frames keep flowing meanwhile."""
    if last_id is not None and not is_notification_id(last_id):
        session.offer(None, frame_encoder.encode(ErrorFrame("sync: last_id is not a notification id")))
        return
    count = 0
    after = last_id
    while True:
        entries = await gw.logstore.inbox_after(session.user_id, after, 200)
        for entry in entries:
            if await session.replay(entry.notification_id, notification_frame(entry)):
                count += 1
        if len(entries) < 200:
            break
        after = entries[-1].notification_id
    session.offer(None, frame_encoder.encode(Synced(count)))


