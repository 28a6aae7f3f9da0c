"""Streaming through Turnout, end to end: SSE relayed chunk by chunk as it arrives, robust to
how the upstream frames it, transparent failover before the first chunk, an in-band error
event (never a truncated success) after it, and cancellation when the client goes away."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import (
    MID_STREAM_ERROR,
    Behavior,
    CutStream,
    FakeOpenAIUpstream,
    MalformedEvent,
    MidStreamError,
    Ok,
    Reset,
    Silence,
    StallMidStream,
    Status,
)
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]
BODY: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
TEXT = "one two three four five"  # 5 content chunks (+ the role chunk and the finish chunk)


def one(up: FakeOpenAIUpstream, **timeouts: float) -> dict[str, Any]:
    return simple_config(
        {"a": up.base_url},
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 2, "total": 15, **timeouts},
    )


def two(up_a: FakeOpenAIUpstream, up_b: FakeOpenAIUpstream, **timeouts: float) -> dict[str, Any]:
    return simple_config(
        {"a": up_a.base_url, "b": up_b.base_url},
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 2, "total": 15, **timeouts},
    )


@dataclass
class SdkStream:
    """What the openai SDK saw of one streamed chat completion."""

    text: str = ""
    chunks: list[Any] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    error: openai.APIError | None = None

    @property
    def finish_reasons(self) -> list[str]:
        return [c.finish_reason for ch in self.chunks for c in ch.choices if c.finish_reason]


def sdk_stream(server: RunningTurnout, **kwargs: Any) -> SdkStream:
    seen = SdkStream()
    with server.client() as client:
        try:
            stream = client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, **kwargs
            )
            for chunk in stream:
                seen.arrivals.append(time.monotonic())
                seen.chunks.append(chunk)
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.text += chunk.choices[0].delta.content
        except openai.APIError as exc:
            seen.error = exc
    return seen


async def async_sdk_stream(server: RunningTurnout, **kwargs: Any) -> SdkStream:
    seen = SdkStream()
    async with server.async_client() as client:
        try:
            stream = await client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, **kwargs
            )
            async for chunk in stream:
                seen.arrivals.append(time.monotonic())
                seen.chunks.append(chunk)
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.text += chunk.choices[0].delta.content
        except openai.APIError as exc:
            seen.error = exc
    return seen


@dataclass
class RawStream:
    """The SSE body exactly as Turnout framed it."""

    status: int
    headers: httpx.Headers
    events: list[str]  # data: payloads, in order
    arrivals: list[float]

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.events if e != "[DONE]"]

    @property
    def text(self) -> str:
        return "".join(
            c["choices"][0]["delta"].get("content") or "" for c in self.chunks if c.get("choices")
        )


def raw_stream(server: RunningTurnout, body: dict[str, Any] | None = None) -> RawStream:
    events: list[str] = []
    arrivals: list[float] = []
    with (
        server.http() as http,
        http.stream("POST", "/v1/chat/completions", json=body or BODY) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line.removeprefix("data: "))
                arrivals.append(time.monotonic())
            else:
                assert line == "", line  # Turnout frames only data lines
        return RawStream(response.status_code, response.headers, events, arrivals)


def assert_clean_end(raw: RawStream) -> None:
    assert raw.status == 200
    assert raw.events[-1] == "[DONE]"
    assert raw.events.count("[DONE]") == 1
    assert not any("error" in c for c in raw.chunks)


def assert_error_end(raw: RawStream) -> dict[str, Any]:
    """The stream ends `data: {"error": ...}` then `data: [DONE]`; returns the error."""
    assert raw.status == 200
    assert raw.events[-1] == "[DONE]"
    last = json.loads(raw.events[-2])
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["message"]
    assert not any("error" in c for c in raw.chunks[:-1])
    return dict(last["error"])


# ---- relaying ----------------------------------------------------------------------------


def test_chunks_are_relayed_one_by_one_as_they_arrive(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=TEXT, chunk_delay=0.2))
    seen = sdk_stream(turnout(one(upstream)))
    assert seen.error is None
    assert seen.text == TEXT
    assert len(seen.chunks) == 7  # role, five words, finish: none merged, none dropped
    # The upstream paced its 7 events 0.2 s apart; a buffering relay would hand them
    # over all at once at the end.
    assert seen.arrivals[-1] - seen.arrivals[0] >= 0.9
    gaps = [b - a for a, b in itertools.pairwise(seen.arrivals)]
    assert sum(gap >= 0.1 for gap in gaps) >= 4  # paced, not bunched


async def test_async_client_streams_chunk_by_chunk(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=TEXT, chunk_delay=0.15))
    seen = await async_sdk_stream(turnout(one(upstream)))
    assert seen.error is None
    assert seen.text == TEXT
    assert seen.finish_reasons == ["stop"]
    assert seen.arrivals[-1] - seen.arrivals[0] >= 0.6
    assert upstream.requests[0].json["stream"] is True
    assert upstream.requests[0].json["model"] == "a-model"


def test_raw_frames_and_headers(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    upstream.enqueue(Ok(text=TEXT))
    raw = raw_stream(turnout(one(upstream)))
    assert_clean_end(raw)
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.headers["x-turnout-deployment"] == "a/a-model"
    assert raw.headers["x-turnout-attempts"] == "1"
    assert raw.text == TEXT
    chunks = raw.chunks
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"


@pytest.mark.parametrize(
    "framing",
    [
        Ok(text=TEXT, split=True),
        Ok(text=TEXT, crlf=True),
        Ok(text=TEXT, comments=True),
        Ok(text=TEXT, crlf=True, comments=True, split=True),
    ],
    ids=["split", "crlf", "comments", "all"],
)
def test_upstream_framing_does_not_change_the_answer(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, framing: Ok
) -> None:
    upstream.enqueue(Ok(text=TEXT), framing)
    server = turnout(one(upstream))
    plain = raw_stream(server)
    framed = raw_stream(server)
    assert_clean_end(framed)
    assert framed.text == plain.text == TEXT
    assert len(framed.events) == len(plain.events)

    def strip_ids(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k not in {"id", "created"}} for c in chunks]

    assert strip_ids(framed.chunks) == strip_ids(plain.chunks)


def test_a_malformed_event_before_the_first_chunk_is_retried_invisibly(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    # An event that cannot be read may have carried text: the stream is broken, and
    # before anything reached the client that is an ordinary retry (then failover).
    upstream.enqueue(MalformedEvent(after_events=0))
    raw = raw_stream(turnout(two(upstream, upstream_b)))
    assert_clean_end(raw)
    assert raw.text == "echo: hi there"
    assert len(upstream.requests) == 2
    assert upstream_b.requests == []


def test_a_stream_without_done_finishes_promptly_and_whole(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=TEXT, no_done=True))
    server = turnout(one(upstream, stream_idle=5))
    started = time.monotonic()
    raw = raw_stream(server)
    assert time.monotonic() - started < 3  # it did not wait out stream_idle (5 s)
    assert_clean_end(raw)
    assert raw.text == TEXT
    assert len(raw.chunks) == 7


def test_include_usage_passes_the_usage_chunk_through(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=TEXT))
    seen = sdk_stream(turnout(one(upstream)), stream_options={"include_usage": True})
    assert seen.error is None
    assert seen.text == TEXT
    last = seen.chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 5)
    assert last.usage.total_tokens == 7
    assert all(c.usage is None for c in seen.chunks[:-1])
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}


def test_without_include_usage_no_empty_choices_chunk(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    raw = raw_stream(turnout(one(upstream)))
    assert_clean_end(raw)
    assert all(c["choices"] for c in raw.chunks)


def test_completions_endpoint_streams_too(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=TEXT, chunk_delay=0.1))
    with turnout(one(upstream)).client() as client:
        stream = client.completions.create(model="m", prompt="say", stream=True)
        pieces = [(time.monotonic(), c.choices[0].text) for c in stream if c.choices]
    assert "".join(p for _, p in pieces) == TEXT
    assert pieces[-1][0] - pieces[0][0] >= 0.3  # 5 gaps of 0.1 s upstream


# ---- failure before the first chunk: transparent failover --------------------------------


@pytest.mark.parametrize(
    "failure",
    [Status(503), Status(429), Reset(), MidStreamError(after_events=0)],
    ids=["503", "429", "reset", "error-event-first"],
)
def test_failure_before_the_first_chunk_fails_over_transparently(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    failure: Behavior,
) -> None:
    upstream.set_default(failure)
    upstream_b.enqueue(Ok(text=TEXT))
    raw = raw_stream(turnout(two(upstream, upstream_b)))
    assert_clean_end(raw)
    assert raw.text == TEXT
    assert raw.headers["x-turnout-deployment"] == "b/b-model"
    assert raw.headers["x-turnout-attempts"] == "4"  # 3 on a, then b
    assert len(upstream.requests) == 3
    assert len(upstream_b.requests) == 1


def test_failure_before_the_first_chunk_is_retried_on_the_same_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Status(502), Reset(), Ok(text=TEXT))
    seen = sdk_stream(turnout(two(upstream, upstream_b)))
    assert seen.error is None
    assert seen.text == TEXT
    assert len(upstream.requests) == 3
    assert upstream_b.requests == []


def test_every_deployment_failing_before_the_first_chunk_is_a_plain_error(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))
    upstream_b.set_default(Status(500))
    with turnout(two(upstream, upstream_b)).http() as http:
        response = http.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-turnout-attempts"] == "6"
    assert "a/a-model: 503" in response.json()["error"]["message"]


def test_streaming_silence_is_cut_by_the_total_deadline(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Silence())
    server = turnout(one(upstream, first_byte=10, total=1.5))
    started = time.monotonic()
    seen = sdk_stream(server)
    assert 1.4 <= time.monotonic() - started < 6
    assert isinstance(seen.error, openai.APIStatusError)
    assert seen.error.status_code == 504
    assert seen.chunks == []


# ---- failure after the first chunk: an in-band error, never a truncated success ----------

AFTER_FIRST_CHUNK = [
    CutStream(after_events=3, pause=0.3),
    MidStreamError(after_events=3),
    StallMidStream(after_events=3),
    MalformedEvent(after_events=3),
]
AFTER_IDS = ["cut", "error-event", "stall", "malformed"]


@pytest.mark.parametrize("failure", AFTER_FIRST_CHUNK, ids=AFTER_IDS)
def test_failure_after_chunks_were_relayed_raises_in_the_sdk(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    failure: Behavior,
) -> None:
    upstream.enqueue(failure)
    seen = sdk_stream(turnout(two(upstream, upstream_b, stream_idle=0.5)))
    assert isinstance(seen.error, openai.APIError)
    assert not isinstance(seen.error, openai.APIStatusError)  # it came in-band, after a 200
    assert seen.text == "echo: hi"  # what was relayed before the failure, nothing more
    assert seen.finish_reasons == []
    assert upstream_b.requests == []  # committed: no failover once bytes reached the client
    assert len(upstream.requests) == 1


@pytest.mark.parametrize("failure", AFTER_FIRST_CHUNK, ids=AFTER_IDS)
def test_failure_after_chunks_ends_with_an_error_event_then_done(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, failure: Behavior
) -> None:
    upstream.enqueue(failure)
    raw = raw_stream(turnout(one(upstream, stream_idle=0.5)))
    error = assert_error_end(raw)
    assert len(raw.events) == 3 + 2  # the 3 relayed chunks, the error, [DONE]
    assert raw.text == "echo: hi"
    if isinstance(failure, MidStreamError):
        assert error == json.loads(MID_STREAM_ERROR)["error"]


def test_a_stall_mid_stream_is_cut_by_stream_idle(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(StallMidStream(after_events=2))
    raw = raw_stream(turnout(one(upstream, stream_idle=0.8)))
    error = assert_error_end(raw)
    assert error["type"] == "upstream_timeout"
    stalled = raw.arrivals[-2] - raw.arrivals[-3]  # last chunk → error event
    assert 0.75 <= stalled < 5  # cut by stream_idle, not sooner, not never


def test_the_total_deadline_cuts_a_slow_stream(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=" ".join(["word"] * 30), chunk_delay=0.2))
    server = turnout(one(upstream, total=1.5))
    started = time.monotonic()
    raw = raw_stream(server)
    assert 1.4 <= time.monotonic() - started < 6
    error = assert_error_end(raw)
    assert "deadline" in error["message"]
    assert 3 <= len(raw.chunks) < 30


# ---- the client goes away ----------------------------------------------------------------


def test_client_disconnect_mid_stream_closes_the_upstream_request(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=" ".join(["word"] * 40), chunk_delay=0.25))  # a 10 s stream
    server = turnout(two(upstream, upstream_b))
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=BODY) as r:
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert "assistant" in first
        left = time.monotonic()
    closes = upstream.wait_for_client_closes(1, timeout=5)
    assert closes[0].request is upstream.requests[0]
    assert closes[0].time - left < 2  # promptly, not when the 10 s stream ended
    time.sleep(0.3)
    assert len(upstream.requests) == 1  # and the abandoned request is not retried
    assert upstream_b.requests == []


def test_client_disconnect_before_the_first_chunk_cancels_the_upstream_request(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Silence())
    server = turnout(one(upstream))
    with (
        server.http(timeout=0.5) as http,
        pytest.raises(httpx.ReadTimeout),  # no response head comes: the client gives up
        http.stream("POST", "/v1/chat/completions", json=BODY),
    ):
        pass
    left = time.monotonic()
    closes = upstream.wait_for_client_closes(1, timeout=5)
    assert closes[0].time - left < 2
    assert len(upstream.requests) == 1


def test_client_disconnect_cancels_a_non_streaming_upstream_call(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(delay=10))
    server = turnout(two(upstream, upstream_b))
    body = {"model": "m", "messages": MESSAGES}
    with server.http(timeout=0.5) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/chat/completions", json=body)
    left = time.monotonic()
    closes = upstream.wait_for_client_closes(1, timeout=5)
    assert closes[0].time - left < 2  # long before the upstream's 10 s answer
    time.sleep(0.3)
    assert len(upstream.requests) == 1
    assert upstream_b.requests == []
