"""Resolving packaged model names and paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from providers.local.packaged import resolve_model, serves_embeddings


def test_packaged_names_resolve_to_shipped_files() -> None:
    smollm2 = resolve_model("smollm2-135m-instruct")
    assert smollm2.format == "gguf"
    assert smollm2.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smollm2.path.is_file()
    minilm = resolve_model("all-minilm-l6-v2")
    assert minilm.format == "hf"
    assert (minilm.path / "config.json").is_file()


def test_paths_resolve_by_what_they_hold(tmp_path: Path) -> None:
    directory = tmp_path / "My Model"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    gguf = tmp_path / "Tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model(str(directory)).format == "hf"
    assert resolve_model(str(directory)).name == "my-model"
    source = resolve_model(str(gguf))
    assert (source.format, source.name, source.directory) == ("gguf", "tiny.q8_0", tmp_path)


def test_unknown_models_say_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"not a packaged model \(all-minilm-l6-v2, smollm2"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"not a directory with a config\.json"):
        resolve_model(str(tmp_path))  # a directory, but not a model


def test_encoders_serve_embeddings_and_causal_lms_generate(tmp_path: Path) -> None:
    assert serves_embeddings(resolve_model("all-minilm-l6-v2"))  # BertModel
    assert not serves_embeddings(resolve_model("smollm2-135m-instruct"))  # a GGUF file
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    assert not serves_embeddings(resolve_model(str(tmp_path)))
