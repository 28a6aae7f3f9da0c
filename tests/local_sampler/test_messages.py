"""The Anthropic Messages API on the embedded model, through the official `anthropic` SDK:
translated onto chat, a greedy message says what a greedy chat completion says, whole and
streamed, with the same output tokens; `count_tokens` is the model's own count of the
prompt the chat completion was charged for."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anthropic

from tests.local_sampler.conftest import CHAT_MODEL

if TYPE_CHECKING:
    import openai

    from tests.turnout_server import RunningTurnout

QUESTION = "Name a primary colour."
MAX_TOKENS = 12
# This SDK's `create` no longer names `temperature`; the API still takes it.
GREEDY: Any = {"temperature": 0}


def test_a_greedy_message_answers_as_the_chat_does(
    server: RunningTurnout, client: openai.OpenAI
) -> None:
    chat = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    asked: Any = {
        "model": CHAT_MODEL,
        "max_tokens": MAX_TOKENS,
        "messages": [{"role": "user", "content": QUESTION}],
        "extra_body": GREEDY,
    }
    with anthropic.Anthropic(base_url=server.url, api_key="unused", timeout=120) as sdk:
        message = sdk.messages.create(**asked)
        with sdk.messages.stream(**asked) as stream:
            streamed_text = "".join(stream.text_stream)
            streamed = stream.get_final_message()
        counted = sdk.messages.with_raw_response.count_tokens(
            model=CHAT_MODEL, messages=asked["messages"]
        )

    answer = chat.choices[0].message.content
    assert answer
    cut = chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    for reply in (message, streamed):
        assert reply.model == CHAT_MODEL
        assert [block.type for block in reply.content] == ["text"]
        assert reply.content[0].text == answer  # type: ignore[union-attr]
        assert reply.stop_reason == ("max_tokens" if cut else "end_turn")
        assert reply.usage.output_tokens == chat.usage.completion_tokens
        # Anthropic's input_tokens leave out what a prefix cache served; chat's count it.
        usage = reply.usage
        cached = (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
        assert usage.input_tokens + cached == chat.usage.prompt_tokens
    assert streamed_text == answer
    assert counted.headers["x-turnout-token-count"] == "model"
    assert counted.parse().input_tokens == chat.usage.prompt_tokens
