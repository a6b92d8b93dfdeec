"""Pure data: ids, lifecycle edges, wire formats, problem payloads."""

import msgspec
import pytest
from hypothesis import given, strategies as st

from actors.ingress import topic_send_problem
from protocol.api import NotificationRequest
from protocol.channels import Channel
from protocol.content import Content, WebContent
from protocol.frames import Ack, NotificationFrame, Ping, Sync, client_frame_decoder, frame_encoder, server_frame_decoder
from protocol.ids import is_notification_id, make_notification_id, notification_id_ms
from protocol.lifecycle import EDGES, FINAL, IllegalTransition, Status, advance, can_advance
from protocol.messages import Delivery, UnknownRecordVersion, decode_delivery, encode_delivery
from protocol.problems import invalid


@given(st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1), st.integers(0, 2**48 - 1), st.integers(0, 2**80 - 1))
def test_ids_sort_by_time_and_carry_it(ms_a, ent_a, ms_b, ent_b):
    a, b = make_notification_id(ms_a, ent_a), make_notification_id(ms_b, ent_b)
    assert is_notification_id(a)
    assert notification_id_ms(a) == ms_a
    if ms_a < ms_b:
        assert a < b
    if ms_a == ms_b and ent_a < ent_b:
        assert a < b


def test_lifecycle_moves_forward_only():
    assert advance(None, Status.ACCEPTED) is Status.ACCEPTED
    assert advance(Status.QUEUED, Status.DELIVERED) is Status.DELIVERED  # skipping ahead along a path
    with pytest.raises(IllegalTransition):
        advance(Status.DELIVERED, Status.QUEUED)
    with pytest.raises(IllegalTransition):
        advance(Status.FAILED, Status.SENT)
    for final in (Status.FAILED, Status.DEAD_LETTERED, Status.READ):
        assert not EDGES[final]
    assert FINAL >= {Status.DELIVERED, Status.FAILED, Status.DEAD_LETTERED}


@given(st.sampled_from(list(Status)), st.sampled_from(list(Status)))
def test_no_cycles_in_the_lifecycle(a, b):
    assert not (can_advance(a, b) and can_advance(b, a))


def test_bus_record_round_trip_and_version_check():
    delivery = Delivery("01ARZ3NDEKTSV4RRFFQ69G5FAV", "u1", Channel.WEB, 1, Content(web=WebContent(title="hi")))
    assert decode_delivery(encode_delivery(delivery)) == delivery
    future = msgspec.json.encode({**msgspec.to_builtins(delivery), "v": 2})
    with pytest.raises(UnknownRecordVersion):
        decode_delivery(future)


def test_frames_are_tagged():
    assert client_frame_decoder.decode(b'{"type":"ping"}') == Ping()
    assert client_frame_decoder.decode(b'{"type":"ack","id":"X"}') == Ack("X")
    assert client_frame_decoder.decode(b'{"type":"sync"}') == Sync(None)
    frame = NotificationFrame(id="X", created_at="2026-01-01T00:00:00.000Z", title="t")
    assert server_frame_decoder.decode(frame_encoder.encode(frame)) == frame
    with pytest.raises(msgspec.ValidationError):
        client_frame_decoder.decode(b'{"type":"ack"}')


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"user_id": 5, "channels": ["web"], "content": {}}', "user_id"),
        (b'{"user_id": "u", "channels": ["fax"], "content": {}}', "channels.0"),
        (b'{"user_id": "u", "channels": ["web"], "content": {"web": {"title": ""}}}', "content.web.title"),
        (b'{"user_id": "u", "channels": ["web"], "content": {}, "extra": 1}', "extra"),
        (b'{"user_id": "u", "channels": ["sms"], "content": {}, "to": {"phone": "555"}}', "to.phone"),
        (b'{"topic": "Not A Topic", "channels": ["web"], "content": {}}', "topic"),
    ],
)
def test_validation_errors_name_the_field(body, field):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=NotificationRequest)
    problem = invalid(str(info.value))
    assert problem.status == 400
    assert problem.errors[0].field == field, problem


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"channels": ["web"], "content": {}}', "user_id"),  # neither user_id nor topic
        (b'{"user_id": "u", "topic": "t", "channels": ["web"], "content": {}}', "topic"),
        (b'{"topic": "t", "channels": ["sms"], "content": {}, "to": {"phone": "+15555550100"}}', "to"),
    ],
)
def test_a_send_names_exactly_one_audience(body, field):
    """What the schema cannot say (exactly one of user_id and topic; no `to` with a topic): the Ingress's 422."""
    problem = topic_send_problem(msgspec.json.decode(body, type=NotificationRequest))
    assert problem is not None and problem.status == 422 and problem.errors[0].field == field, problem
    assert topic_send_problem(msgspec.json.decode(b'{"topic": "t", "channels": ["web"]}', type=NotificationRequest)) is None
