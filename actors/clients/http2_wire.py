"""HTTP/2 on the wire for the client (actors/clients/http2.py): a client connection's frames, built and parsed here.
Pure: no I/O, no clock.

Why not h2's H2Connection, as before: a request's HEADERS and DATA built as hyperframe objects
through h2's connection and stream state machines, each answer parsed into frame objects and
events, cost about 0.2 ms of CPU per push delivery, a third of it (docs/providers.md,
"Throughput through the real clients"). This module does what a client of Herald's needs and
what RFC 9113 asks of it, and no more:

* The preface and our SETTINGS (ENABLE_PUSH 0, MAX_CONCURRENT_STREAMS 0, MAX_HEADER_LIST_SIZE),
  the connection's receive window raised at once; SETTINGS acknowledged both ways; the server's
  MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE (its change applied to the open streams' windows),
  MAX_FRAME_SIZE applied. Its HEADER_TABLE_SIZE needs nothing: we never add to its table.
* PING answered; GOAWAY, RST_STREAM and WINDOW_UPDATE handed on as events; PRIORITY and frames of
  unknown types ignored.
* Flow control both ways: `window(stream)` is what DATA may carry now (the caller waits for a WINDOW
  event beyond it; `send_data` refuses more); what we receive is given back (WINDOW_UPDATE) as it
  comes, so a long answer never stalls.
* HEADERS with CONTINUATION and padding, decoded by hpack's Decoder (the server's dynamic table
  honoured, the header list at most `max_header_list` bytes); a 1xx answer skipped, trailers
  end the stream; content-length checked against the body as h2 checks it.
* Anything else is a connection error (ProtocolError, its code for the GOAWAY): a frame beyond
  our MAX_FRAME_SIZE, a malformed one, PUSH_PROMISE (we disabled push), a frame on a stream the
  server could not know (idle), DATA or HEADERS on a stream it ended. RFC 9113 5.4.1 lets any
  stream error be one; Herald's streams are cheap to send again. Frames on streams we reset
  are dropped (their DATA still counted and given back).
* Headers out: hpack without Huffman and without the dynamic table, each (name, value) coded
  once (`header_bytes`, cached by the caller): a static table entry where there is one, else a
  literal without indexing, `authorization` a literal never indexed. The server's decoder keeps
  no state for us, so its HEADER_TABLE_SIZE does not matter, and nothing we send can be
  guessed through compression.

tests/providers/test_http2_wire.py feeds it and h2 the same server bytes (generated from h2's
server side, cut at random points, and broken) and checks they agree on what each stream gets.
"""

from __future__ import annotations

import struct
from typing import Any

import hpack
from hpack.table import HeaderTable

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# error codes
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, \
    REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, \
    HTTP_1_1_REQUIRED = range(14)
ERROR_NAMES = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
               "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
               "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = range(1, 7)
ENABLE_CONNECT_PROTOCOL = 8  # RFC 8441

# events (tuples: kind first, then the stream id)
Event = tuple[Any, ...]
RESPONSE = 0  # (RESPONSE, stream_id, headers): the final answer's header list [(name, value) bytes]
BODY = 1  # (BODY, stream_id, data)
ENDED = 2  # (ENDED, stream_id): the server ended the stream
RESET = 3  # (RESET, stream_id, error_code)
WINDOW = 4  # (WINDOW, stream_id): a send window grew (0: the connection's or every stream's)
SETTINGS_CHANGED = 5  # (SETTINGS_CHANGED, 0): the server's SETTINGS applied (the first marks the connection settled)
GOAWAY_RECEIVED = 6  # (GOAWAY_RECEIVED, last_stream_id, error_code)

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
OUR_MAX_FRAME = 16384  # we never raise our SETTINGS_MAX_FRAME_SIZE
CLOSED_KEPT = 1024  # closed streams remembered (how each closed; up to twice as many), beyond which a late frame on one is dropped
STREAM_ACK = 32768  # a stream's received bytes given back once this many are pending (its window: 64 KiB)
CONNECTION_ACK = 65536  # the connection's likewise

_HEAD = struct.Struct(">HBBBL")  # length (24 bits as 16 + 8), type, flags, stream id
_U32 = struct.Struct(">L")
_SETTING = struct.Struct(">HL")
_GOAWAY = struct.Struct(">LL")

