"""`TorchEmbedder`: sentence embeddings from a sentence-transformers BERT-style model
directory (all-MiniLM-L6-v2): the encoder's last hidden states, mean-pooled over real
tokens, L2-normalized. Inputs, limits, batches and `dimensions` are
`providers.local.sentence_embedder`'s; this module runs the encoder.

`load_encoder` reads the model directory through transformers; `providers.jax` reads it
the same way before copying the weights into JAX."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import structlog
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from providers.local.packaged import ModelSource, resolve_model
from providers.local.sentence_embedder import DEFAULT_BATCH_SIZE, SentenceEmbedder, max_tokens
from providers.torch.loading import DeviceName, resolve_device

log = structlog.get_logger("turnout.providers.torch")


@dataclass(frozen=True, slots=True)
class LoadedEncoder:
    name: str
    model: PreTrainedModel  # float32, inference mode
    tokenizer: PreTrainedTokenizerBase
    max_tokens: int  # per input, [CLS] and [SEP] included


def load_encoder(source: ModelSource | str, *, device: DeviceName = "cpu") -> LoadedEncoder:
    """An embedding model directory through transformers, in float32 on `device`."""
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
    limit = max_tokens(source.path, int(model.config.max_position_embeddings), tokenizer)
    log.info(
        "model_loaded",
        model=source.name,
        device=str(next(model.parameters()).device),
        seconds=round(time.perf_counter() - started, 2),
    )
    return LoadedEncoder(source.name, model, tokenizer, limit)


class TorchEmbedder(SentenceEmbedder):
    """Embeds batches of texts or token lists with a transformers encoder; see `embed`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_tokens: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(
            tokenizer,
            max_tokens=max_tokens,
            dimensions=int(model.config.hidden_size),
            vocab_size=int(model.config.vocab_size),
            batch_size=batch_size,
        )
        self.model = model
        self.device = next(model.parameters()).device

    @classmethod
    def load(
        cls, source: ModelSource | str = "all-minilm-l6-v2", *, device: DeviceName = "auto"
    ) -> TorchEmbedder:
        loaded = load_encoder(source, device=device)
        return cls(loaded.model, loaded.tokenizer, max_tokens=loaded.max_tokens)

    def _pooled(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        on_device = torch.from_numpy(mask).to(self.device)
        with torch.inference_mode():
            hidden = self.model(
                input_ids=torch.from_numpy(ids).to(self.device), attention_mask=on_device
            ).last_hidden_state
            pooled: np.ndarray = _mean_pool(hidden.float(), on_device).cpu().numpy()
        return pooled


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of each row's real tokens (padding excluded), L2-normalized."""
    weights = mask[:, :, None].to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)
