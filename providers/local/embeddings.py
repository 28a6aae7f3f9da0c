"""The in-process embedding model as a `Provider` for `/v1/embeddings` (float or base64)."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Protocol

from providers.base import Provider
from providers.errors import UpstreamError
from providers.local.bad_request import bad_request
from providers.startup import StartGate
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class Embedder(Protocol):
    dimensions: int

    def embed(
        self, inputs: Sequence[str | Sequence[int]], dimensions: int | None = None
    ) -> tuple[list[list[float]], int]:
        """Unit vectors and the inputs' token count; ValueError for an input it refuses."""
        ...


class LocalEmbedder(Provider):
    def __init__(self, name: str, load: Callable[[], Embedder]) -> None:
        super().__init__(name)
        self._load = load
        self._embedder: Embedder | None = None
        self._started = StartGate(name, "the model failed to load")
        # One batch at a time: the model already uses every core for one batch.
        self._lock = asyncio.Lock()

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.EMBEDDINGS})

    async def start(self) -> None:
        self._embedder = await self._started.run(asyncio.to_thread(self._load))

    async def aclose(self) -> None:
        self._started.close()
        self._embedder = None

    async def check(self) -> None:
        """Healthy once the model is loaded (and until the provider closes)."""
        if self._embedder is None:
            raise UpstreamError.unavailable(f"{self.name}: the model is not loaded")

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        # A request that arrives while the model loads waits for it (see providers.startup).
        await self._started.wait()
        embedder = self._embedder
        if embedder is None:  # closed while this request waited
            raise UpstreamError.own_limit(f"{self.name}: closed")
        if request.endpoint is not Endpoint.EMBEDDINGS:
            raise bad_request(f"{self.name} only serves /v1/embeddings.", "model")
        body = request.body
        inputs = _inputs(body.get("input"))
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions > embedder.dimensions:
            raise bad_request(
                f"dimensions must be at most {embedder.dimensions} for this model.", "dimensions"
            )
        async with self._lock:
            try:
                vectors, tokens = await asyncio.to_thread(embedder.embed, inputs, dimensions)
            except ValueError as exc:
                raise bad_request(str(exc), "input") from None
        as_base64 = body.get("encoding_format") == "base64"
        data = [
            {"object": "embedding", "index": i, "embedding": _b64(v) if as_base64 else v}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return ProviderResponse(
            body={"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        raise bad_request("Embeddings cannot be streamed.", "stream")


def _inputs(value: Any) -> list[str | Sequence[int]]:
    """The four documented forms (validated by the router) as a list of items."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and isinstance(value[0], int):
        return [value]
    if isinstance(value, list):
        return list(value)
    raise bad_request("'input' must be a string, a list of strings or token lists.", "input")


def _b64(vector: list[float]) -> str:
    """OpenAI's base64 encoding: little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