_BY_US, _BY_THEM, _ENDED = 0, 1, 2  # how a remembered stream closed
_ON_STREAM = (1, 1, 1, 1, 0, 1, 0, 0, 2, 1)  # per frame type: on a stream (1), on the connection (0), either (2)


class ProtocolError(Exception):
    """The server broke HTTP/2: a connection error; `code` goes in our GOAWAY."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


class TooManyStreams(Exception):
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS is reached: the stream was not opened."""


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    length = len(payload)
    return _HEAD.pack(length >> 8, length & 0xFF, kind, flags, stream_id) + payload


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1), its first byte's high bits `first`."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: bytes) -> bytes:
    return _integer(len(value), 7, 0) + value


_STATIC_NAMES: dict[bytes, int] = {}
_STATIC_PAIRS: dict[tuple[bytes, bytes], int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)
    _STATIC_PAIRS.setdefault((_name, _value), _index)
NEVER_INDEXED = frozenset({b"authorization", b"proxy-authorization"})


def header_bytes(name: bytes, value: bytes) -> bytes:
    """One header field in HPACK without the dynamic table or Huffman: indexed from the static table when it holds
    the pair, else a literal without indexing (never indexed for a credential), its name from the static table when
    it is there."""
    never = name in NEVER_INDEXED
    if not never:
        index = _STATIC_PAIRS.get((name, value))
        if index is not None:
            return _integer(index, 7, 0x80)
    first = 0x10 if never else 0x00
    index = _STATIC_NAMES.get(name)
    if index is not None:
        return _integer(index, 4, first) + _string(value)
    return bytes((first,)) + _string(name) + _string(value)


class _Stream:
    __slots__ = ("send_window", "unacked", "local_closed", "remote_closed", "answered", "expected", "received", "head")

    def __init__(self, send_window: int, head: bool) -> None:
        self.send_window = send_window
        self.head = head  # a HEAD request: its answer has no body
        self.unacked = 0  # received, not yet given back
        self.local_closed = False  # we sent END_STREAM
        self.remote_closed = False  # the server sent END_STREAM
        self.answered = False  # the final (non-1xx) answer's headers came
        self.expected: int | None = None  # the answer's content-length
        self.received = 0  # its body's bytes so far


