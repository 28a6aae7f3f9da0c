"""Config for `kind: openai` providers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from providers.http_settings import HTTPSettings


class OpenAISettings(HTTPSettings):
    kind: Literal["openai"]
    base_url: str = Field(description="Up to and including the version segment, e.g. .../v1")
