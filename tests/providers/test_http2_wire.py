"""The HTTP/2 frame layer of the client (actors/clients/http2_wire.py) against h2, which it replaced.

The differential test: Hypothesis drives an h2 *server* connection through a script (answers
with 1xx first or not, bodies in padded chunks, trailers, content-lengths right and wrong,
RST_STREAM with any code, GOAWAY, SETTINGS changes, WINDOW_UPDATEs, PINGs, PRIORITY, unknown
frames, header blocks long enough for CONTINUATION, hpack's dynamic table and Huffman coding),
may break the bytes it wrote (a byte changed, a raw frame of any type, flags and length put in,
the tail cut), cuts them at random points and feeds the same pieces to h2's client (configured
as http2.py had it, with its GOAWAY state machine and its check of the first frame) and to
H2Wire. They must agree on what each stream gets as http2.py reads it (its status and headers,
its body, its end or its reset code, or the connection's failure), on the GOAWAY's last stream,
the server's stream limit, the windows left for sending, and the PINGs answered.

Then focused tests: each connection error with its code, flow control both ways, the request's
header block.
"""

from __future__ import annotations

import struct
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actors.clients import http2_wire as wire
from actors.clients.http2 import MAX_HEAD, WINDOW

Outcome = dict[str, Any]


class KeepReading(h2.connection.H2ConnectionStateMachine):
    """As http2.py had it: a GOAWAY leaves the connection open, the streams it covers are read to their end."""

    _transitions = {**h2.connection.H2ConnectionStateMachine._transitions,
                    (h2.connection.ConnectionState.CLIENT_OPEN, h2.connection.ConnectionInputs.RECV_GOAWAY):
                        (None, h2.connection.ConnectionState.CLIENT_OPEN)}


def h2_client() -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=True, header_encoding=None, validate_outbound_headers=False,
                                       normalize_outbound_headers=False, validate_inbound_headers=False,
                                       normalize_inbound_headers=False)
    conn = h2.connection.H2Connection(config)
    conn.state_machine = KeepReading()
    conn.local_settings = h2.settings.Settings(client=True, initial_values={
        h2.settings.SettingCodes.ENABLE_PUSH: 0, h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEAD,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 0})
    conn.initiate_connection()
    conn.increment_flow_control_window(WINDOW - 65535)
    return conn


REQUEST = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"fcm.example"), (b":path", b"/v1/send"),
           (b"authorization", b"bearer tok"), (b"content-type", b"application/json"), (b"content-length", b"2")]


def frames_of(data: bytes, whole: bool = False) -> list[tuple[int, int, int, bytes]]:
    """The frames in bytes (a client's output after its preface, or a server's): (type, flags, stream id, payload);
    `whole`: only those that came whole."""
    if data.startswith(wire.PREFACE):
        data = data[len(wire.PREFACE):]
    out = []
    while len(data) >= 9:
        length = int.from_bytes(data[:3], "big")
        if whole and len(data) < 9 + length:
            break
        out.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9:9 + length]))
        data = data[9 + length:]
    return out


def pings(data: bytes) -> list[bytes]:
    return [payload for kind, flags, _, payload in frames_of(data) if kind == wire.PING and flags & wire.ACK]


def bad_setting(key: int, value: int) -> bool:
    """A SETTINGS value RFC 9113 6.5.2 (and RFC 8441) refuse."""
    return (key in (wire.ENABLE_PUSH, wire.ENABLE_CONNECT_PROTOCOL) and value > 1 or key == wire.INITIAL_WINDOW_SIZE and value > 2**31 - 1
            or key == wire.MAX_FRAME_SIZE and not 16384 <= value <= 2**24 - 1)


def lax_on_settings(payload: bytes) -> bool:
    """A SETTINGS frame the RFC refuses and h2 takes: h2 reads it into a dict, so of a setting given twice it checks the
    last value only."""
    entries = [struct.unpack(">HL", payload[at:at + 6]) for at in range(0, len(payload), 6)]
    return any(bad_setting(k, v) for k, v in entries) and not any(bad_setting(k, v) for k, v in dict(entries).items())


def first_frame_refused(head: bytes) -> bool:
    """http2.py's check before h2 saw a byte: the server's first frame must be SETTINGS."""
    return head[3] != 4 or bool(head[4] & 1) or head[5:9] != b"\0\0\0\0" or int.from_bytes(head[:3], "big") % 6 != 0


def by_h2(pieces: list[bytes], requests: list[bool]) -> Outcome:
    """What h2 makes of it; an ALTSVC frame (RFC 7838), which hyperframe parses and h2 fails on when it is short,
    read as a frame of an unknown type (ignored, RFC 9113 5.5): the wire implements no extension."""
    altsvc = hyperframe.frame.FRAMES.pop(0xA)
    try:
        return _by_h2(pieces, requests)
    finally:
        hyperframe.frame.FRAMES[0xA] = altsvc


