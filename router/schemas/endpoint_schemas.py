"""Which schema validates a request to each OpenAI endpoint (for doors that are told the
endpoint by data, such as a batch line's `url`)."""

from __future__ import annotations

from providers.types import Endpoint
from router.schemas.chat import ChatCompletionRequest
from router.schemas.common import OpenAIRequest
from router.schemas.completions import CompletionRequest
from router.schemas.embeddings import EmbeddingRequest

SCHEMAS: dict[Endpoint, type[OpenAIRequest]] = {
    Endpoint.CHAT: ChatCompletionRequest,
    Endpoint.COMPLETIONS: CompletionRequest,
    Endpoint.EMBEDDINGS: EmbeddingRequest,
}
