"""/v1/embeddings through the openai SDK: encodings, dimensions, input forms, limits."""

from __future__ import annotations

import math

import openai
import pytest

from tests import local_model
from tests.local_sampler.conftest import EMBEDDING_MODEL

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today."]


def close(a: list[float], b: list[float], tolerance: float = 1e-5) -> bool:
    return len(a) == len(b) and all(
        math.isclose(x, y, abs_tol=tolerance) for x, y in zip(a, b, strict=True)
    )


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_float_and_base64_agree(client: openai.OpenAI) -> None:
    as_float = client.embeddings.create(
        model=EMBEDDING_MODEL, input=TEXTS[0], encoding_format="float"
    )
    as_base64 = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0])  # SDK: base64
    vector = as_float.data[0].embedding
    assert len(vector) == 384
    assert math.isclose(norm(vector), 1, abs_tol=1e-4)
    assert close(as_base64.data[0].embedding, vector)
    assert as_float.usage.prompt_tokens == as_base64.usage.prompt_tokens > 0


def test_dimensions_give_shortened_unit_vectors(client: openai.OpenAI) -> None:
    full = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0]).data[0].embedding
    short = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, dimensions=64)
    for item in short.data:
        assert len(item.embedding) == 64
        assert math.isclose(norm(item.embedding), 1, abs_tol=1e-4)
    scale = norm(full[:64])
    assert close(short.data[0].embedding, [x / scale for x in full[:64]], 1e-4)


def test_list_and_token_inputs(client: openai.OpenAI) -> None:
    batch = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS)
    assert [item.index for item in batch.data] == [0, 1]
    singles = [
        client.embeddings.create(model=EMBEDDING_MODEL, input=text).data[0].embedding
        for text in TEXTS
    ]
    for item, single in zip(batch.data, singles, strict=True):
        assert close(item.embedding, single)
    assert not close(singles[0], singles[1], 0.1)

    tokenizer = local_model.minilm().tokenizer
    ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    one = client.embeddings.create(model=EMBEDDING_MODEL, input=ids[0])
    assert close(one.data[0].embedding, singles[0])
    assert one.usage.prompt_tokens == len(ids[0])
    many = client.embeddings.create(model=EMBEDDING_MODEL, input=ids)
    for item, single in zip(many.data, singles, strict=True):
        assert close(item.embedding, single)
    assert many.usage.prompt_tokens == batch.usage.prompt_tokens == len(ids[0]) + len(ids[1])


def test_too_long_input_is_a_400_naming_input(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input=["fine", "word " * 600])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.get("param") == "input"
    assert "input 1" in caught.value.message