def _by_h2(pieces: list[bytes], requests: list[bool]) -> Outcome:
    conn = h2_client()
    ids = []
    for ended in requests:
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, REQUEST, end_stream=ended)
        ids.append(stream_id)
    conn.data_to_send()
    streams: dict[int, dict[str, Any]] = {i: {"headers": None, "body": b"", "end": None} for i in ids}
    outcome: Outcome = {"failed": False, "goaway": None, "max_streams": None, "settled": False}
    head = b""
    sent = b""
    seen_bytes = b""
    for piece in pieces:
        seen_bytes += piece
        frames = frames_of(seen_bytes, whole=True)
        if any(kind in (wire.RST_STREAM, wire.WINDOW_UPDATE) and stream_id and (not stream_id & 1 or stream_id > ids[-1])
               for kind, _, stream_id, _ in frames):
            outcome["failed"] = True  # RST_STREAM or WINDOW_UPDATE on an idle stream: h2 ignores it, RFC 9113 6.4 and 5.1 do not
            outcome["why"] = "on an idle stream"
            break
        if any(kind == wire.PUSH_PROMISE for kind, _, _, _ in frames):
            outcome["failed"] = True  # h2 fails on it once its header block is whole; the wire at once
            outcome["why"] = "PUSH_PROMISE"
            break
        if any(lax_on_settings(payload) for kind, flags, stream_id, payload in frames
               if kind == wire.SETTINGS and not flags & wire.ACK and not stream_id and len(payload) % 6 == 0):
            outcome["failed"] = True  # a value out of range for a setting repeated in the frame: h2 checks only the last one
            outcome["why"] = "a repeated setting's earlier value out of range"
            break
        if not outcome["settled"]:
            head += piece
            if len(head) >= 9 and first_frame_refused(head):
                outcome["failed"] = True
                break
        try:
            events = conn.receive_data(piece)
        except h2.exceptions.ProtocolError as exc:
            outcome["failed"] = True
            outcome["why"] = f"{type(exc).__name__}: {exc}"
            break
        pending = bytes(conn.incoming_buffer._data)
        if len(pending) >= 9 and int.from_bytes(pending[:3], "big") > conn.max_inbound_frame_size:
            outcome["failed"] = True  # h2 checks a frame's length once the frame came whole (it would fail then)
            outcome["why"] = "frame too large (when whole)"
            break
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                streams[event.stream_id]["headers"] = [tuple(h) for h in event.headers]
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in streams:
                    streams[event.stream_id]["body"] += event.data
            elif isinstance(event, h2.events.StreamEnded):
                if streams[event.stream_id]["end"] is None:
                    streams[event.stream_id]["end"] = "ended"
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id in streams and streams[event.stream_id]["end"] is None:
                    streams[event.stream_id]["end"] = f"reset {int(event.error_code)}"
            elif isinstance(event, h2.events.ConnectionTerminated):  # a later GOAWAY may not raise it (RFC 9113 6.8)
                last = event.last_stream_id & 0x7FFFFFFF  # h2 keeps the reserved bit, which RFC 9113 6.8 says to ignore
                outcome["goaway"] = last if outcome["goaway"] is None else min(outcome["goaway"], last)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                outcome["settled"] = True
                outcome["max_streams"] = min(1000, conn.remote_settings.max_concurrent_streams)
        sent += conn.data_to_send()
    if not outcome["failed"]:
        outcome["windows"] = {i: min(conn.local_flow_control_window(i), conn.max_outbound_frame_size)
                              for i in ids if not requests[ids.index(i)] and streams[i]["end"] is None}
    outcome["pings"] = pings(sent)
    outcome["streams"] = streams
    return outcome


def by_wire(pieces: list[bytes], requests: list[bool]) -> Outcome:
    conn = wire.H2Wire(MAX_HEAD, WINDOW)
    conn.start()
    block = b"".join(wire.header_bytes(name, value) for name, value in REQUEST)
    ids = [conn.open(block, ended) for ended in requests]
    conn.data_to_send()
    streams: dict[int, dict[str, Any]] = {i: {"headers": None, "body": b"", "end": None} for i in ids}
    outcome: Outcome = {"failed": False, "goaway": None, "max_streams": None, "settled": False}
    sent = b""
    for piece in pieces:
        try:
            events = conn.receive(piece)
        except wire.ProtocolError as exc:
            outcome["failed"] = True
            outcome["why"] = f"{wire.error_name(exc.code)}: {exc}"
            break
        for event in events:
            kind = event[0]
            if kind == wire.RESPONSE:
                streams[event[1]]["headers"] = [tuple(h) for h in event[2]]
            elif kind == wire.BODY:
                streams[event[1]]["body"] += event[2]
            elif kind == wire.ENDED:
                if streams[event[1]]["end"] is None:
                    streams[event[1]]["end"] = "ended"
            elif kind == wire.RESET:
                if streams[event[1]]["end"] is None:
                    streams[event[1]]["end"] = f"reset {event[2]}"
            elif kind == wire.GOAWAY_RECEIVED:
                outcome["goaway"] = event[1]
            elif kind == wire.SETTINGS_CHANGED:
                outcome["settled"] = True
                outcome["max_streams"] = min(1000, conn.max_streams)
        sent += conn.data_to_send()
    if not outcome["failed"]:
        outcome["windows"] = {i: conn.window_of(i) for i in ids if not requests[ids.index(i)] and streams[i]["end"] is None}
    outcome["pings"] = pings(sent)
    outcome["streams"] = streams
    return outcome


