"""Batches on the in-process samplers: each line runs through the same pipeline as a live
request, so a greedy batch line's answer is the live answer, word for word."""

from __future__ import annotations

import io
import json
import time
from typing import TYPE_CHECKING, Any

from tests.local_sampler.conftest import CHAT_MODEL, EMBEDDING_MODEL

if TYPE_CHECKING:
    import openai
    from openai.types import Batch

PROMPTS = ["Name a colour.", "Say hello in French.", "Count to three."]


def _run(client: openai.OpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> Batch:
    lines = [
        {"custom_id": f"line-{i}", "method": "POST", "url": endpoint, "body": body}
        for i, body in enumerate(bodies)
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )
    deadline = time.monotonic() + 120
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    return batch


def _answers(client: openai.OpenAI, batch: Batch) -> dict[str, Any]:
    assert batch.output_file_id is not None
    text = client.files.content(batch.output_file_id).read().decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(line["response"]["status_code"] == 200 for line in lines)
    return {line["custom_id"]: line["response"]["body"] for line in lines}


def test_a_greedy_chat_batch_answers_as_live_requests_do(client: openai.OpenAI) -> None:
    bodies = [
        {
            "model": CHAT_MODEL,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 8,
            "temperature": 0,
        }
        for prompt in PROMPTS
    ]
    batch = _run(client, "/v1/chat/completions", bodies)
    answers = _answers(client, batch)

    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(PROMPTS)
    for i, body in enumerate(bodies):
        live = client.chat.completions.create(**body)
        answered = answers[f"line-{i}"]["choices"][0]["message"]["content"]
        assert answered == live.choices[0].message.content
    assert batch.usage is not None
    assert batch.usage.output_tokens > 0


def test_an_embeddings_batch_matches_live_embeddings(client: openai.OpenAI) -> None:
    bodies = [{"model": EMBEDDING_MODEL, "input": prompt} for prompt in PROMPTS]
    answers = _answers(client, _run(client, "/v1/embeddings", bodies))

    for i, body in enumerate(bodies):
        live = client.embeddings.create(**body).data[0].embedding
        batched = answers[f"line-{i}"]["data"][0]["embedding"]
        assert max(abs(a - b) for a, b in zip(live, batched, strict=True)) < 1e-5
