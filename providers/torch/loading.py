"""Loading a causal language model and its tokenizer with transformers, from a Hugging Face
directory or a .gguf file, onto a device in a dtype.

Converting a GGUF file (building its tokenizer, dequantizing every tensor) takes tens of
seconds, so the first load saves the converted model as a Hugging Face directory under the
model cache and later loads read that in a second or two. Nothing is ever downloaded."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import structlog
import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from providers.local.packaged import ModelSource, resolve_model

log = structlog.get_logger("turnout.providers.torch")

DeviceName = Literal["auto", "cpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]

CACHE_DIR_ENV = "TURNOUT_CACHE_DIR"
DTYPES = MappingProxyType(
    {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
)


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready for inference, with the facts the sampler needs about it."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    context_window: int  # config.max_position_embeddings
    eos_token_ids: frozenset[int]
    device: torch.device
    dtype: torch.dtype


def resolve_device(device: DeviceName) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device")
    return torch.device(device)


def resolve_dtype(dtype: DtypeName, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # CPU half-precision matmuls are slow and lose accuracy; GPUs are built for bf16.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def model_cache_root() -> Path:
    """Where converted models are kept: $TURNOUT_CACHE_DIR, else ~/.cache/turnout/models."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "turnout" / "models"


def converted_cache_dir(source: ModelSource, cache_root: Path) -> Path:
    """The cache directory of a GGUF file's conversion.

    Keyed by the file's path, size and mtime (a replaced file is converted again) and the
    transformers version (a newer converter may produce different tensors)."""
    stat = source.path.stat()
    key = f"{source.path}|{stat.st_size}|{stat.st_mtime_ns}|{transformers.__version__}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root / f"{source.name}-{digest}"


def load_causal_lm(
    source: ModelSource | str,
    *,
    device: DeviceName = "auto",
    dtype: DtypeName = "float32",
    cache_root: Path | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, converting and caching a GGUF file on first use."""
    if isinstance(source, str):
        source = resolve_model(source)
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target_device)
    started = time.perf_counter()
    if source.format == "gguf":
        model, tokenizer = _load_gguf(source, cache_root or model_cache_root(), target_dtype)
    else:
        log.info("model_loading", model=source.name, source=str(source.path), cached=False)
        model, tokenizer = _load_directory(source.path, target_dtype)
    _place(model, target_device)
    log.info(
        "model_loaded",
        model=source.name,
        device=str(target_device),
        dtype=str(target_dtype).removeprefix("torch."),
        seconds=round(time.perf_counter() - started, 2),
    )
    return LoadedModel(
        name=source.name,
        model=model,
        tokenizer=tokenizer,
        context_window=int(model.config.max_position_embeddings),
        eos_token_ids=eos_token_ids(model, tokenizer),
        device=target_device,
        dtype=target_dtype,
    )


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Every token that ends generation: the generation config's (chat models often list
    several) and the tokenizer's."""
    ids: set[int] = set()
    generation_config = getattr(model, "generation_config", None)
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(token) for token in configured)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def _place(model: PreTrainedModel, where: torch.device | torch.dtype) -> None:
    # Through nn.Module's typing: transformers wraps `.to` in a decorator mypy misreads.
    module: torch.nn.Module = model
    module.to(where)
    module.train(False)


def _load_directory(
    directory: Path, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    # local_files_only: a missing file is an error, never a download.
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, local_files_only=True)
    return model, tokenizer


def _load_gguf(
    source: ModelSource, cache_root: Path, dtype: torch.dtype
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    cached = converted_cache_dir(source, cache_root)
    if (cached / "config.json").is_file():
        log.info("model_loading", model=source.name, source=str(cached), cached=True)
        return _load_directory(cached, dtype)
    log.info("model_loading", model=source.name, source=str(source.path), cached=False)
    model, tokenizer = _convert_gguf(source)
    try:
        save_atomically(model, tokenizer, cached)
    except OSError as error:
        # The cache only saves time: an unwritable one costs the next start a conversion.
        log.warning("model_cache_unavailable", path=str(cached), error=str(error))
    _place(model, dtype)
    return model, tokenizer


def _convert_gguf(source: ModelSource) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Dequantize a GGUF file into a float32 model and build its tokenizer."""
    started = time.perf_counter()
    directory, filename = source.path.parent, source.path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=filename, dtype=torch.float32, local_files_only=True
    )
    # The tensors are already dequantized; what remains of "gguf quantization" is a marker
    # that makes save_pretrained refuse, and a config entry that would make a later load
    # look for the .gguf file again.
    model.hf_quantizer = None  # type: ignore[assignment]  # nn.Module's attribute typing
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    log.info("model_converted", model=source.name, seconds=round(time.perf_counter() - started, 2))
    return model, tokenizer


def save_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cached: Path
) -> None:
    # Written into a temporary sibling and renamed, so a crash or a concurrent loader never
    # sees a half-written cache; whoever renames first wins and the other copy is dropped.
    started = time.perf_counter()
    cached.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{cached.name}.", dir=cached.parent))
    try:
        model.save_pretrained(temporary)
        tokenizer.save_pretrained(temporary)
        temporary.rename(cached)
    except OSError:
        if not (cached / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    log.info("model_cached", path=str(cached), seconds=round(time.perf_counter() - started, 2))
