"""/v1/embeddings from a `kind: jax` deployment of all-minilm-l6-v2, through the official
openai SDK: float and base64 encodings, `dimensions`, batches of texts and token lists,
usage, and the 400 for a too-long input — each vector checked against the torch embedder."""

from __future__ import annotations

import math

import numpy as np
import openai
import pytest

from providers.jax.embedder import JaxEmbedder
from providers.torch.embedder import TorchEmbedder
from tests.providers.jax.conftest import EMBEDDING_MODEL
from tests.providers.jax.test_embedder import assert_parity

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today.", "Hi"]


@pytest.fixture(scope="module")
def reference(served_embedder: JaxEmbedder, torch_minilm: TorchEmbedder) -> TorchEmbedder:
    return torch_minilm  # requested through served_embedder: skips without the package


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def test_float_and_base64_agree_with_torch(client: openai.OpenAI, reference: TorchEmbedder) -> None:
    as_float = client.embeddings.create(
        model=EMBEDDING_MODEL, input=TEXTS[0], encoding_format="float"
    )
    as_base64 = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS[0])  # SDK: base64
    vector = as_float.data[0].embedding
    assert len(vector) == 384
    assert math.isclose(norm(vector), 1, abs_tol=1e-5)
    # base64 carries the same float32 values: equal to the last bit.
    assert as_base64.data[0].embedding == vector
    assert_parity([vector], reference.embed([TEXTS[0]])[0])
    assert as_float.usage.prompt_tokens == as_base64.usage.prompt_tokens == 7


def test_dimensions_give_torchs_shortened_unit_vectors(
    client: openai.OpenAI, reference: TorchEmbedder
) -> None:
    short = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, dimensions=64)
    vectors = [item.embedding for item in short.data]
    assert [len(vector) for vector in vectors] == [64, 64, 64]
    for vector in vectors:
        assert math.isclose(norm(vector), 1, abs_tol=1e-5)
    assert_parity(vectors, reference.embed(TEXTS, dimensions=64)[0])
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=385)
    assert "dimensions" in caught.value.message


def test_batches_of_texts_and_token_lists(client: openai.OpenAI, reference: TorchEmbedder) -> None:
    texts = client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS, encoding_format="float")
    assert [item.index for item in texts.data] == [0, 1, 2]
    vectors = [item.embedding for item in texts.data]
    assert_parity(vectors, reference.embed(TEXTS)[0])
    ids = [reference.tokenizer(text, add_special_tokens=False)["input_ids"] for text in TEXTS]
    tokens = client.embeddings.create(model=EMBEDDING_MODEL, input=ids)
    assert_parity([item.embedding for item in tokens.data], vectors)
    assert tokens.usage.prompt_tokens == texts.usage.prompt_tokens == sum(map(len, ids))
    one = client.embeddings.create(model=EMBEDDING_MODEL, input=ids[1])
    assert_parity([one.data[0].embedding], [vectors[1]])
    similarity = float(np.dot(vectors[0], vectors[1]))
    assert similarity < 0.5  # different sentences are not the same vector


def test_too_long_input_is_a_400_naming_input(client: openai.OpenAI, reference: object) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=EMBEDDING_MODEL, input=["fine", "word " * 600])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.get("param") == "input"
    assert "input 1" in caught.value.message
