"""Config fields every HTTP backend kind shares (each kind adds `kind` and its own)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.capabilities import CapabilityOverrides
from providers.timeouts import UpstreamTimeouts


class HTTPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
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
