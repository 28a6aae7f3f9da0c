"""Config for `kind: openai` providers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.capabilities import CapabilityOverrides
from providers.timeouts import UpstreamTimeouts


class OpenAISettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["openai"]
    base_url: str = Field(description="Up to and including the version segment, e.g. .../v1")
    api_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(512, ge=1)
    timeouts: UpstreamTimeouts | None = None
    capabilities: CapabilityOverrides | None = None

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
