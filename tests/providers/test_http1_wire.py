"""The HTTP/1.1 wire of the client pool (actors/clients/http1_wire.py) against h11, which it replaced on the hot path.

Hypothesis builds answers (heads with every framing, broken ones included: conflicting
lengths, foreign transfer codings, bad chunks, folded lines, control characters, 1xx heads
first, bytes after the end), cuts them at random points, and feeds the same pieces to both;
they must agree on the verdict (an answer, more bytes needed, a malformed answer, one cut by
the close), and for an answer on its status, headers, body and whether the connection may
carry the next request.
"""

from __future__ import annotations

from urllib.parse import urlencode

import h11
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from actors.clients.http1_wire import AnswerReader, Malformed, RequestRefused, Truncated, form_urlencoded, request_bytes

Verdict = tuple[str, int | None, dict[str, str] | None, bytes | None, bool | None]


def by_h11(pieces: list[bytes], eof: bool, head_request: bool) -> Verdict:
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
    conn.send(h11.Request(method=b"HEAD" if head_request else b"POST", target="/", headers=[("Host", "x"), ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    status: int | None = None
    headers: dict[str, str] = {}
    body = b""
    fed_eof = False
    for piece in [*pieces, *([b""] if eof else [])]:
        fed_eof = not piece
        conn.receive_data(piece)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return ("truncated" if fed_eof else "malformed", None, None, None, None)
            if event is h11.NEED_DATA:
                break
            if type(event) is h11.Response:
                status = event.status_code
                for name, value in event.headers:
                    key, text = name.decode("latin-1"), value.decode("latin-1")
                    headers[key] = f"{headers[key]}, {text}" if key in headers else text
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                reusable = conn.our_state is h11.DONE and conn.their_state is h11.DONE and not conn.trailing_data[0]
                return ("answer", status, headers, body, reusable and not fed_eof)
            elif type(event) is h11.ConnectionClosed:
                return ("truncated", None, None, None, None)
    return ("more", None, None, None, None)


def by_wire(pieces: list[bytes], eof: bool, head_request: bool) -> Verdict:
    answer = AnswerReader(head_request)
    try:
        for piece in pieces:
            answer.feed(piece)
            if answer.done:
                break
        else:
            if not eof:
                return ("more", None, None, None, None)
            answer.closed()
    except Malformed:
        return ("malformed", None, None, None, None)
    except Truncated:
        return ("truncated", None, None, None, None)
    return ("answer", answer.status, answer.headers, b"".join(answer.chunks), answer.reusable)


NAMES = st.sampled_from(["Content-Length", "content-length", "Transfer-Encoding", "Connection", "X-Twilio", "Retry-After",
                         "Bad Name", "", "Content-Type"])
VALUES = st.one_of(
    st.sampled_from(["0", "2", "5", " 5 ", "5, 5", "5,6", "-1", "+5", "0x5", "1" * 21, "chunked", "Chunked", "gzip",
                     "gzip, chunked", "close", "keep-alive", "Keep-Alive, Close", "", "a\tb", "a\x01b", "a\x00b", "\xe9t\xe9"]),
    st.text(alphabet=" \t\x7fabc,;=\x01", max_size=6),
)


@st.composite
def heads(draw: st.DrawFn, final: bool = True, framing: tuple[tuple[str, str], ...] = ()) -> bytes:
    version = draw(st.sampled_from(["1.1", "1.1", "1.0", "2.0", "1.x"]))
    status = draw(st.sampled_from([200, 201, 204, 304, 400, 429, 500])) if final else draw(st.sampled_from([100, 101, 103]))
    reason = draw(st.sampled_from([" OK", " Created", "", " ", " Too Many\tRequests", " \xe9"]))
    eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
    lines = [f"HTTP/{version} {status}{reason}"]
    fields = draw(st.lists(st.tuples(NAMES, VALUES), max_size=3)) + list(framing)
    for name, value in draw(st.permutations(fields)):
        lines.append(f"{name}:{draw(st.sampled_from(['', ' ', chr(9)]))}{value}{draw(st.sampled_from(['', ' ']))}")
        if draw(st.integers(0, 9)) == 0:
            lines.append(" folded")
    return (eol.join(lines) + eol + eol).encode("latin-1")


def chunked(data: bytes, ext: bytes = b"", trailer: bytes = b"") -> bytes:
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 5]), data[i:i + 5]) for i in range(0, len(data), 5))
    return chunks + b"0" + ext + b"\r\n" + trailer + b"\r\n"


