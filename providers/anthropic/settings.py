"""Config for `kind: anthropic` providers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.capabilities import CapabilityOverrides
from providers.timeouts import UpstreamTimeouts


class AnthropicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["anthropic"]
    base_url: str = Field(
        "https://api.anthropic.com", description="Without the version: requests go to /v1/messages"
    )
    api_key: str | None = None
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = Field(
        4096, ge=1, description="Sent when the caller set no limit: Anthropic requires one"
    )
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
