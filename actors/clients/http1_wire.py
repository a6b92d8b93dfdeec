"""HTTP/1.1 on the wire for the client pool (actors/clients/http1.py): a request's bytes, and an answer parsed as it
arrives. Pure: no I/O, no clock.

Why not h11's Connection, as before: its event machinery (an event object per step, a state
machine for both sides, a header list normalized twice) cost about 0.1 ms of CPU per
request, a fifth of a delivery through the Twilio client (docs/providers.md, "Throughput
through the real clients"). This module follows h11's rules, and only them: its grammar
(h11._abnf: the status line, header fields, chunk headers, obsolete line folding), its
framing (RFC 9112 6.3: no body for 1xx, 204, 304 or HEAD; `Transfer-Encoding: chunked`
beats Content-Length, any other transfer coding refused; conflicting or malformed lengths
refused; else read to the close) and its keep-alive (HTTP/1.1 or later, no `Connection:
close`). tests/providers/test_http1_wire.py feeds both generated answers, split at random
points, and checks they agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
HEADER_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*")
STATUS_LINE = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: (?:[ \t]|[^\x00\s])*)?")
CHUNK_HEADER = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r\n")
BLANK_LINE = re.compile(rb"\n\r?\n")
# A head as most servers write it (no folded line, no stray CR): read by two regexes, not line by line
_STATUS = rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: (?:[ \t]|[^\x00\s])*)?\r?\n"
_FIELD = rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+):[ \t]*((?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?)[ \t]*\r?\n"
PLAIN_HEAD = re.compile(
    _STATUS + rb"(?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[ \t]*(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?[ \t]*\r?\n)*\r?\n")
FIELD_LINE = re.compile(_FIELD)
FOLD = re.compile(rb"[ \t]+")
DIGITS = re.compile(rb"[0-9]{1,20}")
UNRESERVED = re.compile(rb"[^A-Za-z0-9_.\-~ ]")  # what a form's value keeps as it is (a space becomes "+")
MAX_LINE = 64 * 1024  # an incomplete head, chunk header or trailer, at most (h11's max_incomplete_event_size as the pool set it)

# The states of an answer being read
HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, TRAILER, TO_CLOSE, DONE = range(8)


class RequestRefused(ValueError):
    """A request HTTP/1.1 cannot carry (a control character in a header or the target, a name that is no token).
    Its text never quotes the value: a credential, maybe."""


class Malformed(ValueError):
    """An answer that breaks HTTP/1.1 (its grammar or its framing)."""


class Truncated(ValueError):
    """The connection closed before the answer's end."""


