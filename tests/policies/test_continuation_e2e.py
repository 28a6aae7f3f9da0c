"""Streams that break after content reached the client are continued (policies/continuation.py):
real Turnout, fake upstreams on loopback that cut or stall mid-stream and continue a
prefill, the official SDK reading one whole stream."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from policies.rules import estimate_prompt_tokens
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply, ToolUse
from tests.fakes.anthropic_upstream import MidStreamError as AnthropicMidStreamError
from tests.fakes.openai_upstream import (
    CutStream,
    FakeOpenAIUpstream,
    MalformedEvent,
    MidStreamError,
    Ok,
    StallMidStream,
    Status,
)
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
TARGET = "alpha beta gamma delta epsilon zeta"  # the fake streams it a word per chunk
MESSAGES: list[Any] = [{"role": "user", "content": "say the words"}]
TIMEOUTS = {"connect": 2, "first_byte": 3, "stream_idle": 0.6, "total": 15}


def config(
    upstreams: dict[str, FakeOpenAIUpstream], prefill: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    """A model `m` served by each upstream in order; those named in `prefill` declare it."""
    built = simple_config({n: u.base_url for n, u in upstreams.items()}, timeouts=TIMEOUTS, **extra)
    for name in prefill:
        built["providers"][name]["capabilities"] = {"prefill": True}
    return built


@dataclass
class Seen:
    text: dict[int, str] = field(default_factory=dict)
    finish: dict[int, list[str]] = field(default_factory=dict)
    usage: Any = None
    chunks: list[Any] = field(default_factory=list)
    error: openai.APIError | None = None


def chat(server: RunningTurnout, **kwargs: Any) -> Seen:
    seen = Seen()
    with server.client() as client:
        try:
            stream = client.chat.completions.create(
                model="m", messages=kwargs.pop("messages", MESSAGES), stream=True, **kwargs
            )
            for chunk in stream:
                seen.chunks.append(chunk)
                seen.usage = chunk.usage or seen.usage
                for c in chunk.choices:
                    seen.text[c.index] = seen.text.get(c.index, "") + (c.delta.content or "")
                    if c.finish_reason:
                        seen.finish.setdefault(c.index, []).append(c.finish_reason)
        except openai.APIError as exc:
            seen.error = exc
    return seen


def completion(server: RunningTurnout, **kwargs: Any) -> Seen:
    seen = Seen()
    with server.client() as client:
        try:
            stream = client.completions.create(model="m", stream=True, **kwargs)
            for chunk in stream:
                seen.chunks.append(chunk)
                seen.usage = chunk.usage or seen.usage
                for c in chunk.choices:
                    seen.text[c.index] = seen.text.get(c.index, "") + c.text
                    if c.finish_reason:
                        seen.finish.setdefault(c.index, []).append(c.finish_reason)
        except openai.APIError as exc:
            seen.error = exc
    return seen


def assistant_prefill(up: FakeOpenAIUpstream, request: int = -1) -> Any:
    body = up.requests[request].json
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]  # nothing invented
    return body["messages"][-1]["content"]


def continuations(server: RunningTurnout, outcome: str) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    name = f'turnout_stream_continuations_total{{outcome="{outcome}"}}'
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return float(lines[0].split()[-1]) if lines else 0.0


# ---- chat, continued whole -------------------------------------------------------------------


def test_a_stall_is_continued_on_the_fallback_with_the_partial_answer_as_prefill(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(StallMidStream(after_events=4, text=TARGET))  # role + 3 words
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("a", "b")))
    seen = chat(server, stream_options={"include_usage": True})
    assert seen.error is None
    assert seen.text == {0: TARGET}  # nothing repeated, nothing missing
    assert seen.finish == {0: ["stop"]}
    assert assistant_prefill(upstream_b) == "alpha beta gamma"
    assert len(upstream.requests) == 1  # a stall is not retried on the same deployment
    assert {c.id for c in seen.chunks} == {seen.chunks[0].id}  # one stream
    assert seen.chunks[-1].model_extra["turnout"] == {
        "continued": 1,
        "usage_estimated": True,
        "cost_usd": None,  # the request's cost (router/cost_report.py): these are unpriced
    }
    # The broken attempt estimated ("alpha beta gamma": 16 characters, 4 tokens), the
    # continuation's as the fake counts it (words).
    estimated = estimate_prompt_tokens({"messages": MESSAGES})
    assert seen.usage.completion_tokens == 4 + 3
    assert seen.usage.prompt_tokens == estimated + 3 + 3
    assert continuations(server, "ok") == 1


def test_a_reset_is_continued_on_the_same_deployment_when_retryable(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        CutStream(after_events=3, pause=0.2, text=TARGET), Ok(text=TARGET, prefill=True)
    )
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("a", "b")))
    seen = chat(server)
    assert seen.error is None
    assert seen.text == {0: TARGET}
    assert seen.finish == {0: ["stop"]}
    assert assistant_prefill(upstream) == "alpha beta"
    assert upstream_b.requests == []
    assert all(c.usage is None for c in seen.chunks)  # the client did not ask for usage


def test_a_malformed_event_is_continued_on_the_fallback(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    # Retryable, but `a` cannot continue an assistant message: `b`, which can, does.
    upstream.enqueue(MalformedEvent(after_events=3, text=TARGET))  # role + 2 words, then junk
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("b",)))
    seen = chat(server)
    assert seen.error is None
    assert seen.text == {0: TARGET}
    assert seen.finish == {0: ["stop"]}
    assert assistant_prefill(upstream_b) == "alpha beta"


def test_an_upstream_error_event_is_continued_and_max_tokens_is_what_is_left(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(MidStreamError(after_events=3), Ok(prefill=True, text="echo: say the words"))
    server = turnout(config({"a": upstream}, prefill=("a",)))
    seen = chat(server, max_tokens=10)
    assert seen.error is None
    assert seen.text == {0: "echo: say the words"}
    assert upstream.requests[-1].json["max_tokens"] == 10 - 2  # "echo:", " say" were sent


def test_without_prefill_a_chat_stream_still_ends_with_the_in_band_error(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(CutStream(after_events=3, pause=0.2, text=TARGET))
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}))  # nobody declares prefill
    seen = chat(server)
    assert isinstance(seen.error, openai.APIError)
    assert not isinstance(seen.error, openai.APIStatusError)  # in-band, after the 200
    assert seen.text == {0: "alpha beta"}
    assert upstream_b.requests == []
    assert len(upstream.requests) == 1
    assert continuations(server, "not_continuable") == 1


def test_a_choice_that_was_emitting_a_tool_call_is_not_continued(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    tool = ToolUse("lookup", {"q": "weather in Paris"})
    # Events: start, text block (start, ping, 3 words, stop), tool block start, 2 fragments.
    claude.enqueue(AnthropicMidStreamError(after_events=10, tool=tool), Reply(prefill=True))
    server = turnout(anthropic_config(claude))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    seen = chat(server, tools=tools)
    assert isinstance(seen.error, openai.APIError)
    assert seen.text == {0: "Hello from Claude"}
    assert len(claude.requests) == 1
    assert continuations(server, "not_continuable") == 1


def test_a_refused_continuation_reports_the_original_failure(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(MidStreamError(after_events=3, message="the original failure"))
    upstream.set_default(Status(400, message="prefill refused"))
    upstream_b.set_default(Status(400, message="prefill refused too"))
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("a", "b")))
    with (
        server.http() as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES, "stream": True},
        ) as response,
    ):
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    error = json.loads(events[-2])["error"]
    assert "the original failure" in error["message"]
    assert "refused" not in error["message"]
    assert events[-1] == "[DONE]"
    assert len(upstream.requests) == 2  # the original and its refused continuation
    assert continuations(server, "failed") == 1


# ---- completions ---------------------------------------------------------------------------


def test_completions_are_continued_with_the_prompt_plus_the_text_sent(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(CutStream(after_events=2, pause=0.2, text=TARGET))
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    upstream.set_default(Status(503))  # continuing on the same deployment fails: on to b
    server = turnout(config({"a": upstream, "b": upstream_b}))  # no prefill needed
    seen = completion(server, prompt="Words:", max_tokens=20)
    assert seen.error is None
    assert seen.text == {0: TARGET}
    assert seen.finish == {0: ["stop"]}
    sent = upstream_b.requests[-1].json
    assert sent["prompt"] == "Words:alpha beta"
    assert sent["max_tokens"] == 18


def test_n_choices_are_each_continued(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    # The fake streams choice 0 whole (a chunk a word, then its finish), then choice 1:
    # cut after choice 1's first word.
    finished_first = len(TARGET.split()) + 1
    upstream.enqueue(CutStream(after_events=finished_first + 1, pause=0.2, text=TARGET))
    upstream.set_default(Ok(text=TARGET, prefill=True))
    server = turnout(config({"a": upstream}))
    seen = completion(server, prompt="Words:", n=2, max_tokens=20)
    assert seen.error is None
    assert seen.text == {0: TARGET, 1: TARGET}
    assert seen.finish == {0: ["stop"], 1: ["stop"]}
    assert upstream.requests[-1].json.get("n", 1) == 1
    assert upstream.requests[-1].json["prompt"] == "Words:alpha"


# ---- the seam ------------------------------------------------------------------------------


def test_a_stop_string_split_across_the_seam_still_stops(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    text = "one two END three"  # pieces: "one", " two", " END", " three"
    upstream.enqueue(CutStream(after_events=4, pause=0.2, text="one two EN"))  # role + 3
    upstream.set_default(Ok(text=text, prefill=True))
    server = turnout(config({"a": upstream}, prefill=("a",)))
    seen = chat(server, stop=["END"])
    assert seen.error is None
    assert seen.text == {0: "one two EN"}  # what was sent stays; nothing after the stop
    assert seen.finish == {0: ["stop"]}


def test_a_multibyte_character_cut_mid_byte_is_continued_whole(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    text = "naïve café — 日本語 über"
    upstream.enqueue(CutStream(after_events=3, pause=0.2, text=text, partial=True))
    upstream.set_default(Ok(text=text, prefill=True))
    server = turnout(config({"a": upstream}, prefill=("a",)))
    seen = chat(server)
    assert seen.error is None
    assert seen.text == {0: text}
    assert "\ufffd" not in seen.text[0]
    assert assistant_prefill(upstream) == "naïve café"


# ---- Anthropic's prefill -------------------------------------------------------------------


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    fake = FakeAnthropicUpstream().start()
    yield fake
    fake.stop()


def anthropic_config(claude: FakeAnthropicUpstream, prefill: bool = True) -> dict[str, Any]:
    deployment: dict[str, Any] = {"provider": "claude", "model": "claude-sonnet-4-20250514"}
    if prefill:
        deployment["capabilities"] = {"prefill": True}
    provider = {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-test"}
    return {
        **simple_config({}, models={"m": {"deployments": [deployment]}}, timeouts=TIMEOUTS),
        "providers": {"claude": provider},
    }


def test_anthropic_prefill_holds_trailing_whitespace_back(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    text = "Hello  there world"  # pieces: "Hello", " ", " there", " world"
    # Events: message_start, block start, ping, "Hello", " " — then an overloaded error.
    claude.enqueue(
        AnthropicMidStreamError(after_events=5, text=text), Reply(text=text, prefill=True)
    )
    server = turnout(anthropic_config(claude))
    seen = chat(server, stream_options={"include_usage": True})
    assert seen.error is None
    assert seen.text == {0: text}  # the held " " is not repeated
    assert seen.finish == {0: ["stop"]}
    prefill = claude.requests[-1].json["messages"][-1]
    assert prefill == {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]}
    assert seen.chunks[-1].model_extra["turnout"]["continued"] == 1


def test_anthropic_without_declared_prefill_is_not_continued(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(AnthropicMidStreamError(after_events=5))
    server = turnout(anthropic_config(claude, prefill=False))
    seen = chat(server)
    assert isinstance(seen.error, openai.APIError)
    assert len(claude.requests) == 1


def test_the_break_still_counts_against_the_deployment_that_broke(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(StallMidStream(after_events=3, text=TARGET))
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    upstreams = {"a": upstream, "b": upstream_b}
    server = turnout(config(upstreams, prefill=("a", "b"), breaker={"failures": 1}))
    seen = chat(server)
    assert seen.text == {0: TARGET}
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'turnout_breaker_state{deployment="a/a-model"} 2.0' in metrics  # opened
    assert 'turnout_breaker_state{deployment="b/b-model"} 0.0' in metrics
