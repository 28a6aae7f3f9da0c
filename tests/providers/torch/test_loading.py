"""Model loading: facts about the loaded model, the GGUF conversion cache, dtypes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

from providers.local.packaged import ModelSource, resolve_model
from providers.torch.loading import (
    LoadedModel,
    converted_cache_dir,
    load_causal_lm,
    model_cache_root,
    resolve_dtype,
    save_atomically,
)
from providers.torch.settings import TorchSettings


def test_loaded_model_facts(smollm2: LoadedModel) -> None:
    assert smollm2.context_window == 8192
    assert smollm2.tokenizer.convert_ids_to_tokens(sorted(smollm2.eos_token_ids)) == ["<|im_end|>"]
    assert smollm2.dtype == torch.float32
    assert smollm2.device == torch.device("cpu")


def test_gguf_conversion_is_cached_as_a_plain_model_directory(smollm2: LoadedModel) -> None:
    cached = converted_cache_dir(resolve_model("smollm2-135m-instruct"), model_cache_root())
    config = json.loads((cached / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (cached / "tokenizer.json").is_file()
    leftovers = [path for path in cached.parent.iterdir() if path.name.startswith(".")]
    assert leftovers == []  # no temporary directories left behind


def test_cache_key_follows_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TURNOUT_CACHE_DIR", str(tmp_path / "cache"))
    assert model_cache_root() == tmp_path / "cache"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"one")
    source = ModelSource("m", gguf, "gguf")
    first = converted_cache_dir(source, model_cache_root())
    gguf.write_bytes(b"longer")
    second = converted_cache_dir(source, model_cache_root())
    assert first.name.startswith("m-")
    assert first != second


def test_loads_a_model_directory_in_the_requested_dtype(tmp_path: Path) -> None:
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
    )
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.save_pretrained(tmp_path)
    cached = converted_cache_dir(resolve_model("smollm2-135m-instruct"), model_cache_root())
    AutoTokenizer.from_pretrained(cached, local_files_only=True).save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path), device="cpu", dtype="bfloat16")
    assert loaded.dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.context_window == 64


def test_cache_is_written_atomically_and_first_writer_wins(tmp_path: Path) -> None:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=32,
    )
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    cached = converted_cache_dir(resolve_model("smollm2-135m-instruct"), model_cache_root())
    tokenizer = AutoTokenizer.from_pretrained(cached, local_files_only=True)
    target = tmp_path / "models" / "tiny-0123"
    save_atomically(model, tokenizer, target)
    assert (target / "config.json").is_file()
    assert (target / "model.safetensors").is_file()
    first_write = (target / "model.safetensors").stat().st_mtime_ns
    save_atomically(model, tokenizer, target)  # a second converter lost the race
    assert (target / "model.safetensors").stat().st_mtime_ns == first_write
    assert [path.name for path in target.parent.iterdir()] == ["tiny-0123"]


def test_auto_dtype_is_float32_on_cpu() -> None:
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_settings_defaults_and_strictness() -> None:
    settings = TorchSettings.model_validate({"kind": "torch"})
    assert (settings.model, settings.device, settings.dtype) == (
        "smollm2-135m-instruct",
        "auto",
        "auto",
    )
    assert (settings.max_slots, settings.max_context) == (16, None)
    with pytest.raises(ValueError, match="extra"):
        TorchSettings.model_validate({"kind": "torch", "slots": 4})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        TorchSettings.model_validate({"kind": "torch", "max_slots": 0})
