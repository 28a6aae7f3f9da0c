"""`JaxEmbedder` (the one the session's Turnout serves) against `TorchEmbedder` on the
packaged all-MiniLM-L6-v2, both float32 on the CPU: the same vectors, the same token
counts, the same refusals, and shape buckets that keep new lengths from compiling."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from providers.jax.bert_weights import check_bert
from providers.jax.embedder import JaxEmbedder
from providers.torch.embedder import TorchEmbedder

TEXTS = [
    "Hello world",
    "A cat is sleeping on the sofa.",
    "Quarterly revenue grew by four percent, beating analysts' estimates for a third year.",
    "x",
    "Ünïcödé, emoji 🙂 and punctuation — all of it?!",
    "the quick brown fox jumps over the lazy dog " * 20,  # 180 tokens: the 256 bucket
]
MIN_COSINE = 0.99999
MAX_DIFFERENCE = 1e-4


def assert_parity(ours: list[list[float]], theirs: list[list[float]]) -> None:
    mine, reference = np.asarray(ours), np.asarray(theirs)
    assert mine.shape == reference.shape
    cosines = (mine * reference).sum(axis=1) / (
        np.linalg.norm(mine, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosines.min() >= MIN_COSINE
    assert np.abs(mine - reference).max() <= MAX_DIFFERENCE


def test_vectors_equal_torchs_for_a_batch_and_one_by_one(
    served_embedder: JaxEmbedder, torch_minilm: TorchEmbedder
) -> None:
    ours, our_tokens = served_embedder.embed(TEXTS)
    theirs, their_tokens = torch_minilm.embed(TEXTS)
    assert our_tokens == their_tokens
    assert_parity(ours, theirs)
    for text, batched in zip(TEXTS[:3], ours, strict=False):
        (alone,), _ = served_embedder.embed([text])
        assert_parity([alone], torch_minilm.embed([text])[0])
        assert_parity([alone], [batched])  # padding to the batch's bucket changes nothing


def test_token_lists_and_dimensions_as_torch(
    served_embedder: JaxEmbedder, torch_minilm: TorchEmbedder
) -> None:
    ids: list[int] = torch_minilm.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"]
    mixed = [TEXTS[0], ids, TEXTS[2], [101, 7592, 102]]
    ours, tokens = served_embedder.embed(mixed, dimensions=64)
    theirs, their_tokens = torch_minilm.embed(mixed, dimensions=64)
    assert tokens == their_tokens
    assert [len(vector) for vector in ours] == [64] * 4
    assert_parity(ours, theirs)
    (from_text,), _ = served_embedder.embed([TEXTS[1]], dimensions=64)
    assert_parity([ours[1]], [from_text])


def test_new_lengths_and_row_counts_in_a_bucket_do_not_compile(
    served_embedder: JaxEmbedder,
) -> None:
    assert served_embedder.bucket(3, 20) == (4, 32)
    assert served_embedder.bucket(1, 3) == (1, 16)
    assert served_embedder.bucket(32, 256) == (32, 256)
    served_embedder.embed([[1000] * 20] * 3)  # 22 tokens with [CLS]/[SEP]: (4, 32)
    compiled = served_embedder.stats.count
    served_embedder.embed([[1000] * 27, [2000] * 17, [3000] * 25, [4000] * 30])
    assert served_embedder.stats.count == compiled
    fresh = (1, 64) not in served_embedder.compiled
    served_embedder.embed([[1000] * 40])  # (1, 64): compiled once, by whichever call is first
    assert served_embedder.stats.count == compiled + fresh
    assert (1, 64) in served_embedder.compiled


def test_refusals_are_the_torch_embedders(served_embedder: JaxEmbedder) -> None:
    assert served_embedder.max_input_tokens == 254  # max_seq_length 256, less [CLS] and [SEP]
    with pytest.raises(ValueError, match=r"input 1 has 255 tokens; .* at most 254"):
        served_embedder.embed(["fine", [1000] * 255])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        served_embedder.embed([[30522]])
    with pytest.raises(ValueError, match="between 1 and 384"):
        served_embedder.embed(["x"], dimensions=385)


def test_only_bert_encoders_are_converted() -> None:
    bert = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": 384,
        "num_attention_heads": 12,
        "layer_norm_eps": 1e-12,
    }
    assert check_bert(SimpleNamespace(**bert)) == (12, 1e-12)
    with pytest.raises(ValueError, match="BERT encoders only; this model is 'roberta'"):
        check_bert(SimpleNamespace(**{**bert, "model_type": "roberta"}))
    with pytest.raises(ValueError, match="exact GELU"):
        check_bert(SimpleNamespace(**{**bert, "hidden_act": "gelu_new"}))
