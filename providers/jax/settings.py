"""Configuration of a `jax` deployment, as written in Turnout's config file: the keys of
`kind: torch`, with JAX's device names besides torch's."""

from __future__ import annotations

from typing import Literal

from providers.local.settings import LocalModelSettings


class JaxSettings(LocalModelSettings):
    """A model run in-process with JAX."""

    kind: Literal["jax"]
    # auto: JAX's default backend (a GPU or TPU when jaxlib has one, else the CPU). "cuda"
    # is an alias of "gpu" (kind: torch's name), so that switching `kind:` alone works.
    device: Literal["auto", "cpu", "gpu", "cuda"] = "auto"
