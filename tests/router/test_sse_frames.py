"""`sse_frames` on its own: the frames a relayed stream becomes, what `on_end` is told, and
how a failure mid-stream ends it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from providers.errors import UpstreamError
from providers.types import JSONObject
from router.sse import estimated_usage, sse_frames, wants_usage

USAGE = {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


def piece(text: str, finish: str | None = None, **extra: Any) -> JSONObject:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [choice], **extra}


CHUNKS = [
    piece("héllo", usage=None),
    piece(" world", "stop", usage=None),
    {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": USAGE},
]


async def relay(
    chunks: list[JSONObject], fail: Exception | None = None
) -> AsyncIterator[JSONObject]:
    for chunk in chunks:
        yield chunk
    if fail is not None:
        raise fail


async def frames(
    chunks: list[JSONObject], fail: Exception | None = None, **options: Any
) -> tuple[list[Any], list[tuple[str, Any, int]]]:
    ended: list[tuple[str, Any, int]] = []

    def on_end(outcome: str, usage: Any, streamed_chars: int) -> None:
        ended.append((outcome, usage, streamed_chars))

    out = [f async for f in sse_frames(relay(chunks, fail), on_end, **options)]
    decoded = [f.removeprefix(b"data: ").removesuffix(b"\n\n") for f in out]
    return [d.decode() if d == b"[DONE]" else orjson.loads(d) for d in decoded], ended


async def test_a_client_that_did_not_ask_gets_no_usage_but_on_end_does() -> None:
    sent, ended = await frames(CHUNKS, include_usage=False)
    assert sent == [piece("héllo"), piece(" world", "stop"), "[DONE]"]
    assert ended == [("ok", USAGE, len("héllo world"))]


async def test_a_client_that_asked_gets_every_chunk_as_it_came() -> None:
    sent, ended = await frames(CHUNKS)  # the default: as asked
    assert sent == [*CHUNKS, "[DONE]"]
    assert ended == [("ok", USAGE, 11)]


async def test_no_usage_at_all_is_none_with_the_characters_relayed() -> None:
    completions = [
        {"id": "c", "choices": [{"index": 0, "text": "abc"}, {"index": 1, "text": "de"}]},
        piece("", tool_calls=None),
    ]
    completions[1]["choices"][0]["delta"]["tool_calls"] = [
        {"index": 0, "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    _, ended = await frames(completions, include_usage=False)
    assert ended == [("ok", None, 5 + 1 + 7)]


async def test_an_upstream_failure_mid_stream_is_an_error_event_then_done() -> None:
    failure = UpstreamError.stream_broken("upstream went away")
    sent, ended = await frames(CHUNKS[:1], failure)
    assert sent[-1] == "[DONE]"
    assert sent[-2]["error"]["message"] == "upstream went away"
    assert ended == [("error", None, 5)]


async def test_an_unexpected_error_mid_stream_is_a_server_error_event_then_done() -> None:
    with capture_logs() as logs:
        sent, ended = await frames(CHUNKS[:2], KeyError("a bug"))
    assert sent[:2] == CHUNKS[:2]
    assert sent[2] == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    assert sent[3] == "[DONE]"
    assert ended == [("error", None, 11)]
    [entry] = [e for e in logs if e["event"] == "stream_failed"]
    assert entry["log_level"] == "error"
    assert isinstance(entry["exc_info"], KeyError)


@pytest.mark.parametrize(
    ("body", "asked"),
    [
        ({"stream_options": {"include_usage": True}}, True),
        ({"stream_options": {"include_usage": False}}, False),
        ({"stream_options": None}, False),
        ({}, False),
    ],
)
def test_wants_usage(body: dict[str, Any], asked: bool) -> None:
    assert wants_usage(body) is asked


def test_estimated_usage_counts_the_prompt_and_the_relayed_text() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi there"}]}
    # "user" + "hi there": 12 characters, 3 tokens; 9 characters relayed: 3 tokens.
    assert estimated_usage(body, 9) == {
        "prompt_tokens": 3,
        "completion_tokens": 3,
        "total_tokens": 6,
    }
