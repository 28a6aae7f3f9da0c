"""Config for `kind: openai` providers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from providers.http_settings import HTTPSettings
from providers.load_metrics import LoadMetricsSettings


class OpenAISettings(HTTPSettings):
    kind: Literal["openai"]
    base_url: str = Field(description="Up to and including the version segment, e.g. .../v1")
    # The backend's Prometheus /metrics (vLLM, SGLang, llama.cpp), scraped in the background
    # for its queue and KV-cache figures (providers.load_metrics); absent: none.
    load_metrics: LoadMetricsSettings | None = None
