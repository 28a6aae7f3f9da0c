"""An OpenAI Agents SDK run (`OpenAIResponsesModel`) through Turnout's Responses door onto
a chat-only upstream, with one function-tool round trip: the upstream asks for the tool,
the agent runs it, and the tool's output goes back through Turnout to the model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import openai
import pytest
from agents import (
    Agent,
    FunctionTool,
    ItemHelpers,
    OpenAIResponsesModel,
    RunConfig,
    Runner,
    function_tool,
)
from openai.types.responses import ResponseCompletedEvent, ResponseCreatedEvent

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, ToolCall
from tests.turnout_server import RunningTurnout, simple_config

ARGUMENTS = '{"city": "Paris"}'
FINAL = "It is sunny in Paris."
INSTRUCTIONS = "Answer questions about the weather."
QUESTION = "What is the weather in Paris?"
# No trace is exported (there is no network, and a test should not phone home); per run
# rather than the process-wide `agents.set_tracing_disabled`, so no test leaves it behind.
OFFLINE = RunConfig(tracing_disabled=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[FakeOpenAIUpstream, RunningTurnout]]:
    with FakeOpenAIUpstream() as up:
        turnout = RunningTurnout(simple_config({"a": up.base_url})).start()
        try:
            yield up, turnout
        finally:
            turnout.stop()


def weather_tool(calls: list[str]) -> FunctionTool:
    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        calls.append(city)
        return f"sunny, 21C in {city}"

    return get_weather


@pytest.fixture
def sent() -> list[dict[str, Any]]:
    """The bodies the agent posts to Turnout, in order."""
    return []


@pytest.fixture
async def client(
    stack: tuple[FakeOpenAIUpstream, RunningTurnout], sent: list[dict[str, Any]]
) -> AsyncIterator[openai.AsyncOpenAI]:
    async def record(request: httpx.Request) -> None:
        if request.method == "POST":
            sent.append(json.loads(request.content))

    http = httpx.AsyncClient(event_hooks={"request": [record]})
    async with stack[1].async_client(api_key="k", http_client=http) as opened:
        yield opened


def forecaster(client: openai.AsyncOpenAI, calls: list[str]) -> Agent[Any]:
    model = OpenAIResponsesModel(model="m", openai_client=client)
    return Agent(
        name="forecaster", instructions=INSTRUCTIONS, model=model, tools=[weather_tool(calls)]
    )


def chat_requests(up: FakeOpenAIUpstream) -> list[dict[str, Any]]:
    return [r.json for r in up.requests if r.path == "/v1/chat/completions"]


def check_round_trip(up: FakeOpenAIUpstream, call_id: str, calls: list[str]) -> None:
    """The tool ran once with Paris; both model turns reached the chat upstream, the
    second carrying the call and its output under the same id."""
    assert calls == ["Paris"]
    first, second = chat_requests(up)
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert first["messages"][-1] == {"role": "user", "content": QUESTION}
    assert INSTRUCTIONS in json.dumps(first["messages"][0])
    assistant, tool = second["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert [(c["id"], c["function"]) for c in assistant["tool_calls"]] == [
        (call_id, {"name": "get_weather", "arguments": ARGUMENTS})
    ]
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": "sunny, 21C in Paris"}


async def test_agent_run_calls_a_tool_through_turnout(
    stack: tuple[FakeOpenAIUpstream, RunningTurnout], client: openai.AsyncOpenAI
) -> None:
    up = stack[0]
    up.reset()
    up.enqueue(ToolCall("get_weather", ARGUMENTS, call_id="call_paris"), Ok(text=FINAL))
    calls: list[str] = []
    result = await Runner.run(forecaster(client, calls), QUESTION, run_config=OFFLINE)
    assert result.final_output == FINAL
    check_round_trip(up, "call_paris", calls)
    assert [item.type for item in result.new_items] == [
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]
    first, second = result.raw_responses
    assert first.response_id is not None
    assert first.response_id.startswith("resp_")
    assert first.response_id != second.response_id
    assert [o.type for o in first.output] == ["function_call"]
    assert second.usage.output_tokens > 0


async def test_streamed_agent_run_calls_a_tool_through_turnout(
    stack: tuple[FakeOpenAIUpstream, RunningTurnout], client: openai.AsyncOpenAI
) -> None:
    up = stack[0]
    up.reset()
    up.enqueue(ToolCall("get_weather", ARGUMENTS, call_id="call_stream"), Ok(text=FINAL))
    calls: list[str] = []
    run = Runner.run_streamed(forecaster(client, calls), QUESTION, run_config=OFFLINE)
    raw: list[Any] = []
    items: list[str] = []
    async for event in run.stream_events():
        if event.type == "raw_response_event":
            raw.append(event.data)
        elif event.type == "run_item_stream_event":
            items.append(event.name)
            if event.name == "message_output_created":
                assert ItemHelpers.text_message_output(event.item) == FINAL  # type: ignore[arg-type]
    assert run.is_complete
    assert run.final_output == FINAL
    check_round_trip(up, "call_stream", calls)
    assert all(chat["stream"] is True for chat in chat_requests(up))
    assert items == ["tool_called", "tool_output", "message_output_created"]
    created = [e for e in raw if isinstance(e, ResponseCreatedEvent)]
    completed = [e for e in raw if isinstance(e, ResponseCompletedEvent)]
    assert len(created) == len(completed) == 2
    assert [c.response.id for c in created] == [c.response.id for c in completed]
    assert [o.type for o in completed[0].response.output] == ["function_call"]
    assert completed[0].response.output[0].call_id == "call_stream"  # type: ignore[union-attr]
    assert [o.type for o in completed[1].response.output] == ["message"]
    # Every event of a response carries the next sequence number.
    numbers = [e.sequence_number for e in raw]
    assert numbers == [*range(numbers.index(0, 1)), *range(len(numbers) - numbers.index(0, 1))]


async def test_chained_agent_run_rebuilds_the_conversation_in_turnout(
    stack: tuple[FakeOpenAIUpstream, RunningTurnout],
    client: openai.AsyncOpenAI,
    sent: list[dict[str, Any]],
) -> None:
    """With `auto_previous_response_id` the agent sends only the tool's output and the
    first response's id: Turnout rebuilds the call from its store, and a follow-up run
    chained on the final answer carries the whole conversation to the model."""
    up = stack[0]
    up.reset()
    up.enqueue(ToolCall("get_weather", ARGUMENTS, call_id="call_chain"), Ok(text=FINAL))
    calls: list[str] = []
    agent = forecaster(client, calls)
    result = await Runner.run(agent, QUESTION, run_config=OFFLINE, auto_previous_response_id=True)
    assert result.final_output == FINAL
    check_round_trip(up, "call_chain", calls)
    assert sent[1]["previous_response_id"] == result.raw_responses[0].response_id
    assert [item["type"] for item in sent[1]["input"]] == ["function_call_output"]
    follow_up = await Runner.run(
        agent, "And tomorrow?", run_config=OFFLINE, previous_response_id=result.last_response_id
    )
    assert follow_up.final_output == "echo: And tomorrow?"
    assert sent[2]["previous_response_id"] == result.last_response_id
    third = chat_requests(up)[2]["messages"]
    assert [m["role"] for m in third[-4:]] == ["assistant", "tool", "assistant", "user"]
    assert third[-2]["content"] == FINAL
    assert third[-1]["content"] == "And tomorrow?"