def seen(outcome: Outcome) -> Outcome:
    """What http2.py makes of it: a failed connection fails every stream not ended or reset before."""
    if outcome["failed"]:
        for stream in outcome["streams"].values():
            if stream["end"] is None:
                stream.update(headers=None, body=b"", end="failed")
        outcome.pop("pings")  # those answered before the failing piece: h2 loses the piece's, as we do
        outcome.pop("settled"), outcome.pop("max_streams")  # nothing to http2.py once failed (h2 may fail a piece later:
        # it holds a header block, PUSH_PROMISE's too, until it is whole; the wire refuses PUSH_PROMISE at once)
    elif outcome["goaway"] is not None:  # h2 drops what it had still to send on a GOAWAY (PING answers too); we send it
        outcome.pop("pings")
    return outcome


STATUSES = st.sampled_from([b"200", b"201", b"204", b"400", b"404", b"410", b"429", b"500", b"503", b"100", b"103", b"abc", b"2000"])
NAMES = st.sampled_from([b"content-type", b"retry-after", b"apns-id", b"x-long", b"content-length", b"set-cookie", b"grpc-status"])
VALUES = st.one_of(st.sampled_from([b"application/json", b"0", b"2", b"5", b"12", b"x" * 300, b"", b"\xe9t\xe9"]),
                   st.binary(max_size=20).map(lambda b: b.replace(b"\0", b"0")))

CODES = st.sampled_from([0, 1, 2, 3, 5, 7, 8, 11, 13, 99])


@st.composite
def scripts(draw: st.DrawFn) -> tuple[list[bytes], list[bool]]:
    """A server's output for 1-4 requests, as h2's server side writes it, maybe broken; cut into pieces."""
    requests = draw(st.lists(st.booleans(), min_size=1, max_size=4))  # each: ended with its headers (else a body pends)
    client = h2_client()
    for ended in requests:
        client.send_headers(client.get_next_available_stream_id(), REQUEST, end_stream=ended)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
    initial = {}
    if draw(st.booleans()):
        initial[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = draw(st.sampled_from([4, 100, 2**31 - 1]))
    if draw(st.booleans()):
        initial[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = draw(st.sampled_from([0, 10, 65535, 2**20]))
    server.local_settings = h2.settings.Settings(client=False, initial_values=initial)
    server.initiate_connection()
    out = [server.data_to_send()]
    server.receive_data(client.data_to_send())
    ids = [1 + 2 * n for n in range(len(requests))]
    answered: set[int] = set()
    for _ in range(draw(st.integers(0, 20))):
        action = draw(st.sampled_from(["headers", "headers", "data", "data", "data", "data", "trailers", "reset", "goaway", "settings",
                                       "window", "ping", "priority", "unknown", "info", "long"]))
        stream_id = draw(st.sampled_from(ids))
        try:
            if action in ("headers", "info", "long"):
                status = draw(st.sampled_from([b"100", b"103"])) if action == "info" else draw(STATUSES)
                fields = [(b":status", status)] + draw(st.lists(st.tuples(NAMES, VALUES), max_size=3))
                if action == "long":  # beyond a frame: CONTINUATION
                    fields.append((b"x-long", draw(st.sampled_from([b"a", b"b"])) * draw(st.integers(16000, 40000))))
                server.send_headers(stream_id, fields, end_stream=action != "info" and draw(st.booleans()))
                answered.add(stream_id)
            elif action == "data":
                if stream_id not in answered:  # an answer's headers first, as a rule
                    server.send_headers(stream_id, [(b":status", b"200")] + draw(st.lists(st.tuples(NAMES, VALUES), max_size=2)))
                    answered.add(stream_id)
                    out.append(server.data_to_send())
                size = draw(st.integers(0, 3000))
                server.send_data(stream_id, bytes([draw(st.integers(0, 255))]) * size, end_stream=draw(st.booleans()),
                                 pad_length=draw(st.sampled_from([None, None, 0, 7, 255])))
            elif action == "trailers":
                server.send_headers(stream_id, draw(st.lists(st.tuples(NAMES, VALUES), min_size=1, max_size=2)), end_stream=True)
            elif action == "reset":
                server.reset_stream(stream_id, draw(CODES))
            elif action == "goaway":
                out.append(server.data_to_send())
                out.append(wire.frame(wire.GOAWAY, 0, 0, struct.pack(">LL", draw(st.sampled_from([0, 1, 3, 5, 7])), draw(CODES))))
            elif action == "settings":
                change = draw(st.sampled_from([
                    (h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS, draw(st.sampled_from([0, 1, 3, 1000]))),
                    # not up to 2^31-1: h2 applies the change to closed streams too, and fails on their overflow
                    (h2.settings.SettingCodes.INITIAL_WINDOW_SIZE, draw(st.sampled_from([0, 1, 100, 65535, 2**20]))),
                    (h2.settings.SettingCodes.MAX_FRAME_SIZE, draw(st.sampled_from([16384, 20000, 2**24 - 1]))),
                    (h2.settings.SettingCodes.HEADER_TABLE_SIZE, draw(st.sampled_from([0, 100, 4096, 65536]))),
                ]))
                server.update_settings(dict([change]))
            elif action == "window":
                on = draw(st.sampled_from([None, stream_id]))  # a stream's window by a little (its overflow: a focused test)
                server.increment_flow_control_window(draw(st.sampled_from([1, 1000, 2**30] if on is None else [1, 1000, 2**20])), on)
            elif action == "ping":
                server.ping(draw(st.binary(min_size=8, max_size=8)))
            elif action == "priority":
                out.append(server.data_to_send())
                out.append(wire.frame(wire.PRIORITY, 0, stream_id, b"\0\0\0\0\x10"))
            elif action == "unknown":
                out.append(server.data_to_send())
                out.append(wire.frame(draw(st.integers(10, 255)), draw(st.integers(0, 255)), draw(st.sampled_from([0, stream_id])),
                                      draw(st.binary(max_size=20))))
        except (h2.exceptions.ProtocolError, h2.exceptions.FlowControlError, ValueError):
            pass  # not allowed now (h2's server refuses it): not sent
        out.append(server.data_to_send())
    data = b"".join(out)
    broken = draw(st.sampled_from(["no", "no", "no", "byte", "frame", "tail", "frame"]))
    if broken == "byte" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1:]
    elif broken == "frame":
        kind = draw(st.integers(0, 12))
        length = draw(st.sampled_from([0, 1, 4, 5, 6, 8, 9, 12, 16385]))
        raw = struct.pack(">L", length)[1:] + bytes([kind, draw(st.integers(0, 255))]) + struct.pack(
            ">L", draw(st.sampled_from([0, 1, 2, 3, 5, 9, 2**31 + 1]))) + draw(st.binary(min_size=min(length, 40), max_size=min(length, 40)))
        raw += b"\0" * (length - min(length, 40)) if length <= 16384 else b""
        at = draw(st.integers(1, 3))  # after the first few frames
        frames = frames_of(wire.PREFACE + data)
        whole = b"".join(wire.frame(k, f, s, p) for k, f, s, p in frames[:at])
        data = data[:len(whole)] + raw + data[len(whole):]
    elif broken == "tail" and data:
        data = data[:draw(st.integers(0, len(data)))]
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=5)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return [p for p in pieces if p], requests


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scripts())
def test_the_wire_and_h2_agree_on_what_each_stream_gets(script: tuple[list[bytes], list[bool]]) -> None:
    pieces, requests = script
    # h2 (hyperframe) refuses a WINDOW_UPDATE whose reserved bit is set; RFC 9113 6.9 says to ignore the bit, as the wire does
    assume(not any(kind == wire.WINDOW_UPDATE and len(payload) == 4 and payload[0] & 0x80
                   for kind, _, _, payload in frames_of(b"".join(pieces), whole=True)))
    ours, theirs = seen(by_wire(pieces, requests)), seen(by_h2(pieces, requests))
    why = (ours.pop("why", None), theirs.pop("why", None))
    assert ours == theirs, (why, frames_of(b"".join(pieces))[:12])


