"""Configuration of a `torch` deployment, as written in Turnout's config file."""

from __future__ import annotations

from typing import Literal

from providers.local.settings import LocalModelSettings


class TorchSettings(LocalModelSettings):
    """A model run in-process with PyTorch."""

    kind: Literal["torch"]
    device: Literal["auto", "cpu", "cuda"] = "auto"
