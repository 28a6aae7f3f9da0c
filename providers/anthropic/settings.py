"""Config for `kind: anthropic` providers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from providers.http_settings import HTTPSettings


class AnthropicSettings(HTTPSettings):
    kind: Literal["anthropic"]
    base_url: str = Field(
        "https://api.anthropic.com", description="Without the version: requests go to /v1/messages"
    )
    anthropic_version: str = "2023-06-01"
    default_max_tokens: int = Field(
        4096, ge=1, description="Sent when the caller set no limit: Anthropic requires one"
    )