class H2Wire:
    """A client's HTTP/2 connection state: bytes in -> events, requests -> bytes out (`data_to_send`)."""

    def __init__(self, max_header_list: int = 65536, window: int = DEFAULT_WINDOW) -> None:
        self.out: list[bytes] = []
        self.buffer = b""
        self.decoder = hpack.Decoder(max_header_list_size=max_header_list)
        self.max_header_list = max_header_list
        self.window = window  # our connection receive window, as announced
        self.streams: dict[int, _Stream] = {}  # open or half-closed
        self.closed: dict[int, int] = {}  # recently closed stream ids -> _BY_US, _BY_THEM or _ENDED
        self.next_id = 1
        self.send_window = DEFAULT_WINDOW  # the connection's, for our DATA
        self.unacked = 0  # the connection's received bytes not yet given back
        self.initial_window = DEFAULT_WINDOW  # the server's SETTINGS_INITIAL_WINDOW_SIZE
        self.max_frame_size = 16384  # the server's SETTINGS_MAX_FRAME_SIZE: our frames at most this
        self.max_streams = 2**31  # the server's SETTINGS_MAX_CONCURRENT_STREAMS
        self.settled = False  # the server's first SETTINGS came
        self.goaway: int | None = None  # the last stream id of the server's GOAWAY
        self.continuing = 0  # a header block under way on this stream (CONTINUATION frames expected)
        self.block: list[bytes] = []
        self.block_size = 0
        self.block_end = False  # that block's HEADERS had END_STREAM
        self.broken: ProtocolError | None = None

    # sending

    def start(self) -> None:
        """The preface, our SETTINGS, the connection's receive window raised to `window`."""
        settings = b"".join(_SETTING.pack(key, value) for key, value in (
            (ENABLE_PUSH, 0), (MAX_CONCURRENT_STREAMS, 0), (MAX_HEADER_LIST_SIZE, self.max_header_list)))
        self.out.append(PREFACE + frame(SETTINGS, 0, 0, settings))
        if self.window > DEFAULT_WINDOW:
            self.out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.window - DEFAULT_WINDOW)))

    def data_to_send(self) -> bytes:
        out = self.out
        if not out:
            return b""
        data = b"".join(out) if len(out) > 1 else out[0]
        out.clear()
        return data

    def open(self, block: bytes, end_stream: bool, head: bool = False) -> int:
        """A new stream with its request's header block (HPACK: header_bytes joined; `head` for a HEAD request); its
        id. TooManyStreams when the server's limit is reached (nothing sent)."""
        if len(self.streams) >= self.max_streams:
            raise TooManyStreams()
        stream_id = self.next_id
        if stream_id > 2**31 - 1:
            raise TooManyStreams()
        self.next_id += 2
        stream = self.streams[stream_id] = _Stream(self.initial_window, head)
        flags = END_STREAM if end_stream else 0
        size = self.max_frame_size
        length = len(block)
        if length <= size:
            self.out.append(_HEAD.pack(length >> 8, length & 0xFF, HEADERS, flags | END_HEADERS, stream_id) + block)
        else:
            self.out.append(frame(HEADERS, flags, stream_id, block[:size]))
            for at in range(size, length, size):
                self.out.append(frame(CONTINUATION, END_HEADERS if at + size >= length else 0, stream_id, block[at:at + size]))
        if end_stream:
            stream.local_closed = True
        return stream_id

    def window_of(self, stream_id: int) -> int:
        """What one DATA frame may carry on the stream now (the windows, the server's frame size); 0 if closed."""
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return max(0, min(self.send_window, stream.send_window, self.max_frame_size))

    def send_data(self, stream_id: int, data: bytes, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise ValueError(f"stream {stream_id} is not open for sending")
        length = len(data)
        if length > min(self.send_window, stream.send_window, self.max_frame_size):
            raise ValueError(f"{length} bytes exceed the stream's window or frame size")
        self.send_window -= length
        stream.send_window -= length
        self.out.append(_HEAD.pack(length >> 8, length & 0xFF, DATA, END_STREAM if end_stream else 0, stream_id) + data)
        if end_stream:
            stream.local_closed = True
            if stream.remote_closed:
                self._forget(stream_id, _ENDED)

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        """RST_STREAM for a stream still open (else nothing); later frames on it are dropped."""
        if self.streams.pop(stream_id, None) is not None:
            self._remember(stream_id, _BY_US)
            self.out.append(frame(RST_STREAM, 0, stream_id, _U32.pack(code)))

    def close(self, code: int) -> None:
        """GOAWAY (we accept no stream of the server's: last stream id 0)."""
        self.out.append(frame(GOAWAY, 0, 0, _GOAWAY.pack(0, code)))

    def _remember(self, stream_id: int, how: int) -> None:
        closed = self.closed
        closed[stream_id] = how
        if len(closed) > 2 * CLOSED_KEPT:  # the newest kept, at once (dropping the oldest one by one costs a scan each)
            self.closed = dict(list(closed.items())[-CLOSED_KEPT:])

    def _forget(self, stream_id: int, how: int) -> None:
        del self.streams[stream_id]
        self._remember(stream_id, how)

    # receiving

    def receive(self, data: bytes) -> list[Event]:
        """The events the bytes complete; raises ProtocolError (once broken, for every later call too)."""
        if self.broken is not None:
            raise self.broken
        try:
            return self._receive(data)
        except ProtocolError as exc:
            self.broken = exc
            raise
        except (hpack.HPACKError, IndexError, TypeError) as exc:  # what the decoder refused (an index, a size, a coding, a list too long; as h2)
            self.broken = ProtocolError(COMPRESSION_ERROR, f"header block refused by HPACK ({type(exc).__name__})")
            raise self.broken from None

    def _receive(self, data: bytes) -> list[Event]:
        buffer = self.buffer + data if self.buffer else data
        events: list[Event] = []
        at, end = 0, len(buffer)
        try:
            while end - at >= 9:
                high, low, kind, flags, stream_id = _HEAD.unpack_from(buffer, at)
                length = high << 8 | low
                if not self.settled and (kind != SETTINGS or flags & ACK or stream_id or length % 6):
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 server (its first frame is not SETTINGS)")
                stream_id &= 0x7FFFFFFF
                if kind < 10 and _ON_STREAM[kind] != 2 and _ON_STREAM[kind] != (stream_id != 0):
                    raise ProtocolError(PROTOCOL_ERROR, f"a frame of type {kind} {'on a stream' if stream_id else 'on the connection'}")
                if length > OUR_MAX_FRAME:
                    raise ProtocolError(FRAME_SIZE_ERROR, f"a frame of {length} bytes (at most {OUR_MAX_FRAME})")
                if end - at - 9 < length:
                    break
                payload = buffer[at + 9:at + 9 + length]
                at += 9 + length
                if self.continuing and kind != CONTINUATION:
                    raise ProtocolError(PROTOCOL_ERROR, "a frame in the middle of a header block")
                if kind == DATA:
                    self._data(flags, stream_id, payload, events)
                elif kind == HEADERS:
                    self._headers(flags, stream_id, payload, events)
                elif kind == CONTINUATION:
                    if not self.continuing or stream_id != self.continuing:
                        raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION without a header block under way")
                    self._continuation(payload, flags, events)
                elif kind == SETTINGS:
                    self._settings(flags, stream_id, payload, events)
                elif kind == WINDOW_UPDATE:
                    self._window_update(stream_id, payload, events)
                elif kind == PING:
                    if length != 8:
                        raise ProtocolError(FRAME_SIZE_ERROR, "PING not of 8 bytes")
                    if not flags & ACK:
                        self.out.append(frame(PING, ACK, 0, payload))
                elif kind == RST_STREAM:
                    self._rst_stream(stream_id, payload, events)
                elif kind == GOAWAY:
                    if length < 8:
                        raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
                    last, code = _GOAWAY.unpack_from(payload)
                    last &= 0x7FFFFFFF
                    self.goaway = last if self.goaway is None else min(self.goaway, last)
                    events.append((GOAWAY_RECEIVED, self.goaway, code))
                elif kind == PRIORITY:
                    if length != 5:
                        raise ProtocolError(FRAME_SIZE_ERROR, "PRIORITY not of 5 bytes")
                elif kind == PUSH_PROMISE:
                    raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE, push being disabled")
                # any other type: ignored (RFC 9113 4.1)
        finally:
            self.buffer = buffer[at:]
        return events

    def _stream(self, stream_id: int, kind: str) -> _Stream | None:
        """The open stream a DATA or HEADERS frame is for; None for one we reset or forgot, or one the server ended while
        we still send (reset now): the frame dropped."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            if stream.remote_closed:  # half-closed (remote), our body still going: a stream error (RFC 9113 5.1, as h2)
                self.reset(stream_id, STREAM_CLOSED)
                return None
            return stream
        if not stream_id:
            raise ProtocolError(PROTOCOL_ERROR, f"{kind} on the connection")
        if not stream_id & 1 or stream_id >= self.next_id:
            raise ProtocolError(PROTOCOL_ERROR, f"{kind} on a stream never opened")
        how = self.closed.get(stream_id, _BY_US)
        if how == _ENDED:
            raise ProtocolError(STREAM_CLOSED, f"{kind} on a closed stream")
        return None

    def _data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        stream = self._stream(stream_id, "DATA")
        size = len(payload)  # flow control counts the padding too
        if size:  # given back at once (never more than CONNECTION_ACK pending: the server cannot overrun the window)
            self.unacked += size
            if self.unacked >= CONNECTION_ACK:
                self.out.append(frame(WINDOW_UPDATE, 0, 0, _U32.pack(self.unacked)))
                self.unacked = 0
        if flags & PADDED:
            if not size or payload[0] >= size:
                raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1:size - payload[0]]
        if stream is None:
            return
        if not stream.answered:
            raise ProtocolError(PROTOCOL_ERROR, "DATA before the answer's headers")
        stream.unacked += size  # likewise (at most STREAM_ACK + a frame pending: below the stream's 64 KiB)
        end = flags & END_STREAM
        if payload:
            stream.received += len(payload)
            events.append((BODY, stream_id, payload))
        expected = stream.expected
        if expected is not None and (stream.received > expected or end and stream.received != expected):
            raise ProtocolError(PROTOCOL_ERROR, f"a body of {stream.received} bytes, content-length {expected}")
        if end:
            self._ended(stream_id, stream, events)
        elif stream.unacked >= STREAM_ACK:
            self.out.append(frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(stream.unacked)))
            stream.unacked = 0

    def _ended(self, stream_id: int, stream: _Stream, events: list[Event]) -> None:
        stream.remote_closed = True
        events.append((ENDED, stream_id))
        if stream.local_closed:
            self._forget(stream_id, _ENDED)

    def _headers(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if flags & PADDED:
            if not payload or payload[0] >= len(payload) - (5 if flags & PRIORITY_FLAG else 0):
                raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
            payload = payload[1:len(payload) - payload[0]]
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            payload = payload[5:]
        if flags & END_HEADERS:  # the whole block (as a rule)
            self._block(stream_id, payload, bool(flags & END_STREAM), events)
            return
        self.continuing = stream_id
        self.block_end = bool(flags & END_STREAM)
        self.block = [payload]
        self.block_size = len(payload)

    def _continuation(self, payload: bytes, flags: int, events: list[Event]) -> None:
        self.block.append(payload)
        self.block_size += len(payload)
        if self.block_size > 4 * self.max_header_list:
            raise ProtocolError(ENHANCE_YOUR_CALM, "a header block beyond 4x our header list size")
        if flags & END_HEADERS:
            stream_id, self.continuing = self.continuing, 0
            block, self.block = b"".join(self.block), []
            self._block(stream_id, block, self.block_end, events)

    def _block(self, stream_id: int, block: bytes, end: bool, events: list[Event]) -> None:
        """A whole header block: decoded (always: the server's table changes with every block), then its stream's."""
        if len(block) > 4 * self.max_header_list:
            raise ProtocolError(ENHANCE_YOUR_CALM, "a header block beyond 4x our header list size")
        headers = self.decoder.decode(block, raw=True)
        stream = self._stream(stream_id, "HEADERS")  # checked once the block is whole (as h2)
        if stream is None:
            return
        length = None
        for name, value in headers:
            if name == b"content-length":
                if not value.isdigit():
                    raise ProtocolError(PROTOCOL_ERROR, "an invalid content-length")
                if length is None:
                    length = int(value)
                elif int(value) != length:
                    raise ProtocolError(PROTOCOL_ERROR, "conflicting content-lengths")
        informational = False
        for name, value in headers:  # as h2: the first :status among the leading pseudo-headers
            if name[:1] != b":":
                break
            if name == b":status":
                informational = value[:1] == b"1"
                break
        if stream.answered:  # trailers
            if not end:
                raise ProtocolError(PROTOCOL_ERROR, "trailers without END_STREAM")
            stream.expected = length
        elif informational:
            if end:
                raise ProtocolError(PROTOCOL_ERROR, "END_STREAM on an informational answer")
            return
        else:
            stream.answered = True
            stream.expected = 0 if stream.head else length
            events.append((RESPONSE, stream_id, headers))
        if end:  # no length check here (as h2: only DATA is checked against content-length)
            self._ended(stream_id, stream, events)

    def _settings(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if flags & ACK:
            if payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS not a multiple of 6 bytes")
        for at in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, at)
            if key == MAX_CONCURRENT_STREAMS:
                self.max_streams = value
            elif key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE beyond 2^31-1")
                delta = value - self.initial_window
                self.initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "a stream's window beyond 2^31-1")
            elif key == MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise ProtocolError(PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range")
                self.max_frame_size = value
            elif key == ENABLE_PUSH or key == ENABLE_CONNECT_PROTOCOL:
                if value > 1:
                    raise ProtocolError(PROTOCOL_ERROR, f"SETTINGS {key} not 0 or 1")
            # HEADER_TABLE_SIZE: we never use its table; MAX_HEADER_LIST_SIZE: advice; unknown ones ignored
        self.settled = True
        self.out.append(frame(SETTINGS, ACK, 0))
        events.append((SETTINGS_CHANGED, 0))

    def _window_update(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE not of 4 bytes")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not increment:
            raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
        if not stream_id:
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "the connection's window beyond 2^31-1")
            events.append((WINDOW, 0))
            return
        stream = self.streams.get(stream_id)
        if stream is None:
            if not stream_id & 1 or stream_id >= self.next_id:
                raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE on a stream never opened")
            return  # closed: allowed
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:  # a stream error (RFC 9113 6.9.1): the stream reset, as h2 does
            self.reset(stream_id, FLOW_CONTROL_ERROR)
            events.append((RESET, stream_id, FLOW_CONTROL_ERROR))
            return
        events.append((WINDOW, stream_id))

    def _rst_stream(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM not of 4 bytes")
        if self.streams.pop(stream_id, None) is not None:
            self._remember(stream_id, _BY_THEM)
            events.append((RESET, stream_id, _U32.unpack(payload)[0]))
        elif not stream_id & 1 or stream_id >= self.next_id:
            raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on a stream never opened")


def error_name(code: int) -> str:
    return ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else str(code)
