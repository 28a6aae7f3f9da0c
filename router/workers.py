"""Worker processes behind the one port (`turnout serve --workers N`, `server.workers`):
how many, and what a config must say to be served by more than one.

Each worker has its own event loop, providers and state store. Limits, breakers and
statistics are shared between them only through Redis (`state.redis_url` or a cluster); in
memory, each worker would keep its own, so an rpm limit of 20 would admit 20 per worker.
That is refused unless `state.per_worker: true` says it is intended. The rule holds at
start-up (`turnout serve`) and on every reload (router/exposure.py's `Listener` carries
the worker count into both)."""

from __future__ import annotations

import os
from typing import Literal

from policies.config import TurnoutConfig
from providers.registry import runs_in_process


def worker_count(configured: int | Literal["auto"], flag: int | Literal["auto"] | None) -> int:
    """The `--workers` flag over `server.workers`; `auto` is the CPU count."""
    chosen = configured if flag is None else flag
    if chosen == "auto":
        return os.cpu_count() or 1
    return chosen


def per_worker_refusal(config: TurnoutConfig, workers: int) -> str | None:
    """Why `config` must not be served by `workers` processes, or None when it may."""
    if workers <= 1 or config.state.shared or config.state.per_worker:
        return None
    return (
        f"refusing to run {workers} worker processes without shared state: limits, "
        "breakers and statistics would be each worker's own (an rpm limit of 20 would "
        f"admit up to {20 * workers} a minute). Set state.redis_url (or "
        "state.redis_cluster_nodes) so that the workers share them, or set "
        "`state: {per_worker: true}` if per-worker counts are really intended."
    )


def in_process_providers(config: TurnoutConfig) -> list[str]:
    """The providers that load a model into the process serving them (kind torch, jax)."""
    return [name for name, settings in config.providers.items() if runs_in_process(settings)]


def unhosted_refusal(config: TurnoutConfig, workers: int, sampler_host: str | None) -> str | None:
    """With several workers, local models are loaded once, by the sampler host that
    `turnout serve` starts when its config names them; a reload that adds the first ones
    cannot start it, and each worker would load its own copy."""
    names = in_process_providers(config)
    if workers <= 1 or sampler_host is not None or not names:
        return None
    return (
        f"providers {', '.join(names)} run models in-process: with {workers} workers they are "
        "loaded once, by a sampler host that turnout serve starts only when its config names "
        "local providers at start-up; restart turnout serve to load them"
    )
