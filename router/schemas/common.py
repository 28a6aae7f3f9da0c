"""Fields and checks shared by the OpenAI request schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

Temperature = Annotated[float, Field(ge=0, le=2)]
TopP = Annotated[float, Field(ge=0, le=1)]
Penalty = Annotated[float, Field(ge=-2, le=2)]
Seed = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
Stop = str | Annotated[list[str], Field(max_length=4)]
LogitBias = dict[
    Annotated[str, Field(pattern=r"^-?\d+$")], Annotated[float, Field(ge=-100, le=100)]
]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    include_usage: StrictBool | None = None
    include_obfuscation: StrictBool | None = None


class RouterOptions(BaseModel):
    """Per-request routing choices, where the caller's team allows them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    translation: Literal["emulate", "strict", "drop"] | None = None
    only: list[str] | None = None  # providers or provider/model labels to keep
    ignore: list[str] | None = None  # ... or to skip
    strategy: Literal["priority", "weighted", "least-latency", "least-busy", "cost"] | None = None
    fallbacks: list[str] | None = None  # as the top-level `fallbacks`

    def narrows(self) -> bool:
        return any(v is not None for v in (self.only, self.ignore, self.strategy, self.fallbacks))


class CacheOptions(BaseModel):
    """Per-request response-cache choices (the cache must be enabled in config)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    ttl: Annotated[float, Field(gt=0)] | None = None
    no_store: StrictBool = False  # do not store this response
    no_cache: StrictBool = False  # do not answer from the cache


class OpenAIRequest(BaseModel):
    """Base of every request: unknown fields are kept and forwarded upstream.

    Strict: the body is forwarded as the client sent it, so a value of the wrong JSON
    type (`"temperature": "0.5"`) must be refused here, not coerced and passed on."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, strict=True)

    model: str = Field(min_length=1)
    user: str | None = None
    # Turnout's own (never forwarded): more model names to fall back to for this call, and
    # per-request routing choices.
    fallbacks: list[str] | None = None
    router: RouterOptions | None = None
    cache: CacheOptions | None = None


class SamplingRequest(OpenAIRequest):
    """Fields completions and chat share."""

    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    seed: Seed | None = None
    stop: Stop | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> Self:
        if self.stream_options is not None and not self.stream:
            raise ParamError(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            )
        return self


class ParamError(ValueError):
    """A cross-field check that failed; names the parameter for the error envelope."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


def router_only_fields() -> frozenset[str]:
    """Body keys Turnout consumes itself and never forwards."""
    return frozenset({"fallbacks", "router", "cache"})


def forwardable(body: dict[str, Any]) -> dict[str, Any]:
    drop = router_only_fields()
    return {k: v for k, v in body.items() if k not in drop}
