"""`JaxEmbedder`: sentence embeddings (all-MiniLM-L6-v2 and other BERT encoders) on the
JAX forward of `providers.jax.bert`, with the inputs, limits, batches and `dimensions` of
`providers.local.sentence_embedder` — the torch embedder's, so both answer alike.

A batch is padded up to a shape bucket — its length (the longest input, [CLS] and [SEP]
included) to a power of two from 16 up to the model's limit, its row count to a power of
two up to the batch size — and each bucket is compiled ahead of time on first use, timed.
All-MiniLM-L6-v2 has at most 5 length buckets x 6 batch buckets, each compiled once per
process, whatever lengths the requests bring."""

from __future__ import annotations

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import structlog
from transformers import PreTrainedTokenizerBase

from providers.jax import bert
from providers.jax.bert_weights import BertShape, JaxBert, jax_bert
from providers.jax.buckets import bucket
from providers.jax.loading import DeviceName, resolve_device
from providers.jax.steps import CompileStats, Executable
from providers.local.packaged import ModelSource
from providers.local.sentence_embedder import DEFAULT_BATCH_SIZE, SentenceEmbedder
from providers.torch.embedder import load_encoder

log = structlog.get_logger("turnout.providers.jax")

SMALLEST_LENGTH = 16  # shorter batches cost the same to pad: the weights dominate


class JaxEmbedder(SentenceEmbedder):
    """Embeds batches of texts or token lists with a jitted BERT encoder; see `embed`."""

    def __init__(
        self,
        model: JaxBert,
        shape: BertShape,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_tokens: int,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        vocab_size, dimensions = model.words.shape
        super().__init__(
            tokenizer,
            max_tokens=max_tokens,
            dimensions=int(dimensions),
            vocab_size=int(vocab_size),
            batch_size=batch_size,
        )
        self.model = model
        self.shape = shape
        self.stats = CompileStats()
        self._compiled: dict[tuple[int, int], Executable] = {}

    @classmethod
    def load(
        cls, source: ModelSource | str = "all-minilm-l6-v2", *, device: DeviceName = "auto"
    ) -> JaxEmbedder:
        """Read the model directory through transformers (on the CPU), copy the weights
        onto the JAX device in float32, and drop the torch model."""
        target = resolve_device(device)
        loaded = load_encoder(source, device="cpu")
        started = time.perf_counter()
        model, shape = jax_bert(loaded.model, device=target)
        log.info(
            "jax_model_placed",
            model=loaded.name,
            device=str(target),
            dtype="float32",
            seconds=round(time.perf_counter() - started, 2),
        )
        return cls(model, shape, loaded.tokenizer, max_tokens=loaded.max_tokens)

    def bucket(self, rows: int, width: int) -> tuple[int, int]:
        """The padded (rows, length) a batch of `rows` inputs up to `width` tokens runs as."""
        return (
            bucket(rows, smallest=1, largest=self.batch_size),
            bucket(width, smallest=SMALLEST_LENGTH, largest=self.max_tokens),
        )

    @property
    def compiled(self) -> frozenset[tuple[int, int]]:
        """The (rows, length) buckets compiled so far."""
        return frozenset(self._compiled)

    def _pooled(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        rows, width = ids.shape
        padded_rows, padded_width = self.bucket(rows, width)
        padding = ((0, padded_rows - rows), (0, padded_width - width))
        # Pad ids with 0 and mask with 0: padded positions and rows are masked out.
        padded_ids = np.pad(ids.astype(np.int32), padding)
        padded_mask = np.pad(mask.astype(np.int32), padding)
        vectors = self._executable(padded_rows, padded_width)(self.model, padded_ids, padded_mask)
        # Cut on the host: slicing the device array would compile a slice per row count.
        pooled: np.ndarray = np.asarray(vectors)[:rows]
        return pooled

    def _executable(self, rows: int, length: int) -> Executable:
        key = (rows, length)
        if key not in self._compiled:
            started = time.perf_counter()
            step = jax.jit(partial(bert.sentence_embeddings, self.shape))
            ints = jax.ShapeDtypeStruct((rows, length), jnp.int32)  # type: ignore[no-untyped-call]
            self._compiled[key] = step.lower(self.model, ints, ints).compile()
            seconds = time.perf_counter() - started
            self.stats.count += 1
            self.stats.seconds += seconds
            log.info("jax_step_compiled", step="embed", shape=key, seconds=round(seconds, 2))
        return self._compiled[key]