# focused tests


def settings_frame(**values: int) -> bytes:
    codes = {"max_streams": wire.MAX_CONCURRENT_STREAMS, "window": wire.INITIAL_WINDOW_SIZE, "frame": wire.MAX_FRAME_SIZE,
             "table": wire.HEADER_TABLE_SIZE, "push": wire.ENABLE_PUSH, "connect": wire.ENABLE_CONNECT_PROTOCOL}
    return wire.frame(wire.SETTINGS, 0, 0, b"".join(struct.pack(">HL", codes[k], v) for k, v in values.items()))


def connected(requests: int = 1, ended: bool = True, **values: int) -> wire.H2Wire:
    """A wire past the server's first SETTINGS, with `requests` streams open (1, 3, ...)."""
    conn = wire.H2Wire(MAX_HEAD, WINDOW)
    conn.start()
    assert conn.receive(settings_frame(**values)) == [(wire.SETTINGS_CHANGED, 0)]
    block = b"".join(wire.header_bytes(name, value) for name, value in REQUEST)
    assert [conn.open(block, ended) for _ in range(requests)] == list(range(1, 2 * requests, 2))
    conn.data_to_send()
    return conn


def answer(stream_id: int, status: bytes = b"200", end: bool = False, *extra: tuple[bytes, bytes]) -> bytes:
    block = hpack.Encoder().encode([(b":status", status), *extra])
    return wire.frame(wire.HEADERS, wire.END_HEADERS | (wire.END_STREAM if end else 0), stream_id, block)


def test_the_preface_announces_our_settings_and_window_and_the_servers_are_acknowledged() -> None:
    conn = wire.H2Wire(MAX_HEAD, WINDOW)
    conn.start()
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    events = server.receive_data(conn.data_to_send())
    (changed,) = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
    assert {int(k): v.new_value for k, v in changed.changed_settings.items()} == {
        wire.ENABLE_PUSH: 0, wire.MAX_CONCURRENT_STREAMS: 0, wire.MAX_HEADER_LIST_SIZE: MAX_HEAD}
    (window,) = [e for e in events if isinstance(e, h2.events.WindowUpdated)]
    assert window.stream_id == 0 and window.delta == WINDOW - 65535
    assert conn.receive(server.data_to_send()) == [(wire.SETTINGS_CHANGED, 0)]
    assert frames_of(conn.data_to_send()) == [(wire.SETTINGS, wire.ACK, 0, b"")]  # theirs acknowledged
    assert conn.receive(wire.frame(wire.SETTINGS, wire.ACK, 0)) == []  # ours acknowledged: nothing to do
    assert conn.receive(wire.frame(wire.PING, 0, 0, b"12345678") + wire.frame(wire.PING, wire.ACK, 0, b"abcdefgh")) == []
    assert frames_of(conn.data_to_send()) == [(wire.PING, wire.ACK, 0, b"12345678")]  # a PING answered, an answer not


