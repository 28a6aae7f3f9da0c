"""The one interface every backend adapter implements."""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

from providers.capabilities import Capabilities
from providers.load_report import LoadReport
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# (tokens the backend's prefix cache holds at the head of a request's prompt, the prompt's
# tokens), or None where it cannot tell for this request.
CachedPromptTokens = Callable[[Mapping[str, Any]], Awaitable[tuple[int, int] | None]]


class Provider(abc.ABC):
    """A backend: a remote API or an in-process model.

    `complete` returns a whole response; `stream` yields OpenAI-shaped chunk objects and
    raises `UpstreamError` on failure, before its first chunk or after. Both must be
    cancellable at any await: a client that goes away cancels the call.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abc.abstractmethod
    def endpoints(self) -> frozenset[Endpoint]:
        """The endpoints this backend serves natively."""

    @property
    def capabilities(self) -> Capabilities:
        """What this backend supports natively (adapters that lack options narrow it)."""
        served = self.endpoints
        return Capabilities(
            completions=Endpoint.COMPLETIONS in served,
            chat=Endpoint.CHAT in served,
            embeddings=Endpoint.EMBEDDINGS in served,
        )

    def load(self) -> int | None:
        """Work queued or running inside this backend, if it can tell (local samplers:
        their queue depth); None for remote APIs, whose load Turnout counts itself."""
        return None

    def load_report(self, *, stale: bool = False) -> LoadReport | None:
        """The backend's own figures (queue, running, KV-cache use) from its last scrape
        (`load_metrics:`), where it publishes them; None where it does not, before the first
        scrape, and once the last one is stale (more than 3 intervals old) unless `stale`
        (for display: /metrics, explain)."""
        return None

    def load_scrape_failures(self) -> int | None:
        """Scrapes of `load_metrics:` that failed so far; None where nothing is scraped."""
        return None

    # What the backend's own prefix cache holds of a request's prompt (`body`: a chat or
    # completions request), for affinity routing to use instead of its estimate. None, not
    # a method returning None, where the backend cannot say (remote APIs): a router asks
    # only backends that have it, and a pool of remote ones pays no await for it.
    cached_prompt_tokens: CachedPromptTokens | None = None

    async def count_chat_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The prompt tokens of a chat request (`messages`, `tools`) by the backend's own
        tokenizer, where this adapter has one at hand (the local samplers); None where it
        has not (the caller then asks elsewhere, or estimates)."""
        return None

    async def count_message_tokens(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> int | None:
        """The input tokens of an Anthropic Messages request (`body` as the client sent it,
        `model` already the deployment's), where the backend counts them itself (Anthropic's
        `count_tokens`); None where it does not."""
        return None

    async def start(self) -> None:  # noqa: B027 - optional hook, most adapters need none
        """Open pools or load models; called once when the app starts."""

    async def check(self) -> None:  # noqa: B027 - optional hook: the default has nothing to check
        """An active health check (`health_check:` in the provider's config): return when
        the backend is healthy, raise `UpstreamError` when it is not. Cheap and side-effect
        free; the caller bounds it with the configured timeout."""

    @abc.abstractmethod
    async def complete(self, request: ProviderRequest) -> ProviderResponse: ...

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...
