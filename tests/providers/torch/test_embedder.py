"""`TorchEmbedder` on all-MiniLM-L6-v2."""

from __future__ import annotations

import math

import pytest

from providers.torch.embedder import TorchEmbedder


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_unit_vectors_of_384_dimensions(minilm: TorchEmbedder) -> None:
    vectors, tokens = minilm.embed(["Hello world", "Good morning, sunshine!"])
    assert [len(vector) for vector in vectors] == [384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(dot(vector, vector)), 1.0, rel_tol=1e-5)
    assert tokens == 2 + 5  # word pieces (good morning , sunshine !), without [CLS]/[SEP]


def test_similar_sentences_are_closer(minilm: TorchEmbedder) -> None:
    (cat, kitten, finance), _ = minilm.embed(
        [
            "A cat is sleeping on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly revenue grew by four percent.",
        ]
    )
    assert dot(cat, kitten) > dot(cat, finance) + 0.3


def test_batches_and_padding_do_not_change_vectors(minilm: TorchEmbedder) -> None:
    texts = ["short", "a considerably longer input that forces padding of the short one"]
    together, _ = minilm.embed(texts)
    alone = [minilm.embed([text])[0][0] for text in texts]
    for a, b in zip(together, alone, strict=True):
        assert dot(a, b) == pytest.approx(1.0, abs=1e-5)


def test_token_lists_match_their_text(minilm: TorchEmbedder) -> None:
    text = "Token lists are embedded like text."
    ids: list[int] = minilm.tokenizer(text, add_special_tokens=False)["input_ids"]
    (from_text, from_ids), tokens = minilm.embed([text, ids])
    assert dot(from_text, from_ids) == pytest.approx(1.0, abs=1e-6)
    assert tokens == 2 * len(ids)


def test_dimensions_truncates_and_renormalizes(minilm: TorchEmbedder) -> None:
    (full,), _ = minilm.embed(["Shortened embeddings"])
    (short,), _ = minilm.embed(["Shortened embeddings"], dimensions=64)
    assert len(short) == 64
    assert math.isclose(math.sqrt(dot(short, short)), 1.0, rel_tol=1e-5)
    scale = math.sqrt(dot(full[:64], full[:64]))
    assert short == pytest.approx([value / scale for value in full[:64]], abs=1e-6)
    with pytest.raises(ValueError, match="between 1 and 384"):
        minilm.embed(["x"], dimensions=385)


def test_too_long_input_is_refused(minilm: TorchEmbedder) -> None:
    assert minilm.max_input_tokens == 254  # max_seq_length 256, less [CLS] and [SEP]
    minilm.embed([[1000] * 254])
    with pytest.raises(ValueError, match=r"input 1 has 255 tokens; .* at most 254"):
        minilm.embed(["fine", [1000] * 255])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        minilm.embed([[30522]])