def request_head(method: bytes, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """A request's request line and header lines (the blank line that ends the head not included), each checked as
    h11 checks it. The caller gives every header it means to send (Host and Content-Length included)."""
    try:
        target_bytes = target.encode("ascii")
        lines = [b"%s %s HTTP/1.1\r\n" % (method, target_bytes)]
        if TOKEN.fullmatch(method) is None or TARGET.fullmatch(target_bytes) is None:
            raise RequestRefused("a request method or target that HTTP/1.1 refuses")
        for name, value in headers:
            raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
            if TOKEN.fullmatch(raw_name) is None or FIELD_VALUE.fullmatch(raw_value) is None:
                raise RequestRefused("a request header that HTTP/1.1 refuses")
            lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
    except UnicodeEncodeError:
        raise RequestRefused("a request header or target that is not ASCII") from None
    return b"".join(lines)


def request_bytes(method: bytes, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
    """A request's head and body as one piece of bytes (one write)."""
    return request_head(method, target, headers) + b"\r\n" + body


def form_urlencoded(fields: Iterable[tuple[str, str]]) -> bytes:
    """An application/x-www-form-urlencoded body: the bytes of `urllib.parse.urlencode(fields)`, built by a regex
    that escapes only what must be (urlencode's quoting goes through a Python call per byte)."""
    return b"&".join(_form_quoted(name) + b"=" + _form_quoted(value) for name, value in fields)


def _form_quoted(text: str) -> bytes:
    return UNRESERVED.sub(_escaped, text.encode("utf-8")).replace(b" ", b"+")


def _escaped(match: re.Match[bytes]) -> bytes:
    return b"%%%02X" % match[0][0]


class AnswerReader:
    """One answer, read from the bytes fed to it. `feed` raises Malformed, `closed` (the connection's end) Truncated.

    Once `done`: `status`, `headers` (lower-case names; a repeated header's values joined by ", "), the body's
    `chunks` (`size` bytes), and `reusable`: the connection may carry the next request (HTTP/1.1 or later, no
    `Connection: close`, a body framed by its length or chunks, and no byte after the answer's end)."""

    __slots__ = ("head_request", "state", "buffer", "status", "headers", "chunks", "size", "remaining", "keep_alive",
                 "reusable", "_scanned")

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request  # an answer to HEAD has no body, whatever its headers say
        self.state = HEAD
        self.buffer = bytearray()
        self.status: int | None = None  # the final answer's (1xx answers are read and skipped)
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.size = 0
        self.remaining = 0  # of a length-framed body, or of the current chunk
        self.keep_alive = False
        self.reusable = False
        self._scanned = 0  # where the search for the head's end goes on

    @property
    def done(self) -> bool:
        return self.state == DONE

    def feed(self, data: bytes) -> None:
        """Bytes received; parsed as far as they go."""
        if self.state == DONE:
            self.buffer += data
            self.reusable = False
            return
        buffer = self.buffer
        if self.state in (LENGTH, TO_CLOSE) and not buffer:  # the body's bytes: taken without a copy to the buffer
            self._body(data)
        else:
            buffer += data
        while self.state != DONE and buffer:
            state = self.state
            if state == HEAD:
                if not self._head():
                    return
            elif state == LENGTH or state == TO_CLOSE:
                data = bytes(buffer)
                buffer.clear()
                self._body(data)
            elif state == CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > MAX_LINE:
                        raise Malformed("a chunk header beyond its limit")
                    return
                match = CHUNK_HEADER.fullmatch(buffer, 0, end + 2)
                if match is None:
                    raise Malformed("an illegal chunk header")
                self.remaining = int(match[1], 16)
                del buffer[:end + 2]
                self.state = CHUNK_DATA if self.remaining else TRAILER
            elif state == CHUNK_DATA:
                take = bytes(buffer[:self.remaining])
                del buffer[:self.remaining]
                self.remaining -= len(take)
                self.chunks.append(take)
                self.size += len(take)
                if not self.remaining:
                    self.state = CHUNK_END
            elif state == CHUNK_END:
                if buffer[:2] != b"\r\n"[:len(buffer)]:
                    raise Malformed("a malformed chunk footer")
                if len(buffer) < 2:
                    return
                del buffer[:2]
                self.state = CHUNK_SIZE
            elif state == TRAILER:
                lines = self._lines()
                if lines is None:
                    return
                for _ in _fields(lines):  # checked as h11 checks them; not kept
                    pass
                self._finish()
        if self.state == DONE and buffer:
            self.reusable = False  # bytes after the answer: never taken as the next request's answer

    def closed(self) -> None:
        """The connection's end: the end of an answer read to the close, else Truncated."""
        if self.state == TO_CLOSE:
            self.keep_alive = False
            self._finish()
        elif self.state != DONE:
            raise Truncated("the server closed the connection before a whole answer")

    def _body(self, data: bytes) -> None:
        if self.state == TO_CLOSE:
            self.chunks.append(data)
            self.size += len(data)
            return
        take = data[:self.remaining] if len(data) > self.remaining else data
        self.chunks.append(take)
        self.size += len(take)
        self.remaining -= len(take)
        if not self.remaining:
            self._finish()
            if len(take) < len(data):
                self.buffer += data[len(take):]

    def _finish(self) -> None:
        self.state = DONE
        self.reusable = self.keep_alive and not self.buffer

    def _head_end(self) -> int:
        """Where the head (or the trailer) in the buffer ends, after its blank line; -1 if it has not come yet."""
        buffer = self.buffer
        match = BLANK_LINE.search(buffer, self._scanned)
        if match is None:
            if len(buffer) > MAX_LINE:
                raise Malformed("a head beyond its limit")
            self._scanned = max(0, len(buffer) - 2)
            return -1
        self._scanned = 0
        return match.end()

    def _lines(self) -> list[bytes] | None:
        """The lines up to the first blank one (taken off the buffer), or None if it has not come yet."""
        buffer = self.buffer
        if buffer[:1] == b"\n":
            del buffer[:1]
            return []
        if buffer[:2] == b"\r\n":
            del buffer[:2]
            return []
        end = self._head_end()
        if end < 0:
            return None
        block = bytes(buffer[:end])
        del buffer[:end]
        return _split(block)

    def _head(self) -> bool:
        """Read a head if it is all there (False if not): a 1xx is skipped, a final one sets the body's framing."""
        buffer = self.buffer
        if buffer[0] < 0x21:
            raise Malformed("not an HTTP/1.1 answer (an illegal status line)")
        end = self._head_end()
        if end < 0:
            return False
        block = bytes(buffer[:end])
        del buffer[:end]
        fields: Iterable[tuple[bytes, bytes]]
        match: re.Match[bytes] | None = PLAIN_HEAD.fullmatch(block)
        if match is not None:
            fields = FIELD_LINE.findall(block, block.index(b"\n") + 1)
        else:  # line by line, as h11 reads it: folded lines joined, a CR before each LF dropped
            lines = _split(block)
            match = STATUS_LINE.fullmatch(lines[0])
            if match is None:
                raise Malformed("not an HTTP/1.1 answer (an illegal status line)")
            fields = _fields(lines[1:])
        status = int(match[2])
        headers: dict[str, str] = {}
        length: bytes | None = None
        chunked = False
        close = False
        for name, value in fields:
            name = name.lower()
            if name == b"content-length":
                if b"," in value:  # a list of lengths: all the same, or refused
                    lengths = {part.strip() for part in value.split(b",")}
                    if len(lengths) != 1:
                        raise Malformed("conflicting Content-Length headers")
                    value = lengths.pop()
                if DIGITS.fullmatch(value) is None:
                    raise Malformed("a bad Content-Length")
                if length is not None:
                    if value != length:
                        raise Malformed("conflicting Content-Length headers")
                    continue
                length = value
            elif name == b"transfer-encoding":
                if chunked:
                    raise Malformed("multiple Transfer-Encoding headers")
                value = value.lower()
                if value != b"chunked":
                    raise Malformed("a Transfer-Encoding other than chunked")
                chunked = True
            elif name == b"connection":
                close = close or b"close" in (token.strip().lower() for token in value.split(b","))
            key, text = name.decode("latin-1"), value.decode("latin-1")
            before = headers.get(key)
            headers[key] = text if before is None else f"{before}, {text}"
        if status < 200:
            if status == 101:
                raise Malformed("a protocol switch that was not asked for")
            return True  # informational: the final answer follows
        self.status, self.headers = status, headers
        self.keep_alive = match[1] >= b"1.1" and not close
        if status in (204, 304) or self.head_request:
            self._finish()
        elif chunked:
            self.state = CHUNK_SIZE
        elif length is not None:
            self.remaining = int(length)
            self.state = LENGTH
            if not self.remaining:
                self._finish()
        else:
            self.keep_alive = False
            self.state = TO_CLOSE
        return True


def _split(block: bytes) -> list[bytes]:
    """A head's lines, its blank line left out, a CR before each LF dropped."""
    lines = block.split(b"\n")
    del lines[-2:]
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _fields(lines: list[bytes]) -> Iterable[tuple[bytes, bytes]]:
    """Header lines as (name, value), obsolete line folding joined as h11 joins it."""
    last: bytes | None = None
    for line in lines:
        fold = FOLD.match(line)
        if fold is not None:
            if last is None:
                raise Malformed("a continuation line at the start of the headers")
            last += b" " + line[fold.end():]
            continue
        if last is not None:
            yield _field(last)
        last = line
    if last is not None:
        yield _field(last)


def _field(line: bytes) -> tuple[bytes, bytes]:
    match = HEADER_LINE.fullmatch(line)
    if match is None:
        raise Malformed("an illegal header line")
    return match[1], match[2]