def test_a_requests_headers_are_coded_for_any_decoder_the_credential_never_indexed() -> None:
    fields = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/3/device/" + b"a" * 200), (b":authority", b"x:8443"),
              (b"authorization", b"bearer " + b"t" * 500), (b"content-type", b"application/json"), (b"apns-id", b"\xe9" * 130),
              (b"x-" + b"n" * 140, b""), (b"content-length", b"12")]
    block = b"".join(wire.header_bytes(name, value) for name, value in fields)
    decoded = hpack.Decoder().decode(block, raw=True)
    assert decoded == fields
    assert [type(h) for h in decoded if h[0] == b"authorization"] == [hpack.NeverIndexedHeaderTuple]
    assert wire.header_bytes(b":method", b"POST") == b"\x83" and wire.header_bytes(b":scheme", b"https") == b"\x87"
    decoder = hpack.Decoder()
    decoder.decode(block + block, raw=True)
    assert len(decoder.header_table.dynamic_entries) == 0  # nothing added to the server's table


def test_the_servers_table_is_honoured_across_answers() -> None:
    conn = connected(3)
    encoder = hpack.Encoder()  # indexes what it sends: the second answer's headers are references to the first's
    events = []
    for stream_id in (1, 3, 5):
        block = encoder.encode([(b":status", b"200"), (b"apns-id", b"same-id"), (b"x-n", str(stream_id).encode())])
        events += conn.receive(wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, stream_id, block))
    assert [e for e in events if e[0] == wire.RESPONSE] == [
        (wire.RESPONSE, n, [(b":status", b"200"), (b"apns-id", b"same-id"), (b"x-n", str(n).encode())]) for n in (1, 3, 5)]


def test_stream_ids_are_odd_and_increasing_and_the_servers_limit_holds() -> None:
    conn = connected(2, max_streams=2)
    block = wire.header_bytes(b":method", b"GET")
    with pytest.raises(wire.TooManyStreams):
        conn.open(block, True)
    conn.receive(answer(1, end=True))  # stream 1 ends both ways: a stream is free
    assert conn.open(block, True) == 5
    conn.next_id = 2**31 + 1  # the ids ran out
    conn.receive(answer(3, end=True))
    with pytest.raises(wire.TooManyStreams):
        conn.open(block, True)


def test_data_never_goes_beyond_the_streams_or_the_connections_window() -> None:
    conn = connected(1, ended=False, window=10)
    assert conn.window_of(1) == 10
    with pytest.raises(ValueError, match="exceed"):
        conn.send_data(1, b"x" * 11, False)
    conn.send_data(1, b"x" * 10, False)
    assert conn.window_of(1) == 0
    assert conn.receive(wire.frame(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 5))) == [(wire.WINDOW, 1)]
    assert conn.window_of(1) == 5
    assert conn.receive(settings_frame(window=100)) == [(wire.SETTINGS_CHANGED, 0)]  # +90 on the open stream
    assert conn.window_of(1) == 95
    conn.receive(settings_frame(window=0))  # -100: below zero, nothing may be sent
    assert conn.window_of(1) == 0
    # the connection's window (65,535) binds across streams whatever theirs
    conn = connected(5, ended=False, window=2**20)
    for stream_id in (1, 3, 5):
        assert conn.window_of(stream_id) == 16384  # the server's frame size
        conn.send_data(stream_id, b"y" * 16384, False)
    assert conn.window_of(7) == 65535 - 3 * 16384
    conn.send_data(7, b"y" * (65535 - 3 * 16384), False)
    assert conn.window_of(9) == 0
    with pytest.raises(ValueError):
        conn.send_data(9, b"y", True)
    assert conn.receive(wire.frame(wire.WINDOW_UPDATE, 0, 0, struct.pack(">L", 1000))) == [(wire.WINDOW, 0)]
    assert conn.window_of(9) == 1000
    conn.send_data(9, b"y" * 1000, True)
    assert conn.window_of(9) == 0  # ended: nothing more on it
    sent = frames_of(conn.data_to_send())
    assert [len(p) for k, _, _, p in sent if k == wire.DATA] == [16384, 16384, 16384, 65535 - 3 * 16384, 1000]


def test_a_streams_window_grown_beyond_the_maximum_resets_it() -> None:
    conn = connected(2, ended=False)
    events = conn.receive(wire.frame(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 2**31 - 1)))
    assert events == [(wire.RESET, 1, wire.FLOW_CONTROL_ERROR)]
    assert frames_of(conn.data_to_send()) == [(wire.RST_STREAM, 0, 1, struct.pack(">L", wire.FLOW_CONTROL_ERROR))]
    assert conn.window_of(1) == 0 and conn.window_of(3) == 16384  # the other stream goes on (a frame's worth at a time)


