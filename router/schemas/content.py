"""Pieces shared by chat messages and chat options: open objects and text parts."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Open(BaseModel):
    """Unknown keys inside a nested object are kept and forwarded, as at the top level."""

    model_config = ConfigDict(extra="allow", strict=True)


class PromptCacheBreakpoint(Open):
    """On a content part: cache the prompt up to here (explicit prompt caching)."""

    mode: Literal["explicit"] = "explicit"


class TextPart(Open):
    type: Literal["text"]
    text: str
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None
