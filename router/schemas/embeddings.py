"""`POST /v1/embeddings` request."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from router.schemas.common import OpenAIRequest

MAX_INPUTS = 2048
Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
EmbeddingInput = (
    Text
    | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
    # One input as token ids: the spec bounds this array by the same 2048 as the others.
    | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_INPUTS)]
    | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_INPUTS)]
)


class EmbeddingRequest(OpenAIRequest):
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