def test_what_we_receive_is_given_back_so_a_long_answer_never_stalls() -> None:
    conn = connected(1)
    conn.receive(answer(1))
    given_back = {0: 0, 1: 0}
    received = 0
    for _ in range(64):  # 1 MiB, frame after frame, as far as our windows allow
        assert given_back[1] + 65535 - received >= 16384 and given_back[0] + WINDOW - received >= 16384
        assert conn.receive(wire.frame(wire.DATA, 0, 1, b"z" * 16384)) == [(wire.BODY, 1, b"z" * 16384)]
        received += 16384
        for kind, _, stream_id, payload in frames_of(conn.data_to_send()):
            assert kind == wire.WINDOW_UPDATE
            given_back[stream_id] += struct.unpack(">L", payload)[0]
    assert given_back[1] >= received - 32768 and given_back[0] >= received - 65536
    # padding counts too, and DATA on a stream we reset is dropped but still given back on the connection
    conn = connected(2)
    conn.receive(answer(1) + answer(3))
    conn.reset(1)
    assert frames_of(conn.data_to_send()) == [(wire.RST_STREAM, 0, 1, struct.pack(">L", wire.CANCEL))]
    events = conn.receive(wire.frame(wire.DATA, wire.PADDED, 1, bytes([200]) + b"a" * 16000 + b"\0" * 200)
                          + wire.frame(wire.DATA, wire.PADDED, 3, bytes([255]) + b"b" * 16128 + b"\0" * 255)
                          + wire.frame(wire.DATA, wire.PADDED, 3, bytes([255]) + b"b" * 16128 + b"\0" * 255)
                          + wire.frame(wire.DATA, 0, 3, b"c" * 16384) * 2)
    assert events == [(wire.BODY, 3, b"b" * 16128), (wire.BODY, 3, b"b" * 16128), (wire.BODY, 3, b"c" * 16384),
                      (wire.BODY, 3, b"c" * 16384)]
    assert frames_of(conn.data_to_send()) == [  # the stream's, padding included; the connection's, the dropped frame's too
        (wire.WINDOW_UPDATE, 0, 3, struct.pack(">L", 2 * 16384)), (wire.WINDOW_UPDATE, 0, 0, struct.pack(">L", 16201 + 4 * 16384)),
        (wire.WINDOW_UPDATE, 0, 3, struct.pack(">L", 2 * 16384))]


def test_informational_answers_are_skipped_trailers_end_the_stream_priority_and_unknown_frames_are_ignored() -> None:
    conn = connected(1)
    events = conn.receive(answer(1, b"103") + wire.frame(wire.PRIORITY, 0, 1, b"\0\0\0\0\x10")
                          + wire.frame(0xBB, 0xFF, 0, b"whatever") + answer(1, b"200", False, (b"content-length", b"3"))
                          + wire.frame(wire.DATA, 0, 1, b"abc")
                          + wire.frame(wire.HEADERS, wire.END_HEADERS | wire.END_STREAM, 1, hpack.Encoder().encode([(b"grpc-status", b"0")])))
    assert events == [(wire.RESPONSE, 1, [(b":status", b"200"), (b"content-length", b"3")]), (wire.BODY, 1, b"abc"), (wire.ENDED, 1)]


def test_a_header_block_may_come_in_continuation_frames_with_padding_and_priority() -> None:
    conn = connected(1)
    block = hpack.Encoder().encode([(b":status", b"200"), (b"x-long", b"v" * 40000)])
    first = bytes([3]) + b"\0\0\0\0\x10" + block[:10000] + b"\0\0\0"
    events = conn.receive(wire.frame(wire.HEADERS, wire.PADDED | wire.PRIORITY_FLAG | wire.END_STREAM, 1, first)
                          + wire.frame(wire.CONTINUATION, 0, 1, block[10000:25000])
                          + wire.frame(wire.CONTINUATION, wire.END_HEADERS, 1, block[25000:]))
    assert events == [(wire.RESPONSE, 1, [(b":status", b"200"), (b"x-long", b"v" * 40000)]), (wire.ENDED, 1)]


def test_a_goaway_is_handed_on_its_last_stream_never_raised_and_the_streams_it_covers_go_on() -> None:
    conn = connected(3)
    goaway = wire.frame(wire.GOAWAY, 0, 0, struct.pack(">LL", 3, 0))
    assert conn.receive(goaway + answer(1, end=True)) == [(wire.GOAWAY_RECEIVED, 3, 0), (wire.RESPONSE, 1, [(b":status", b"200")]),
                                                          (wire.ENDED, 1)]
    assert conn.receive(wire.frame(wire.GOAWAY, 0, 0, struct.pack(">LL", 5 | 2**31, 2))) == [(wire.GOAWAY_RECEIVED, 3, 2)]
    assert conn.goaway == 3


def test_frames_on_streams_we_reset_are_dropped_on_ended_ones_refused() -> None:
    conn = connected(2)
    conn.reset(1)
    assert frames_of(conn.data_to_send()) == [(wire.RST_STREAM, 0, 1, struct.pack(">L", wire.CANCEL))]
    assert conn.receive(answer(1, end=True) + wire.frame(wire.RST_STREAM, 0, 1, b"\0\0\0\0")
                        + wire.frame(wire.WINDOW_UPDATE, 0, 1, b"\0\0\0\1")) == []
    conn.reset(1)  # closed already: nothing more sent
    assert conn.data_to_send() == b""
    conn.receive(answer(3, end=True))
    with pytest.raises(wire.ProtocolError) as caught:
        conn.receive(wire.frame(wire.DATA, 0, 3, b"late"))
    assert caught.value.code == wire.STREAM_CLOSED


