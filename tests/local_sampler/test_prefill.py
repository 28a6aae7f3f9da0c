"""The local sampler continues a final assistant message (`continue_final_message`, as vLLM
does): what a broken stream's continuation sends it (policies/continuation.py)."""

from __future__ import annotations

import openai
import pytest

from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import FRANCE

PREFILL = {"continue_final_message": True, "add_generation_prompt": False}


def test_a_partial_chat_answer_is_continued_where_it_stopped(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_tokens=20, temperature=0, logprobs=True
    ).choices[0]
    assert whole.logprobs is not None
    assert whole.logprobs.content is not None
    tokens = [t.token for t in whole.logprobs.content]
    text = whole.message.content or ""
    assert "".join(tokens) == text
    partial = "".join(tokens[:5])  # cut at a token boundary, as a broken stream is
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[*FRANCE, {"role": "assistant", "content": partial}],
        max_tokens=20 - 5,
        temperature=0,
        stream=True,
        extra_body=PREFILL,
    )
    rest = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert partial + rest == text  # greedy: the same answer, nothing repeated


def test_continuing_needs_a_final_assistant_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, max_tokens=4, extra_body=PREFILL
        )
    assert caught.value.body["param"] == "messages"  # type: ignore[index]
