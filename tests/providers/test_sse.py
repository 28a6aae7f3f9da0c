"""The SSE decoder, the OpenAI wire translation of errors and events, and Retry-After parsing:
pure functions, checked on bytes and headers without I/O."""

from __future__ import annotations

import email.utils
import time

import orjson
import pytest

from providers.errors import Failure
from providers.http import MAX_RETRY_AFTER_HEADER, parse_retry_after
from providers.openai.wire import (
    DONE,
    error_from_payload,
    error_from_response,
    parse_event,
)
from providers.sse import EventTooLarge, SSEDecoder, SSEEvent


def feed_all(pieces: list[bytes], *, close: bool = True) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    if close:
        events.extend(decoder.close())
    return events


def every_split(data: bytes) -> list[list[bytes]]:
    """`data` cut in two at every byte position, and in three at every pair of positions."""
    cuts = [[data[:i], data[i:]] for i in range(len(data) + 1)]
    cuts += [
        [data[:i], data[i:j], data[j:]]
        for i in range(1, len(data))
        for j in range(i + 1, len(data))
        if (i + j) % 3 == 0  # a spread-out sample keeps the count small
    ]
    return cuts


# ---- SSEDecoder: line endings ------------------------------------------------------------


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_each_line_ending_dispatches_events(nl: bytes) -> None:
    stream = b"data: one" + nl + nl + b"data: two" + nl + nl
    assert feed_all([stream], close=False) == [SSEEvent("one"), SSEEvent("two")]


@pytest.mark.parametrize("nl", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_multi_line_data_joins_with_newlines(nl: bytes) -> None:
    stream = b"data: first" + nl + b"data: second" + nl + b"data:third" + nl + nl
    assert feed_all([stream], close=False) == [SSEEvent("first\nsecond\nthird")]


def test_crlf_split_between_cr_and_lf_adds_no_blank_line() -> None:
    # Were the LF at the start of the second read taken for a line of its own, the blank
    # line would dispatch "a" alone and "b" would come out as a second event.
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [SSEEvent("a\nb")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: c\r\n\r\n") == [SSEEvent("c")]


def test_crlf_stream_split_at_every_byte_gives_the_same_events() -> None:
    stream = b"data: a\r\ndata: b\r\n\r\n: note\r\nevent: x\r\ndata: c\r\n\r\n"
    expected = [SSEEvent("a\nb"), SSEEvent("c", event="x")]
    for pieces in every_split(stream):
        assert feed_all(pieces, close=False) == expected, pieces


def test_lf_stream_split_at_every_byte_gives_the_same_events() -> None:
    stream = b'data: {"k": "v"}\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n'
    expected = [SSEEvent('{"k": "v"}'), SSEEvent("x\ny"), SSEEvent("[DONE]")]
    for pieces in every_split(stream):
        assert feed_all(pieces, close=False) == expected, pieces


def test_cr_stream_split_mid_line_keeps_event_boundaries() -> None:
    stream = b"data: a\rdata: b\r\rdata: c\r\r"
    expected = [SSEEvent("a\nb"), SSEEvent("c")]
    for pieces in every_split(stream):
        assert feed_all(pieces, close=False) == expected, pieces
    # LF right after CR-ended line and a partial one: the LF ends "data: b".
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\rdata: b") == []
    assert decoder.feed(b"\n\n") == [SSEEvent("a\nb")]


def test_empty_read_between_cr_and_lf_changes_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SSEEvent("a\nb")]


# ---- SSEDecoder: splits, UTF-8, comments, fields -----------------------------------------


def test_line_split_mid_data_waits_for_the_rest() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"choi') == []
    assert decoder.feed(b'ces": []}') == []
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"\n") == [SSEEvent('{"choices": []}')]


def test_utf8_character_split_across_reads_decodes_whole() -> None:
    text = "héllo → 世界 🎉"
    raw = f"data: {text}\n\n".encode()
    for pieces in every_split(raw):
        events = feed_all(pieces, close=False)
        assert events == [SSEEvent(text)], pieces
        assert "\ufffd" not in events[0].data


def test_comment_lines_are_ignored() -> None:
    stream = b": keep-alive\n\ndata: a\n: in the middle\ndata: b\n\n:\n\n"
    assert feed_all([stream], close=False) == [SSEEvent("a\nb")]


def test_event_names_and_default_name() -> None:
    stream = (
        b"event: message_start\ndata: {}\n\n"
        b"data: plain\n\n"
        b"event:ping\ndata: p\n\n"
        b"event: lonely\n\n"  # an event with no data dispatches nothing ...
        b"data: after\n\n"  # ... and its name does not leak into the next one
    )
    assert feed_all([stream], close=False) == [
        SSEEvent("{}", event="message_start"),
        SSEEvent("plain", event="message"),
        SSEEvent("p", event="ping"),
        SSEEvent("after", event="message"),
    ]


def test_field_value_loses_one_leading_space_only() -> None:
    stream = b"data:  two spaces\ndata:none\ndata\n\n"
    assert feed_all([stream], close=False) == [SSEEvent(" two spaces\nnone\n")]


def test_unknown_fields_are_ignored() -> None:
    stream = b"id: 7\nretry: 1000\nfoo: bar\ndata: x\n\n"
    assert feed_all([stream], close=False) == [SSEEvent("x")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert feed_all([b"\n\n\r\n\r\r\n"], close=False) == []


# ---- SSEDecoder.close() ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"data: last", [SSEEvent("last")]),  # no newline at all
        (b"data: last\n", [SSEEvent("last")]),  # line ended, event did not
        (b"data: l1\ndata: l2", [SSEEvent("l1\nl2")]),
        (b"event: e\ndata: last\r\n", [SSEEvent("last", event="e")]),
        (b"", []),
        (b": only a comment", []),
    ],
)
def test_close_dispatches_an_unterminated_last_event(tail: bytes, expected: list[SSEEvent]) -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: first\n\n" + tail) == [SSEEvent("first")]
    assert decoder.close() == expected


