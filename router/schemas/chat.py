"""`POST /v1/chat/completions` request: messages of every role, tools, formats."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from router.schemas.chat_options import ChatOptions
from router.schemas.common import ParamError, SamplingRequest
from router.schemas.content import Open as _Open
from router.schemas.content import PromptCacheBreakpoint, TextPart


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ImageURL(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class InputAudio(_Open):
    data: str
    format: Literal["wav", "mp3"]


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: InputAudio
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class FileData(_Open):
    filename: str | None = None
    file_data: str | None = None  # base64
    file_id: str | None = None


class FilePart(_Open):
    type: Literal["file"]
    file: FileData
    prompt_cache_breakpoint: PromptCacheBreakpoint | None = None


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart | AudioPart | FilePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]
TextContent = str | Annotated[list[TextPart], Field(min_length=1)]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(_Open):
    name: str
    input: str


class CustomToolCall(_Open):
    id: str
    type: Literal["custom"]
    custom: CustomCall


class AssistantAudio(_Open):
    """A previous spoken answer, referred to by id."""

    id: str


class SystemMessage(_Open):
    role: Literal["system"]
    content: TextContent
    name: str | None = None


class DeveloperMessage(_Open):
    role: Literal["developer"]
    content: TextContent
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"]
    content: str | Annotated[list[UserPart], Field(min_length=1)]
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall | CustomToolCall] | None = None
    function_call: FunctionCall | None = None
    audio: AssistantAudio | None = None

    @model_validator(mode="after")
    def _something_said(self) -> Self:
        said = self.tool_calls or self.function_call is not None or self.audio is not None
        if self.content is None and not said:
            raise ParamError(
                "content",
                "An assistant message needs 'content' unless 'tool_calls', "
                "'function_call' or 'audio' is given.",
            )
        return self


class ToolMessage(_Open):
    role: Literal["tool"]
    content: TextContent
    tool_call_id: str


class FunctionMessage(_Open):
    role: Literal["function"]
    content: str | None
    name: str


Message = Annotated[
    SystemMessage
    | DeveloperMessage
    | UserMessage
    | AssistantMessage
    | ToolMessage
    | FunctionMessage,
    Field(discriminator="role"),
]


class FunctionDefinition(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class FunctionTool(_Open):
    type: Literal["function"]
    function: FunctionDefinition


class TextFormat(_Closed):
    type: Literal["text"]


class Grammar(_Open):
    definition: str
    syntax: Literal["lark", "regex"]


class GrammarFormat(_Closed):
    type: Literal["grammar"]
    grammar: Grammar


class CustomDefinition(_Open):
    name: str
    description: str | None = None
    format: Annotated[TextFormat | GrammarFormat, Field(discriminator="type")] | None = None


class CustomTool(_Open):
    """A tool called with free text (optionally constrained by a grammar), not JSON."""

    type: Literal["custom"]
    custom: CustomDefinition


Tool = Annotated[FunctionTool | CustomTool, Field(discriminator="type")]


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedFunction


class NamedCustomToolChoice(_Open):
    type: Literal["custom"]
    custom: NamedFunction


class AllowedTools(_Open):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Open):
    """Restrict the model to a subset of `tools` without changing the list (cacheable)."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        NamedToolChoice | NamedCustomToolChoice | AllowedToolsChoice,
        Field(discriminator="type"),
    ]
)


class JSONSchemaFormat(_Open):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormatText(_Open):
    type: Literal["text"]


class ResponseFormatJSONObject(_Open):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(_Open):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
    Field(discriminator="type"),
]
Metadata = Annotated[
    dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]],
    Field(max_length=16),
]


class ChatCompletionRequest(SamplingRequest, ChatOptions):
    messages: Annotated[list[Message], Field(min_length=1)]
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: Annotated[list[FunctionDefinition], Field(min_length=1, max_length=128)] | None = (
        None
    )
    function_call: Literal["none", "auto"] | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    metadata: Metadata | None = None
    store: StrictBool | None = None

    @model_validator(mode="after")
    def _top_logprobs_need_logprobs(self) -> Self:
        if self.top_logprobs is not None and not self.logprobs:
            raise ParamError(
                "top_logprobs", "'top_logprobs' requires 'logprobs' to be set to true."
            )
        return self
