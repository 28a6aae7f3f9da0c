"""Config fields every HTTP backend kind shares (each kind adds `kind` and its own)."""

from __future__ import annotations

from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from providers.capabilities import CapabilityOverrides
from providers.timeouts import UpstreamTimeouts

MIB = 1 << 20


class HealthCheckSettings(BaseModel):
    """`health_check:` on a provider: check it every `interval` seconds, each check given
    `timeout` seconds; `path` (after `base_url`) replaces the kind's model-list path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: float = Field(15.0, gt=0, le=3600)
    timeout: float = Field(5.0, gt=0, le=300)
    path: str | None = None

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with /")
        return value


class HTTPSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    api_key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Calls in flight to this provider at once; past it a call waits (within its request's
    # deadline) for one to end. A stream holds its connection for its whole length, so this
    # counts open streams: the default fits 10,000 of them (README, "Sizing connections").
    max_connections: int = Field(10_000, ge=1)
    # What one answer may hold in memory; past it the call fails as a protocol error (a
    # broken stream), the connection is closed and nothing of it reaches the client. The
    # largest legitimate answer is OpenAI's embeddings of 2,048 inputs of 3,072 dimensions,
    # ~130 MB of JSON; an error body is read up to 64 KiB whatever this says.
    max_response_bytes: int = Field(256 * MIB, ge=1024)
    max_event_bytes: int = Field(16 * MIB, ge=1024)  # one SSE line, or one event's data
    timeouts: UpstreamTimeouts | None = None
    capabilities: CapabilityOverrides | None = None
    health_check: HealthCheckSettings | None = None  # absent: no active checks

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        # The HTTP client sends URL credentials as Basic auth, and refuses a request that
        # carries them and an Authorization header (the api_key's) both: every call would fail.
        if self.api_key is not None and urlsplit(self.base_url).username is not None:
            raise ValueError(
                "`base_url` holds credentials (user:password@host) and `api_key` is set too; "
                "a backend gets one Authorization header: keep only one of them"
            )
        return self