def test_a_frame_on_a_stream_the_server_ended_while_we_send_resets_that_stream_only() -> None:
    conn = connected(2, ended=False)
    assert conn.receive(answer(1, end=True)) == [(wire.RESPONSE, 1, [(b":status", b"200")]), (wire.ENDED, 1)]
    assert conn.window_of(1) > 0  # half-closed: our body may still go
    assert conn.receive(wire.frame(wire.DATA, 0, 1, b"more")) == []
    assert frames_of(conn.data_to_send()) == [(wire.RST_STREAM, 0, 1, struct.pack(">L", wire.STREAM_CLOSED))]
    assert conn.window_of(1) == 0 and conn.receive(answer(3, end=True))[-1] == (wire.ENDED, 3)  # the other goes on


def hpack_block(*fields: tuple[bytes, bytes]) -> bytes:
    return hpack.Encoder().encode(list(fields))


CONNECTION_ERRORS = {
    "a frame beyond our frame size": (wire.frame(wire.DATA, 0, 1, b"x" * 16385), wire.FRAME_SIZE_ERROR),
    "its header alone is enough": (wire.frame(wire.DATA, 0, 1, b"x" * 16385)[:9], wire.FRAME_SIZE_ERROR),
    "PUSH_PROMISE (push disabled)": (wire.frame(wire.PUSH_PROMISE, wire.END_HEADERS, 1, b"\0\0\0\2" + hpack_block((b":method", b"GET"))),
                                     wire.PROTOCOL_ERROR),
    "DATA on the connection": (wire.frame(wire.DATA, 0, 0, b"x"), wire.PROTOCOL_ERROR),
    "DATA on a stream never opened": (wire.frame(wire.DATA, 0, 7, b"x"), wire.PROTOCOL_ERROR),
    "DATA on a server's stream": (wire.frame(wire.DATA, 0, 2, b"x"), wire.PROTOCOL_ERROR),
    "DATA before the answer": (wire.frame(wire.DATA, 0, 1, b"x"), wire.PROTOCOL_ERROR),
    "HEADERS on a stream never opened": (answer(9), wire.PROTOCOL_ERROR),
    "padding beyond the frame": (answer(1) + wire.frame(wire.DATA, wire.PADDED, 1, bytes([5]) + b"abcd"), wire.PROTOCOL_ERROR),
    "padded DATA of no byte": (answer(1) + wire.frame(wire.DATA, wire.PADDED, 1, b""), wire.PROTOCOL_ERROR),
    "HEADERS padding beyond the frame": (wire.frame(wire.HEADERS, wire.PADDED | wire.END_HEADERS, 1, bytes([9]) + b"\x88"), wire.PROTOCOL_ERROR),
    "CONTINUATION without HEADERS": (wire.frame(wire.CONTINUATION, wire.END_HEADERS, 1, b"\x88"), wire.PROTOCOL_ERROR),
    "a frame inside a header block": (wire.frame(wire.HEADERS, 0, 1, b"\x88") + wire.frame(wire.PING, 0, 0, b"12345678"), wire.PROTOCOL_ERROR),
    "CONTINUATION of another stream": (wire.frame(wire.HEADERS, 0, 1, b"\x88") + wire.frame(wire.CONTINUATION, wire.END_HEADERS, 3, b""),
                                       wire.PROTOCOL_ERROR),
    "an undecodable header block": (wire.frame(wire.HEADERS, wire.END_HEADERS, 1, b"\xff\xff\xff\xff"), wire.COMPRESSION_ERROR),
    "a header list beyond ours": (wire.frame(wire.HEADERS, wire.END_HEADERS, 1, b""), wire.COMPRESSION_ERROR),
    "trailers without END_STREAM": (answer(1) + answer(1, b"200", False, (b"x", b"y")), wire.PROTOCOL_ERROR),
    "END_STREAM on a 1xx": (answer(1, b"100", True), wire.PROTOCOL_ERROR),
    "a body longer than its content-length": (answer(1, b"200", False, (b"content-length", b"2")) + wire.frame(wire.DATA, 0, 1, b"abc"),
                                              wire.PROTOCOL_ERROR),
    "a body shorter than its content-length": (answer(1, b"200", False, (b"content-length", b"4")) + wire.frame(wire.DATA, 1, 1, b"abc"),
                                               wire.PROTOCOL_ERROR),
    "a content-length that is no number": (answer(1, b"200", False, (b"content-length", b"-1")), wire.PROTOCOL_ERROR),
    "two content-lengths": (answer(1, b"200", False, (b"content-length", b"1"), (b"content-length", b"2")), wire.PROTOCOL_ERROR),
    "HEADERS after the stream ended": (answer(1, end=True) + answer(1, end=True), wire.STREAM_CLOSED),
    "SETTINGS on a stream": (wire.frame(wire.SETTINGS, 0, 1, b""), wire.PROTOCOL_ERROR),
    "SETTINGS not of 6-byte entries": (wire.frame(wire.SETTINGS, 0, 0, b"\0\1\0"), wire.FRAME_SIZE_ERROR),
    "a SETTINGS acknowledgement with a payload": (wire.frame(wire.SETTINGS, wire.ACK, 0, b"\0\1\0\0\0\0"), wire.FRAME_SIZE_ERROR),
    "SETTINGS_INITIAL_WINDOW_SIZE beyond 2^31-1": (settings_frame(window=2**31), wire.FLOW_CONTROL_ERROR),
    "a window change taking a stream beyond 2^31-1": (wire.frame(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 2**30))
                                                      + settings_frame(window=2**31 - 1), wire.FLOW_CONTROL_ERROR),
    "SETTINGS_MAX_FRAME_SIZE too small": (settings_frame(frame=16383), wire.PROTOCOL_ERROR),
    "SETTINGS_MAX_FRAME_SIZE too large": (settings_frame(frame=2**24), wire.PROTOCOL_ERROR),
    "SETTINGS_ENABLE_PUSH of 2": (settings_frame(push=2), wire.PROTOCOL_ERROR),
    "SETTINGS_ENABLE_CONNECT_PROTOCOL of 2": (settings_frame(connect=2), wire.PROTOCOL_ERROR),
    "PING on a stream": (wire.frame(wire.PING, 0, 1, b"12345678"), wire.PROTOCOL_ERROR),
    "PING not of 8 bytes": (wire.frame(wire.PING, 0, 0, b"1234567"), wire.FRAME_SIZE_ERROR),
    "GOAWAY on a stream": (wire.frame(wire.GOAWAY, 0, 1, b"\0" * 8), wire.PROTOCOL_ERROR),
    "GOAWAY too short": (wire.frame(wire.GOAWAY, 0, 0, b"\0" * 7), wire.FRAME_SIZE_ERROR),
    "WINDOW_UPDATE of 0": (wire.frame(wire.WINDOW_UPDATE, 0, 0, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    "WINDOW_UPDATE of 0 on a stream": (wire.frame(wire.WINDOW_UPDATE, 0, 1, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    "WINDOW_UPDATE not of 4 bytes": (wire.frame(wire.WINDOW_UPDATE, 0, 0, b"\0\0\1"), wire.FRAME_SIZE_ERROR),
    "WINDOW_UPDATE on a stream never opened": (wire.frame(wire.WINDOW_UPDATE, 0, 11, b"\0\0\0\1"), wire.PROTOCOL_ERROR),
    "the connection's window beyond 2^31-1": (wire.frame(wire.WINDOW_UPDATE, 0, 0, struct.pack(">L", 2**31 - 1)), wire.FLOW_CONTROL_ERROR),
    "RST_STREAM on the connection": (wire.frame(wire.RST_STREAM, 0, 0, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    "RST_STREAM on a stream never opened": (wire.frame(wire.RST_STREAM, 0, 5, b"\0\0\0\0"), wire.PROTOCOL_ERROR),
    "RST_STREAM not of 4 bytes": (wire.frame(wire.RST_STREAM, 0, 1, b"\0\0\0"), wire.FRAME_SIZE_ERROR),
    "PRIORITY on the connection": (wire.frame(wire.PRIORITY, 0, 0, b"\0" * 5), wire.PROTOCOL_ERROR),
    "PRIORITY not of 5 bytes": (wire.frame(wire.PRIORITY, 0, 1, b"\0" * 4), wire.FRAME_SIZE_ERROR),
    "a header block beyond 4x our header list": (wire.frame(wire.HEADERS, 0, 1, b"\0" * 16384)
                                                 + wire.frame(wire.CONTINUATION, 0, 1, b"\0" * 16384) * 16, wire.ENHANCE_YOUR_CALM),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
def test_a_connection_error_names_its_code_and_stays(case: str) -> None:
    data, code = CONNECTION_ERRORS[case]
    conn = connected(2)
    if case == "a header list beyond ours":  # a list over 64 KiB that fits in the block limit: one indexed name, a long value
        conn.decoder.max_header_list_size = 100
        data = answer(1, b"200", False, (b"x-big", b"v" * 200))
    with pytest.raises(wire.ProtocolError) as caught:
        conn.receive(data)
    assert caught.value.code == code, caught.value
    with pytest.raises(wire.ProtocolError):  # broken for good
        conn.receive(wire.frame(wire.PING, 0, 0, b"12345678"))


def test_the_servers_first_frame_must_be_its_settings() -> None:
    for first in (b"HTTP/1.1 400 Bad Request\r\n\r\n", wire.frame(wire.PING, 0, 0, b"12345678"), wire.frame(wire.SETTINGS, wire.ACK, 0),
                  wire.frame(wire.SETTINGS, 0, 0, b"\0\0\0")):
        conn = wire.H2Wire(MAX_HEAD, WINDOW)
        conn.start()
        with pytest.raises(wire.ProtocolError, match="not an HTTP/2 server"):
            conn.receive(first[:9])  # its header is enough


def test_closed_streams_are_remembered_within_a_bound_a_late_frame_on_a_forgotten_one_dropped() -> None:
    conn = connected(0)
    block = wire.header_bytes(b":method", b"GET")
    for _ in range(5000):
        stream_id = conn.open(block, True)
        assert conn.receive(answer(stream_id, end=True))[-1] == (wire.ENDED, stream_id)
    assert not conn.streams and wire.CLOSED_KEPT <= len(conn.closed) <= 2 * wire.CLOSED_KEPT
    assert conn.receive(wire.frame(wire.DATA, 0, 1, b"late")) == []  # ended long ago, forgotten: dropped
    with pytest.raises(wire.ProtocolError) as caught:  # ended just now: a connection error
        conn.receive(wire.frame(wire.DATA, 0, stream_id, b"late"))
    assert caught.value.code == wire.STREAM_CLOSED


def test_the_reserved_bit_of_a_window_update_is_ignored() -> None:
    conn = connected(1, ended=False, window=0)
    assert conn.receive(wire.frame(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 2**31 | 7))) == [(wire.WINDOW, 1)]
    assert conn.window_of(1) == 7
