"""`SentenceEmbedder`: the half of a sentence embedder that does not depend on the
framework running the encoder, shared by `providers.torch` and `providers.jax` so that both
accept, count and refuse inputs the same way.

It turns OpenAI's inputs (texts, or lists of this model's token ids) into token lists,
refuses what the model cannot take, wraps each input in [CLS] ... [SEP], pads batches, and
shortens vectors to `dimensions`; the framework supplies one step, `_pooled`: the encoder's
last hidden states mean-pooled over real tokens and L2-normalized.

An input longer than the model takes is refused rather than silently truncated: a
truncated embedding would describe only the start of the text, and the caller can turn the
ValueError into a 400. Imported only by the embedders (numpy is in the `local` extra)."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

DEFAULT_BATCH_SIZE = 32
SPECIAL_TOKENS_PER_INPUT = 2  # [CLS] ... [SEP]
NORM_EPSILON = 1e-12  # torch's F.normalize: a zero vector stays zero instead of NaN

EmbeddingInput = str | Sequence[int]


class SentenceEmbedder(ABC):
    """Embeds batches of texts or token lists; see `embed`."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_tokens: int,
        dimensions: int,
        vocab_size: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        if not isinstance(cls_id, int) or not isinstance(sep_id, int):
            raise ValueError("the embedding tokenizer has no [CLS]/[SEP] tokens")
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens  # per input, the [CLS] and [SEP] it is wrapped in included
        self.dimensions = dimensions
        self.vocab_size = vocab_size
        self.batch_size = batch_size
        self._cls_id, self._sep_id = cls_id, sep_id
        self._pad_id = tokenizer.pad_token_id or 0

    @property
    def max_input_tokens(self) -> int:
        """The longest input accepted, in tokens of its own (specials not counted)."""
        return self.max_tokens - SPECIAL_TOKENS_PER_INPUT

    def embed(
        self, inputs: Sequence[EmbeddingInput], dimensions: int | None = None
    ) -> tuple[list[list[float]], int]:
        """Unit vectors for `inputs`, and how many tokens the inputs hold.

        The count is the inputs' own tokens, without the [CLS]/[SEP] every input is wrapped
        in: a token-list input of n ids counts n. `dimensions` keeps the first components
        and normalizes again (as OpenAI's shortened embeddings do)."""
        if dimensions is not None and not 1 <= dimensions <= self.dimensions:
            raise ValueError(f"dimensions must be between 1 and {self.dimensions}")
        token_lists = [self._tokens(index, item) for index, item in enumerate(inputs)]
        vectors: list[list[float]] = []
        for start in range(0, len(token_lists), self.batch_size):
            ids, mask = self._padded(token_lists[start : start + self.batch_size])
            embedded = self._pooled(ids, mask)
            if dimensions is not None:
                embedded = normalized(embedded[:, :dimensions])
            vectors.extend(embedded.tolist())
        return vectors, sum(len(tokens) for tokens in token_lists)

    @abstractmethod
    def _pooled(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """float32 [rows, dimensions]: for ids and mask [rows, width] (int64; mask 1 on real
        tokens, [CLS] and [SEP] included), the mean of each row's real tokens' last hidden
        states, L2-normalized."""

    def _tokens(self, index: int, item: EmbeddingInput) -> list[int]:
        if isinstance(item, str):
            tokens: list[int] = self.tokenizer(item, add_special_tokens=False)["input_ids"]
        else:
            tokens = [int(token) for token in item]
            if any(not 0 <= token < self.vocab_size for token in tokens):
                raise ValueError(
                    f"input {index} has a token id outside the vocabulary 0..{self.vocab_size - 1}"
                )
        if len(tokens) > self.max_input_tokens:
            raise ValueError(
                f"input {index} has {len(tokens)} tokens; this model accepts at most "
                f"{self.max_input_tokens} per input"
            )
        return tokens

    def _padded(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Each input wrapped in [CLS] ... [SEP], right-padded to the longest one."""
        wrapped = [[self._cls_id, *tokens, self._sep_id] for tokens in batch]
        width = max(len(tokens) for tokens in wrapped)
        ids = np.full((len(wrapped), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(wrapped), width), dtype=np.int64)
        for row, tokens in enumerate(wrapped):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask


def normalized(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its L2 norm (as torch's F.normalize, in the rows' dtype)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    result: np.ndarray = vectors / np.maximum(norms, NORM_EPSILON)
    return result


def max_tokens(directory: Path, max_positions: int, tokenizer: PreTrainedTokenizerBase) -> int:
    """sentence-transformers' max_seq_length (what the model was trained on), else the
    smaller of the tokenizer's and the position embeddings' limits."""
    limits = [max_positions]
    settings = directory / "sentence_bert_config.json"
    if settings.is_file():
        configured = json.loads(settings.read_text()).get("max_seq_length")
        if isinstance(configured, int):
            limits.append(configured)
    elif isinstance(tokenizer.model_max_length, int):
        limits.append(tokenizer.model_max_length)
    return min(limits)
