"""`TorchEmbedder`: sentence embeddings from a sentence-transformers BERT-style model
directory (all-MiniLM-L6-v2): the encoder's last hidden states, mean-pooled over real
tokens, L2-normalized.

Inputs are texts or lists of this model's token ids. An input longer than the model takes
is refused rather than silently truncated: a truncated embedding would describe only the
start of the text, and the caller can turn the ValueError into a 400."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import structlog
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from providers.local.packaged import ModelSource, resolve_model
from providers.torch.loading import DeviceName, resolve_device

log = structlog.get_logger("turnout.providers.torch")

DEFAULT_BATCH_SIZE = 32
SPECIAL_TOKENS_PER_INPUT = 2  # [CLS] ... [SEP]

EmbeddingInput = str | Sequence[int]


class TorchEmbedder:
    """Embeds batches of texts or token lists; see `embed`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_tokens: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens  # per input, the [CLS] and [SEP] it is wrapped in included
        self.batch_size = batch_size
        self.dimensions = int(model.config.hidden_size)
        self.vocab_size = int(model.config.vocab_size)
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls, source: ModelSource | str = "all-minilm-l6-v2", *, device: DeviceName = "auto"
    ) -> TorchEmbedder:
        if isinstance(source, str):
            source = resolve_model(source)
        if source.format != "hf":
            raise ValueError(f"embedding model {source.name!r} must be a model directory")
        started = time.perf_counter()
        log.info("model_loading", model=source.name, source=str(source.path), cached=False)
        tokenizer = AutoTokenizer.from_pretrained(source.path, local_files_only=True)
        model = AutoModel.from_pretrained(source.path, dtype=torch.float32, local_files_only=True)
        module: torch.nn.Module = model
        module.to(resolve_device(device))
        module.train(False)
        embedder = cls(model, tokenizer, max_tokens=_max_tokens(source.path, model, tokenizer))
        log.info(
            "model_loaded",
            model=source.name,
            device=str(embedder.device),
            seconds=round(time.perf_counter() - started, 2),
        )
        return embedder

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
            batch = token_lists[start : start + self.batch_size]
            embedded = self._embed_batch(batch)
            if dimensions is not None:
                embedded = F.normalize(embedded[:, :dimensions], p=2, dim=1)
            vectors.extend(embedded.tolist())
        return vectors, sum(len(tokens) for tokens in token_lists)

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

    def _embed_batch(self, batch: list[list[int]]) -> torch.Tensor:
        cls_id, sep_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        pad_id = self.tokenizer.pad_token_id or 0
        if not isinstance(cls_id, int) or not isinstance(sep_id, int):
            raise ValueError("the embedding tokenizer has no [CLS]/[SEP] tokens")
        wrapped = [[cls_id, *tokens, sep_id] for tokens in batch]
        width = max(len(tokens) for tokens in wrapped)
        ids = torch.full((len(wrapped), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(wrapped), width), dtype=torch.long)
        for row, tokens in enumerate(wrapped):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.inference_mode():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            return _mean_pool(hidden.float(), mask)


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of each row's real tokens (padding excluded), L2-normalized."""
    weights = mask[:, :, None].to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


def _max_tokens(directory: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """sentence-transformers' max_seq_length (what the model was trained on), else the
    smaller of the tokenizer's and the position embeddings' limits."""
    limits = [int(model.config.max_position_embeddings)]
    settings = directory / "sentence_bert_config.json"
    if settings.is_file():
        configured = json.loads(settings.read_text()).get("max_seq_length")
        if isinstance(configured, int):
            limits.append(configured)
    elif isinstance(tokenizer.model_max_length, int):
        limits.append(tokenizer.model_max_length)
    return min(limits)
