"""The subscriber frame written straight to the socket (actors/api/direct_frames.py): framed as wsproto frames it,
and taken only while nothing else may be writing to the connection."""

from __future__ import annotations

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from actors.api.direct_frames import text_frame, write_now


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_text_frame_is_wsprotos_server_frame(size: int) -> None:
    payload = ("x" * size).encode()
    expected = bytes(FrameProtocol(client=False, extensions=[]).send_data(payload.decode(), fin=True))
    assert text_frame(payload) == expected


def test_a_client_parses_it_back() -> None:
    payload = '{"type":"notification","title":"é ✓"}'.encode()
    client = FrameProtocol(client=True, extensions=[])
    client.receive_bytes(text_frame(payload))
    frames = list(client.received_frames())
    assert len(frames) == 1 and frames[0].opcode is Opcode.TEXT and frames[0].message_finished
    assert frames[0].payload == payload.decode()


def test_not_hypercorns_send_goes_the_ordinary_way() -> None:
    async def send(message: dict) -> None:  # an ASGI send of another server (or a test's)
        return None

    assert write_now(send, b"{}") is None
