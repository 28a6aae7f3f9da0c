"""The Responses API end to end through the official SDK, against a chat-only fake upstream:
create (a string, a list of items, instructions, tools), stream (event order, one id from
first event to last), a conversation continued with `previous_response_id` (after a
restart too), retrieve, input items, delete, team isolation, failover, `store: false`, and
bad input refused with the offending `param`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.behaviors import Status
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEYS = {"a": "sk-resp-a", "b": "sk-resp-b"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def config(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    return simple_config(
        {"up": upstream.base_url},
        teams={name: {"keys": [key]} for name, key in KEYS.items()},
        **overrides,
    )


@pytest.fixture
def server(
    turnout: Callable[[dict[str, Any]], RunningTurnout], upstream: FakeOpenAIUpstream
) -> RunningTurnout:
    return turnout(config(upstream))


@pytest.fixture
def client(server: RunningTurnout) -> Iterator[openai.OpenAI]:
    with server.client(KEYS["a"]) as sdk:
        yield sdk


def last_chat(upstream: FakeOpenAIUpstream) -> dict[str, Any]:
    sent = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    body: dict[str, Any] = sent[-1].json
    return body


def test_a_string_input_is_answered_as_a_response(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    response = client.responses.create(model="m", input="hello there", instructions="Be brief.")

    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "echo: hello there"
    assert response.output[0].type == "message"
    assert response.usage is not None
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.instructions == "Be brief."
    sent = last_chat(upstream)
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1]["role"] == "user"


def test_items_and_tools_reach_the_chat_backend(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    response = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="auto",
        max_output_tokens=50,
        temperature=0.3,
        metadata={"session": "s1"},
    )

    assert response.output_text == "echo: Weather in Paris?"
    assert response.metadata == {"session": "s1"}
    sent = last_chat(upstream)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"
    assert sent["max_completion_tokens"] == 50
    assert sent["temperature"] == 0.3


def test_a_stream_sends_the_whole_event_sequence_under_one_id(client: openai.OpenAI) -> None:
    with client.responses.stream(model="m", input="stream me") as stream:
        events = list(stream)
        final = stream.get_final_response()

    types = [event.type for event in events]
    assert types[:2] == ["response.created", "response.in_progress"]
    assert types[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in types
    assert [event.sequence_number for event in events] == list(range(len(events)))
    ids = {event.response.id for event in events if hasattr(event, "response")}
    assert ids == {final.id}
    assert final.output_text == "echo: stream me"


def test_previous_response_id_continues_the_conversation(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    first = client.responses.create(model="m", input="my name is Ada")
    second = client.responses.create(
        model="m", input="what is my name?", previous_response_id=first.id
    )

    assert second.previous_response_id == first.id
    messages = last_chat(upstream)["messages"]
    said = [(m["role"], str(m["content"])) for m in messages]
    assert said[0][0] == "user"
    assert "my name is Ada" in said[0][1]
    assert said[1] == ("assistant", "echo: my name is Ada")
    assert said[2][0] == "user"
    assert "what is my name?" in said[2][1]


def test_stored_responses_are_retrieved_listed_and_deleted(client: openai.OpenAI) -> None:
    created = client.responses.create(model="m", input="keep me")

    assert client.responses.retrieve(created.id).output_text == "echo: keep me"
    items = client.responses.input_items.list(created.id)
    assert [item.type for item in items.data] == ["message"]
    client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    created = client.responses.create(model="m", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)


def test_another_teams_response_is_not_found(server: RunningTurnout) -> None:
    with server.client(KEYS["a"]) as a, server.client(KEYS["b"]) as b:
        mine = a.responses.create(model="m", input="private")
        with pytest.raises(openai.NotFoundError):
            b.responses.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            b.responses.input_items.list(mine.id)
        with pytest.raises(openai.NotFoundError) as refused:
            b.responses.create(model="m", input="go on", previous_response_id=mine.id)
        assert refused.value.response.json()["error"]["param"] == "previous_response_id"
        with pytest.raises(openai.NotFoundError):
            b.responses.delete(mine.id)
        assert a.responses.retrieve(mine.id).id == mine.id


@pytest.mark.parametrize(
    ("request_body", "param"),
    [
        ({"input": [{"type": "telepathy"}]}, "input[0].type"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": "hi", "temperature": 9}, "temperature"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": 42}, "input"),
    ],
)
def test_bad_input_is_refused_naming_the_param(
    client: openai.OpenAI,
    upstream: FakeOpenAIUpstream,
    request_body: dict[str, Any],
    param: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.post("/responses", body={"model": "m", **request_body}, cast_to=object)
    assert refused.value.response.json()["error"]["param"] == param
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]


def test_a_failing_deployment_fails_over(
    turnout: Callable[[dict[str, Any]], RunningTurnout],
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
) -> None:
    upstream.set_default(Status(503))
    server = turnout(
        simple_config({"a": upstream.base_url, "b": upstream_b.base_url}, retry={"attempts": 1})
    )
    with server.client() as sdk:
        response = sdk.responses.create(model="m", input="anyone there?")
    assert response.output_text == "echo: anyone there?"
    assert response.model == "b-model"


def test_a_conversation_survives_a_restart(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    settings = config(upstream, storage={"path": str(tmp_path)})
    first_server = RunningTurnout(settings).start()
    try:
        with first_server.client(KEYS["a"]) as sdk:
            first = sdk.responses.create(model="m", input="remember the number 7")
    finally:
        first_server.stop()

    second_server = RunningTurnout(settings).start()
    try:
        with second_server.client(KEYS["a"]) as sdk:
            second = sdk.responses.create(
                model="m", input="which number?", previous_response_id=first.id
            )
            assert sdk.responses.retrieve(first.id).output_text == "echo: remember the number 7"
    finally:
        second_server.stop()
    assert second.status == "completed"
    said = [str(m["content"]) for m in last_chat(upstream)["messages"]]
    assert any("remember the number 7" in text for text in said)
