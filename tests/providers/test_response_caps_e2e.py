"""An upstream's answer is bounded in memory (providers/http_settings.py): a 200 body past
`max_response_bytes`, an SSE line or event past `max_event_bytes`, an error body past
64 KiB. Real Turnout, fake upstreams on loopback sending 1 MiB against 64 KiB caps."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Oversized, Status
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
TARGET = "alpha beta gamma delta epsilon zeta"  # the fake streams it a word per chunk
MESSAGES: list[Any] = [{"role": "user", "content": "say the words"}]
CAP = 64 * 1024
HUGE = 1 << 20
ENDLESS = 1 << 30  # sent until Turnout hangs up: unbounded, it would read on for seconds


def config(
    upstreams: dict[str, FakeOpenAIUpstream], prefill: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A model `m` served by each upstream in order, each capped at 64 KiB; those named in
    `prefill` declare they can continue a stream."""
    built = simple_config({name: up.base_url for name, up in upstreams.items()})
    for name, provider in built["providers"].items():
        provider |= {"max_response_bytes": CAP, "max_event_bytes": CAP}
        if name in prefill:
            provider["capabilities"] = {"prefill": True}
    return built


def chat_stream(server: RunningTurnout) -> tuple[str, openai.APIError | None]:
    text = ""
    with server.client(max_retries=0) as client:
        try:
            stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
        except openai.APIError as exc:
            return text, exc
    return text, None


def failed_twice(server: RunningTurnout) -> list[openai.APIStatusError]:
    errors = []
    with server.client(max_retries=0) as client:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError) as raised:
                client.chat.completions.create(model="m", messages=MESSAGES)
            errors.append(raised.value)
    return errors


def connections(upstream: FakeOpenAIUpstream) -> list[int]:
    """Each call's upstream connection: never reused after a body left unread."""
    return [r.connection_id for r in upstream.requests if r.method == "POST"]


def test_an_oversized_body_is_a_protocol_error(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Oversized(size=HUGE))
    server = turnout(config({"a": upstream}))
    for error in failed_twice(server):
        assert error.status_code == 502
        assert error.response.json()["error"]["type"] == "upstream_protocol_error"
        assert "xxxx" not in error.response.text
    assert connections(upstream) == [1, 2]  # one attempt each: on to the next deployment


def test_an_oversized_body_fails_over_to_the_next_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Oversized(size=HUGE))
    upstream_b.set_default(Ok(text=TARGET))
    server = turnout(config({"a": upstream, "b": upstream_b}))
    with server.client(max_retries=0) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == TARGET
    assert len(upstream.requests) == 1


def test_a_body_under_the_cap_is_whole(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    upstream.set_default(Oversized(size=CAP // 2))
    server = turnout(config({"a": upstream}))
    with server.client(max_retries=0) as client:
        answer = client.chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == "x" * (CAP // 2)


def test_a_huge_error_body_is_cut_and_its_connection_closed(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(500, message="x" * HUGE))
    server = turnout(config({"a": upstream}) | {"retry": {"attempts": 1}})
    for error in failed_twice(server):
        assert error.status_code >= 500
        assert len(error.response.content) < 4096
    assert connections(upstream) == [1, 2]


def test_an_endless_line_before_content_is_retried(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Oversized(size=ENDLESS, after_events=0))
    upstream.set_default(Ok(text=TARGET))
    server = turnout(config({"a": upstream}))
    assert chat_stream(server) == (TARGET, None)
    assert len(upstream.requests) == 2
    assert upstream.wait_for_client_closes(1)[0].request is upstream.requests[0]


def test_an_endless_line_after_content_is_continued(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Oversized(size=ENDLESS, after_events=3, text=TARGET))  # role + 2 words
    upstream_b.set_default(Ok(text=TARGET, prefill=True))
    server = turnout(config({"a": upstream, "b": upstream_b}, prefill=("b",)))
    assert chat_stream(server) == (TARGET, None)
    assert upstream_b.requests[-1].json["messages"][-1]["content"] == "alpha beta"
    assert len(upstream.requests) == 1
    assert upstream.wait_for_client_closes(1)


def test_an_oversized_event_not_continued_ends_the_stream_in_band(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    # A whole event, each of its lines ended, larger than the cap: "huge" is one word.
    upstream.set_default(Ok(text="alpha beta " + "x" * HUGE))
    server = turnout(config({"a": upstream}))
    text, error = chat_stream(server)
    assert text == "alpha beta"
    assert isinstance(error, openai.APIError)
    assert not isinstance(error, openai.APIStatusError)  # in-band, after the 200
    assert "xxxx" not in str(error)
