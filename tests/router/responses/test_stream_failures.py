"""Broken streams through the Responses door, end to end: a real Turnout, chat-only fake
upstreams on loopback that cut their stream or send an error event after some content, or
fail before any.

The chat rules hold (policies/continuation.py): a stream broken after content is continued
where a deployment can continue it (`capabilities: {prefill: true}`), and then ends
`response.completed` with the whole text; otherwise the client gets `response.failed`
(status `failed`, `error` set), never a truncated `response.completed`. A failed turn is
kept as it failed (a GET says `failed`), as OpenAI keeps it. A stream that fails before any
content fails over to the next deployment."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fakes.behaviors import Behavior
from tests.fakes.openai_upstream import CutStream, FakeOpenAIUpstream, MidStreamError, Ok, Status
from tests.router.responses.spec_checks import event_conforms, response_conforms, sse_events
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
TARGET = "alpha beta gamma delta epsilon zeta"  # the fake streams it a word per chunk
PROMPT = "say the words"
TIMEOUTS = {"connect": 2, "first_byte": 3, "stream_idle": 0.6, "total": 15}


def config(upstreams: dict[str, FakeOpenAIUpstream], prefill: tuple[str, ...] = ()) -> Any:
    """A model `m` served by each upstream in order; the deployments of those named in
    `prefill` declare that they continue an assistant message."""
    built = simple_config({n: u.base_url for n, u in upstreams.items()}, timeouts=TIMEOUTS)
    for deployment in built["models"]["m"]["deployments"]:
        if deployment["provider"] in prefill:
            deployment["capabilities"] = {"prefill": True}
    return built


def stream(server: RunningTurnout, **body: Any) -> list[dict[str, Any]]:
    """The events of one Responses stream, each checked against the spec."""
    request = {"model": "m", "input": PROMPT, "stream": True, **body}
    with server.http() as http, http.stream("POST", "/v1/responses", json=request) as answer:
        assert answer.status_code == 200, answer.read()
        events = sse_events(answer)
    for event in events:
        event_conforms(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert len({e["response"]["id"] for e in events if "response" in e}) == 1
    return events


def text_of(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def stored(server: RunningTurnout, response_id: str) -> httpx.Response:
    with server.http() as http:
        return http.get(f"/v1/responses/{response_id}")


ECHO = f"echo: {PROMPT}"  # what the fake answers when not told a text
#: Each break after content, with the whole answer it was breaking.
BROKEN_AFTER_CONTENT: list[tuple[Behavior, str]] = [
    (CutStream(after_events=3, pause=0.2, text=TARGET), TARGET),  # role + 2 words, then RST
    (MidStreamError(after_events=3, message="the backend fell over"), ECHO),
]


@pytest.mark.parametrize(("broken", "whole"), BROKEN_AFTER_CONTENT, ids=["cut", "error-event"])
def test_a_stream_broken_after_content_that_cannot_be_continued_fails(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    broken: Behavior,
    whole: str,
) -> None:
    upstream.enqueue(broken)
    upstream_b.set_default(Ok(text=whole, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}))  # nobody declares prefill

    events = stream(server)

    types = [e["type"] for e in events]
    assert types[-1] == "response.failed"
    assert "response.completed" not in types
    assert "response.output_text.delta" in types  # content had reached the client
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "server_error"
    assert failed["error"]["message"]
    if isinstance(broken, MidStreamError):
        assert "the backend fell over" in failed["error"]["message"]
    assert whole.startswith(text_of(events))  # a beginning, nothing invented
    assert upstream_b.requests == []  # what was said cannot be taken back: no failover
    # A failed turn is kept as it failed (as OpenAI keeps it), never as `completed`.
    again = stored(server, failed["id"])
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "failed"


@pytest.mark.parametrize(("broken", "whole"), BROKEN_AFTER_CONTENT, ids=["cut", "error-event"])
def test_a_stream_broken_after_content_is_continued_by_a_deployment_that_can(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    broken: Behavior,
    whole: str,
) -> None:
    upstream.enqueue(broken)
    upstream_b.set_default(Ok(text=whole, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("b",)))

    events = stream(server)

    assert events[-1]["type"] == "response.completed"
    assert "response.failed" not in [e["type"] for e in events]
    assert text_of(events) == whole  # nothing repeated, nothing missing
    done = [e for e in events if e["type"] == "response.output_text.done"]
    assert [e["text"] for e in done] == [whole]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == whole
    # b was asked to continue the assistant message a had begun.
    continued = upstream_b.requests[-1].json
    assert continued["messages"][-1]["role"] == "assistant"
    assert whole.startswith(continued["messages"][-1]["content"])
    # The stored turn is the whole, completed answer.
    again = stored(server, final["id"])
    assert again.status_code == 200, again.text
    response_conforms(again.json())
    assert again.json()["status"] == "completed"
    assert again.json()["output"][0]["content"][0]["text"] == whole


def test_a_stream_that_fails_before_any_content_fails_over(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))
    upstream_b.set_default(Ok(text=TARGET))
    server = turnout(config({"a": upstream, "b": upstream_b}))

    events = stream(server)

    assert events[-1]["type"] == "response.completed"
    assert text_of(events) == TARGET
    assert events[-1]["response"]["model"] == "b-model"
    assert len(upstream.requests) >= 1
    assert len(upstream_b.requests) == 1
    assert stored(server, events[-1]["response"]["id"]).json()["status"] == "completed"


def test_a_whole_answer_cut_mid_body_fails_over(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(CutStream(text=TARGET))  # whole: half the JSON body, then RST
    upstream_b.set_default(Ok(text=TARGET))
    server = turnout(config({"a": upstream, "b": upstream_b}))

    with server.http() as http:
        answer = http.post("/v1/responses", json={"model": "m", "input": PROMPT})

    assert answer.status_code == 200, answer.text
    response_conforms(answer.json())
    assert answer.json()["status"] == "completed"
    assert answer.json()["output"][0]["content"][0]["text"] == TARGET
    assert len(upstream_b.requests) == 1