def test_close_after_complete_events_adds_nothing() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: [DONE]\n\n") == [SSEEvent("a"), SSEEvent("[DONE]")]
    assert decoder.close() == []


# ---- SSEDecoder: bounded ------------------------------------------------------------------


def test_a_line_that_never_ends_fails_once_past_the_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    assert decoder.feed(b"data: " + b"x" * 1000) == []
    with pytest.raises(EventTooLarge):
        decoder.feed(b"x" * 100)


def test_an_event_of_many_lines_fails_once_its_data_is_past_the_cap() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    line = b"data: " + b"x" * 100 + b"\n"
    assert decoder.feed(line * 9) == []
    with pytest.raises(EventTooLarge):
        decoder.feed(line * 2)


def test_events_completed_before_the_oversized_one_are_kept() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    with pytest.raises(EventTooLarge) as raised:
        decoder.feed(b"data: a\n\ndata: b\n\ndata: " + b"x" * 2000)
    assert raised.value.events == [SSEEvent("a"), SSEEvent("b")]


def test_events_up_to_the_cap_pass_and_the_count_restarts_per_event() -> None:
    decoder = SSEDecoder(max_event_bytes=1024)
    event = b"data: " + b"x" * 1000 + b"\n\n"
    assert decoder.feed(event * 3) == [SSEEvent("x" * 1000)] * 3
    assert decoder.feed(b": " + b"c" * 100 + b"\n" + event) == [SSEEvent("x" * 1000)]


# ---- wire: errors ------------------------------------------------------------------------


def envelope(**fields: object) -> bytes:
    return orjson.dumps({"error": fields})


def test_error_from_response_keeps_type_code_param_message() -> None:
    body = envelope(
        message="This model's maximum context length is 4096 tokens.",
        type="invalid_request_error",
        param="messages",
        code="context_length_exceeded",
    )
    error = error_from_response(400, body, None, "up")
    assert error.message == "This model's maximum context length is 4096 tokens."
    assert (error.type, error.param, error.code) == (
        "invalid_request_error",
        "messages",
        "context_length_exceeded",
    )
    assert (error.status, error.failure, error.retry_after) == (400, Failure.STATUS, None)


def test_error_from_response_keeps_retry_after_and_fills_missing_type() -> None:
    error = error_from_response(429, envelope(message="slow down"), 1.5, "up")
    assert (error.status, error.retry_after, error.message) == (429, 1.5, "slow down")
    assert error.type == "rate_limit_exceeded"
    assert error.code is None
    assert error.param is None


def test_error_from_response_stringifies_integer_codes() -> None:
    error = error_from_response(
        503, envelope(message="m", type="server_error", code=503), None, "u"
    )
    assert error.code == "503"


@pytest.mark.parametrize(
    "body",
    [b"<html><body>502 Bad Gateway</body></html>", b"upstream connect error", b"[1, 2]"],
)
def test_error_from_response_with_a_non_json_body_keeps_the_text(body: bytes) -> None:
    error = error_from_response(502, body, None, "backend-a")
    assert error.status == 502
    assert error.message.startswith("backend-a: ")
    assert body.decode()[:20] in error.message
    assert error.type == "server_error"
    assert error.failure is Failure.STATUS


def test_error_from_response_with_an_empty_body_names_the_status() -> None:
    error = error_from_response(503, b"", None, "backend-a")
    assert "HTTP 503" in error.message
    assert error.status == 503


def test_error_from_response_accepts_a_string_error() -> None:
    error = error_from_response(404, b'{"error": "model not loaded"}', None, "ollama")
    assert error.message == "model not loaded"
    assert (error.status, error.type) == (404, "not_found_error")


def test_error_from_response_caps_a_huge_body() -> None:
    error = error_from_response(500, b"x" * 100_000, None, "up")
    assert len(error.message) < 1000


def test_error_from_payload_in_a_stream_is_a_broken_stream() -> None:
    payload = orjson.loads(envelope(message="upstream broke", type="server_error"))
    error = error_from_payload(payload, in_stream=True)
    assert error is not None
    assert error.failure is Failure.STREAM_BROKEN
    assert (error.message, error.type, error.status) == ("upstream broke", "server_error", 502)
    whole = error_from_payload(payload, in_stream=False)
    assert whole is not None
    assert whole.failure is Failure.STATUS


def test_error_from_payload_ignores_normal_objects() -> None:
    assert error_from_payload({"id": "x", "choices": []}, in_stream=True) is None


# ---- wire: events ------------------------------------------------------------------------


def test_parse_event() -> None:
    assert parse_event(SSEEvent('{"id": "c", "choices": []}')) == {"id": "c", "choices": []}
    assert parse_event(SSEEvent("[DONE]")) == DONE
    assert parse_event(SSEEvent(" [DONE] ")) == DONE
    assert parse_event(SSEEvent("{this is not json")) is None
    assert parse_event(SSEEvent("[1, 2]")) is None  # JSON, but not an object
    assert parse_event(SSEEvent('"text"')) is None
    assert parse_event(SSEEvent("")) is None


# ---- http: Retry-After -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "0.5"}, 0.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # ms is the precise one
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),  # bad ms: fall back
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after": "1e12"}, MAX_RETRY_AFTER_HEADER),
        ({}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({"retry-after-ms": "abc"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    wait = parse_retry_after({"retry-after": future})
    assert wait is not None
    assert 27.0 <= wait <= 31.0
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert parse_retry_after({"retry-after": past}) == 0.0
