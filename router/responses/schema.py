"""`POST /v1/responses`: the request's shape, checked before anything else happens, with
the offending `param` named (router/body.py). Items inside `input` and `tools` are checked
where they are translated (router/responses/to_chat.py), which names the item
(`input[2].type`); here: the fields' own types and ranges."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from router.schemas.common import OpenAIRequest, Temperature, TopP


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class TextFormat(_Loose):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None
    description: str | None = None


class TextOptions(_Loose):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class Reasoning(_Loose):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponsesRequest(OpenAIRequest):
    """`CreateResponse`, as far as Turnout checks it; unknown fields are refused or
    dropped by the translation, never forwarded silently."""

    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    background: StrictBool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    text: TextOptions | None = None
    reasoning: Reasoning | None = None
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tool_calls: Annotated[int, Field(ge=1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    include: list[str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
