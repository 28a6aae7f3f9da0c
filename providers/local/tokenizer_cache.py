"""Tokenizers declared for deployments (`tokenizer:` in config), for emulations that need
one: chat templates for completion-only backends, token counts for usage in streams.

A declared tokenizer is a packaged model name (its tokenizer, not its weights), a Hugging
Face directory holding a tokenizer, or a .gguf file. Each is loaded once per app, on a
worker thread the first time a request needs it, and shared by every request after; a
GGUF whose converted copy the local sampler already cached loads from that copy (a tenth
of a second instead of seconds). Config validation checks only that the files exist.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
from pydantic import AfterValidator

from providers.errors import Failure, UpstreamError
from providers.local.packaged import PACKAGED_MODELS, ModelSource, resolve_model
from providers.local.tokenizer import TokenizerAdapter

log = structlog.get_logger("turnout.providers.tokenizers")


def check_declared_tokenizer(name_or_path: str) -> str:
    """Config validation: a packaged name, a directory or a .gguf file that exists."""
    if name_or_path in PACKAGED_MODELS:
        return name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_dir() or (path.is_file() and path.suffix.lower() == ".gguf"):
        return name_or_path
    raise ValueError(
        f"tokenizer {name_or_path!r} not found: not a packaged model "
        f"({', '.join(sorted(PACKAGED_MODELS))}), a directory or a .gguf file"
    )


# A deployment's `tokenizer:` in config.
TokenizerName = Annotated[str, AfterValidator(check_declared_tokenizer)]


def load_tokenizer(name_or_path: str) -> TokenizerAdapter:
    """Blocking: the tokenizer's files read and parsed (call it off the event loop)."""
    source = _source(name_or_path)
    if source.format == "hf":
        return TokenizerAdapter(_auto_tokenizer(str(source.path)))
    converted = _converted_copy(source)
    if converted is not None:
        return TokenizerAdapter(_auto_tokenizer(str(converted)))
    return TokenizerAdapter.load(str(source.path.parent), gguf_file=source.path.name)


class TokenizerCache:
    """One load per tokenizer name and app; concurrent requests share the one in flight.
    A failed load stays failed (a misdeclared tokenizer is a config error)."""

    def __init__(self, load: Callable[[str], TokenizerAdapter] = load_tokenizer) -> None:
        self._load = load
        self._tasks: dict[str, asyncio.Task[TokenizerAdapter]] = {}

    async def get(self, name: str) -> TokenizerAdapter:
        task = self._tasks.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_off_loop(name))
            self._tasks[name] = task
        # Shielded: a request cancelled while waiting must not cancel the shared load.
        return await asyncio.shield(task)

    def source(self, name: str) -> DeclaredTokenizer:
        return DeclaredTokenizer(name, self)

    async def _load_off_loop(self, name: str) -> TokenizerAdapter:
        try:
            adapter = await asyncio.to_thread(self._load, name)
        except Exception as exc:
            log.error("tokenizer_load_failed", tokenizer=name, error=str(exc))
            raise UpstreamError(
                f"The tokenizer {name!r} declared for this deployment could not be loaded: {exc}",
                failure=Failure.PROTOCOL,
                status=500,
                type="server_error",
            ) from exc
        log.info("tokenizer_loaded", tokenizer=name)
        return adapter


@dataclass(frozen=True, slots=True)
class DeclaredTokenizer:
    """A deployment's declared tokenizer: its name, and where to get it loaded."""

    name: str
    cache: TokenizerCache

    async def load(self) -> TokenizerAdapter:
        return await self.cache.get(self.name)


def _source(name_or_path: str) -> ModelSource:
    if name_or_path in PACKAGED_MODELS:
        return resolve_model(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return ModelSource(path.stem, path.resolve(), "gguf")
    return ModelSource(path.name, path.resolve(), "hf")


def _converted_copy(source: ModelSource) -> Path | None:
    """The local sampler's converted copy of a GGUF model, if it made one."""
    from providers.torch.loading import converted_cache_dir, model_cache_root

    cached = converted_cache_dir(source, model_cache_root())
    return cached if (cached / "tokenizer_config.json").is_file() else None


def _auto_tokenizer(directory: str) -> object:
    from transformers import AutoTokenizer

    # local_files_only: a missing file is an error, never a download.
    return AutoTokenizer.from_pretrained(directory, local_files_only=True)
