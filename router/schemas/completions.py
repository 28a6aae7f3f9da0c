"""`POST /v1/completions` request."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, StrictBool, model_validator

from router.schemas.common import ParamError, SamplingRequest

TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
Prompt = str | list[str] | TokenIds | Annotated[list[TokenIds], Field(min_length=1)]


class CompletionRequest(SamplingRequest):
    prompt: Prompt
    best_of: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: StrictBool | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    max_tokens: Annotated[int, Field(ge=0)] | None = 16
    suffix: str | None = None

    @model_validator(mode="after")
    def _best_of(self) -> Self:
        if self.best_of is None:
            return self
        if self.best_of < (self.n or 1):
            raise ParamError("best_of", "best_of must be greater than or equal to n.")
        if self.stream and self.best_of > 1:
            raise ParamError(
                "best_of", "best_of > 1 cannot be used with stream: results cannot be streamed."
            )
        return self
