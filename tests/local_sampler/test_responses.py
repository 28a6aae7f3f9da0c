"""The Responses API on the embedded model: served through the translation onto chat, a
greedy response says what a greedy chat completion says, whole and streamed, and a
conversation continues from a stored response."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.local_sampler.conftest import CHAT_MODEL

if TYPE_CHECKING:
    import openai

QUESTION = "Name a primary colour."


def test_a_greedy_response_answers_as_the_chat_does(client: openai.OpenAI) -> None:
    chat = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=12,
        temperature=0,
    )
    response = client.responses.create(
        model=CHAT_MODEL, input=QUESTION, max_output_tokens=12, temperature=0
    )

    assert response.output_text == chat.choices[0].message.content
    cut = chat.choices[0].finish_reason == "length"
    assert response.status == ("incomplete" if cut else "completed")
    assert response.usage is not None
    assert chat.usage is not None
    assert response.usage.output_tokens == chat.usage.completion_tokens

    events = list(
        client.responses.create(
            model=CHAT_MODEL, input=QUESTION, max_output_tokens=12, temperature=0, stream=True
        )
    )
    last = events[-1]
    assert last.type == ("response.incomplete" if cut else "response.completed")
    assert last.response.output_text == response.output_text  # type: ignore[union-attr]


def test_a_conversation_continues_on_the_embedded_model(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=CHAT_MODEL, input="My name is Ada.", max_output_tokens=8, temperature=0
    )
    second = client.responses.create(
        model=CHAT_MODEL,
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=8,
        temperature=0,
    )
    items = client.responses.input_items.list(second.id)
    assert second.previous_response_id == first.id
    assert second.usage is not None
    assert first.usage is not None
    # The second turn's prompt holds the first turn, its answer and the new question.
    assert second.usage.input_tokens > first.usage.input_tokens + 5
    assert [item.type for item in items.data] == ["message"]
