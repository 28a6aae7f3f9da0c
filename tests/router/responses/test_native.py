"""Native passthrough: a deployment declaring `capabilities: {responses: true}` gets the
Responses request as the client sent it (at `/v1/responses`), with Turnout still routing,
failing over and keeping the conversation; a fallback without `responses` is served
through the chat translation. Through the official SDK, against a fake upstream that
speaks the Responses API natively (tests/fakes/responses_wire.py) and a chat-only one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.behaviors import CutStream, Ok, Status
from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest
from tests.turnout_server import RunningTurnout, simple_config

WEB_SEARCH = {"type": "web_search"}


def config(
    native: FakeOpenAIUpstream, chat: FakeOpenAIUpstream, **overrides: Any
) -> dict[str, Any]:
    """`n`: a native deployment, then a chat-only one (which may continue streams); `c`:
    the chat-only one alone."""
    chat_only = {"provider": "chat", "model": "chat-model", "capabilities": {"prefill": True}}
    models = {
        "n": {
            "deployments": [
                {
                    "provider": "native",
                    "model": "native-model",
                    "capabilities": {"responses": True},
                },
                chat_only,
            ]
        },
        "c": {"deployments": [chat_only]},
    }
    return simple_config({"native": native.base_url, "chat": chat.base_url}, models, **overrides)


@pytest.fixture
def server(
    turnout: Any, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> RunningTurnout:
    server: RunningTurnout = turnout(config(upstream, upstream_b, retry={"attempts": 1}))
    return server


@pytest.fixture
def client(server: RunningTurnout) -> Iterator[openai.OpenAI]:
    with server.client() as sdk:
        yield sdk


def sent(upstream: FakeOpenAIUpstream, path: str) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.method == "POST" and r.path == path]


def said(item: dict[str, Any]) -> tuple[str, str]:
    """(role, text) of a message item."""
    content = item["content"]
    text = content if isinstance(content, str) else " ".join(p["text"] for p in content)
    return item["role"], text


def test_a_native_deployment_gets_the_request_as_sent(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    response = client.responses.create(
        model="n",
        input="hello there",
        instructions="Be brief.",
        tools=[WEB_SEARCH],  # type: ignore[list-item]
        metadata={"k": "v"},
        extra_body={"router": {"strategy": "priority"}},
    )

    [request] = sent(upstream, "/v1/responses")
    body = request.json
    assert body["model"] == "native-model"
    assert body["tools"] == [WEB_SEARCH]  # passed on, not refused: the backend has it
    assert body["instructions"] == "Be brief."
    assert body["metadata"] == {"k": "v"}
    assert body["store"] is False  # Turnout keeps the conversation
    assert "router" not in body
    assert "previous_response_id" not in body
    assert [said(item) for item in body["input"]] == [("user", "hello there")]
    assert "id" not in body["input"][0]  # an input message has none in the API
    assert not sent(upstream_b, "/v1/chat/completions")
    assert response.id.startswith("resp_")
    assert not response.id.startswith("resp_upstream")
    assert response.output_text == "echo: hello there"
    assert response.model_dump()["store"] is True  # Turnout stored it
    assert response.usage is not None
    assert response.usage.total_tokens > 0
    kept = client.responses.retrieve(response.id)
    assert kept.output_text == "echo: hello there"
    assert kept.id == response.id


def test_a_builtin_tool_is_still_refused_where_no_deployment_is_native(
    client: openai.OpenAI, upstream_b: FakeOpenAIUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="c", input="hi", tools=[WEB_SEARCH])  # type: ignore[list-item]
    assert refused.value.response.json()["error"]["param"] == "tools[0].type"
    assert not upstream_b.requests


def test_a_failing_native_deployment_falls_back_through_the_translation(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))

    response = client.responses.create(model="n", input="anyone there?", instructions="Hi.")

    assert len(sent(upstream, "/v1/responses")) == 1
    [chat] = sent(upstream_b, "/v1/chat/completions")
    assert chat.json["messages"][0] == {"role": "system", "content": "Hi."}
    assert response.output_text == "echo: anyone there?"
    assert response.model == "chat-model"
    assert not response.id.startswith("resp_upstream")


def test_a_request_only_a_native_deployment_can_honour_is_not_translated_when_it_fails(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))

    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="n", input="search this", tools=[WEB_SEARCH])  # type: ignore[list-item]

    assert failed.value.status_code == 503
    assert not upstream_b.requests  # the chat form would have lost the tool


def test_a_native_stream_passes_through_under_turnouts_id_and_numbering(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    with client.responses.stream(model="n", input="stream me please") as stream:
        events = list(stream)
        final = stream.get_final_response()

    [request] = sent(upstream, "/v1/responses")
    assert request.json["stream"] is True
    types = [event.type for event in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    ids = {event.response.id for event in events if hasattr(event, "response")}
    assert ids == {final.id}
    assert not final.id.startswith("resp_upstream")
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == "echo: stream me please"
    assert final.output_text == "echo: stream me please"
    assert client.responses.retrieve(final.id).output_text == "echo: stream me please"


def test_a_broken_native_stream_fails_and_is_not_continued(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(CutStream(after_events=5))  # after the first text delta

    with client.responses.stream(model="n", input="one two three four") as stream:
        events = list(stream)

    assert events[-1].type == "response.failed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    ids = {event.response.id for event in events if hasattr(event, "response")}
    assert len(ids) == 1
    assert not ids.pop().startswith("resp_upstream")
    assert not upstream_b.requests  # a chat deployment cannot continue a Responses stream


def test_a_native_stream_closed_before_its_final_event_is_not_completed(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(no_done=True))  # the server closes it before `response.completed`

    with client.responses.stream(model="n", input="almost done") as stream:
        events = list(stream)

    assert events[-1].type == "response.failed"
    assert "response.completed" not in [event.type for event in events]


def test_previous_response_id_works_across_native_and_chat_turns(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    first = client.responses.create(model="n", input="my name is Ada")
    second = client.responses.create(
        model="c", input="what is my name?", previous_response_id=first.id
    )
    third = client.responses.create(model="n", input="and again?", previous_response_id=second.id)

    [chat] = sent(upstream_b, "/v1/chat/completions")
    messages = [(m["role"], str(m["content"])) for m in chat.json["messages"]]
    assert messages[1] == ("assistant", "echo: my name is Ada")  # the native turn's output
    assert "what is my name?" in messages[2][1]
    last = sent(upstream, "/v1/responses")[-1].json
    assert "previous_response_id" not in last
    assert [said(item) for item in last["input"]] == [
        ("user", "my name is Ada"),
        ("assistant", "echo: my name is Ada"),
        ("user", "what is my name?"),
        ("assistant", "echo: what is my name?"),
        ("user", "and again?"),
    ]
    assert second.previous_response_id == first.id
    assert third.previous_response_id == second.id
    assert third.output_text == "echo: and again?"
    listed = client.responses.input_items.list(third.id)
    assert [item.type for item in listed.data] == ["message"]
