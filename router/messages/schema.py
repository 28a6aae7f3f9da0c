"""`POST /v1/messages`: the request's shape, checked before anything else happens (errors
in Anthropic's envelope, naming the field). Blocks inside `messages`, `system` and
`tools` are checked where they are translated (router/messages/to_chat.py); here: the
fields' own types and ranges, as Anthropic documents them. Unknown fields are kept: an
Anthropic backend gets the body as the client sent it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, StrictBool

from policies.errors import ApiError
from router.schemas.common import OpenAIRequest


class MessagesRequest(OpenAIRequest):
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = None
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    stream: StrictBool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None


def require_version(headers: Mapping[str, str]) -> None:
    """Anthropic requires `anthropic-version`; any date is taken (SDKs send their own)."""
    if not headers.get("anthropic-version"):
        raise ApiError("anthropic-version: header is required", param="anthropic-version")