@st.composite
def answers(draw: st.DrawFn) -> tuple[list[bytes], bool, bool]:
    """An answer (after 0-2 informational ones) framed by its length, by chunks, by the close, or at random."""
    data = draw(st.binary(max_size=12))
    framing = draw(st.sampled_from(["length", "chunked", "close", "random"]))
    fields: tuple[tuple[str, str], ...] = ()
    if framing == "length":
        fields = (("Content-Length", str(len(data) + draw(st.sampled_from([0, 0, 0, 1, -1])))),)
        body = data
    elif framing == "chunked":
        fields = (("Transfer-Encoding", "chunked"),)
        body = chunked(data, draw(st.sampled_from([b"", b";name=v", b" ", b"\t;x"])),
                       draw(st.sampled_from([b"", b"X-Sum: 1\r\n", b"bad trailer\r\n"])))
        if draw(st.integers(0, 3)) == 0:  # broken: a chunk size that is no number, a short chunk, a bad footer, too long
            body = body[:-5] + draw(st.sampled_from([b"zz\r\n", b"5\r\nabc", b"3\r\nabcXY", b"0" * 21 + b"\r\n\r\n"]))
    else:
        body = data
    if framing != "random" and draw(st.booleans()):
        fields += (("Connection", draw(st.sampled_from(["close", "keep-alive", "Upgrade, Close"]))),)
    raw = b"".join(draw(st.lists(heads(final=False), max_size=2))) + draw(heads(framing=fields)) + body
    raw += draw(st.sampled_from([b"", b"", b"HTTP/1.1 500 Smuggled\r\n\r\n", b"x"]))
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=4)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return [p for p in pieces if p], draw(st.booleans()), draw(st.integers(0, 5)) == 0


@settings(max_examples=1500, deadline=None)
@given(answers())
@example(([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], False, False))
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], False, False))
@example(([b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"], False, False))
@example(([b"HTTP/1.0 200 OK\r\n\r\nto the end"], True, False))
@example(([b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"], False, True))
@example(([b"\r\nHTTP/1.1 200 OK\r\n\r\n"], False, False))
@example(([b" HTTP/1.1 200 OK"], False, False))
@example(([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npartial"], True, False))
@example(([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"okx"], False, False))
@example(([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n"], False, False))
@example(([b"HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"], False, False))
@example(([b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"], False, False))
def test_the_wire_reads_every_answer_as_h11_does(case: tuple[list[bytes], bool, bool]) -> None:
    pieces, eof, head_request = case
    assert by_wire(pieces, eof, head_request) == by_h11(pieces, eof, head_request)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=8), st.text(max_size=8), st.text(alphabet="/?=&%az\x00 \x7f\xe9", min_size=1, max_size=6))
def test_a_request_is_refused_exactly_where_h11_refuses_it_and_otherwise_is_h11s_bytes(name: str, value: str, target: str) -> None:
    assume(name.lower() not in ("content-length", "transfer-encoding", "host"))  # the pool sets these, never a caller
    headers = [("Host", "x"), (name, value), ("Content-Length", "2")]
    try:
        conn = h11.Connection(h11.CLIENT)
        theirs: bytes | None = conn.send(h11.Request(method=b"POST", target=target, headers=headers)) + conn.send(h11.Data(data=b"ok"))
    except (h11.LocalProtocolError, UnicodeEncodeError):
        theirs = None
    try:
        ours: bytes | None = request_bytes(b"POST", target, headers, b"ok")
    except RequestRefused as exc:
        assert repr(value) not in str(exc) and repr(value.encode('utf-8')) not in str(exc)  # never quoted: a credential, maybe
        ours = None
    assert ours == theirs


def test_a_body_beyond_its_length_and_a_long_head_are_not_taken() -> None:
    answer = AnswerReader()
    answer.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 500 Smuggled\r\n\r\n")
    assert answer.done and b"".join(answer.chunks) == b"ok" and not answer.reusable
    with pytest.raises(Malformed, match="beyond its limit"):
        AnswerReader().feed(b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000)
    with pytest.raises(Malformed, match="chunk header beyond"):
        AnswerReader().feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 70_000)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=6), st.text(max_size=12)), max_size=4))
def test_a_form_is_the_bytes_urlencode_makes(fields: list[tuple[str, str]]) -> None:
    try:
        expected = urlencode(fields).encode("ascii")
    except UnicodeEncodeError:  # a lone surrogate: urlencode refuses it, and so does the form
        with pytest.raises(UnicodeEncodeError):
            form_urlencoded(fields)
        return
    assert form_urlencoded(fields) == expected
