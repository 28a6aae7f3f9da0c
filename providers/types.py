"""Normalized request and response types shared by every provider.

Turnout speaks OpenAI's wire format on both sides of most calls, and must forward
fields it does not know (clients send them with `extra_body`). Bodies therefore travel
as JSON objects rather than closed models: the router validates them against the
OpenAI schema before they get here, and adapters translate them to their backend's
wire format in pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from providers.timeouts import TimeoutOverrides

JSONObject = dict[str, Any]


class Endpoint(StrEnum):
    """The OpenAI endpoints a provider may serve."""

    COMPLETIONS = "completions"
    CHAT = "chat"
    EMBEDDINGS = "embeddings"
    # OpenAI's Responses API, for deployments that declare it (`capabilities: {responses:
    # true}`): the Responses door's request is passed to them as the client sent it.
    RESPONSES = "responses"
    # Anthropic's Messages API, served by `kind: anthropic` adapters: the Messages door's
    # request is passed to them as the client sent it. Its path, like the others', is
    # under the API's `/v1` (Anthropic's base URL has no version: `/v1/messages` there).
    MESSAGES = "messages"

    @property
    def path(self) -> str:
        return _PATHS[self]

    @property
    def client_headers(self) -> tuple[str, ...]:
        """The client's headers (lower-case names) a native call on this endpoint takes
        upstream: its API's own options, never a credential."""
        return _CLIENT_HEADERS.get(self, ())


_PATHS = {
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.CHAT: "/chat/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
    Endpoint.RESPONSES: "/responses",
    Endpoint.MESSAGES: "/messages",
}
# Anthropic's beta features are asked for in a header, not the body.
_CLIENT_HEADERS = {Endpoint.MESSAGES: ("anthropic-beta",)}


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """One call to one deployment: an OpenAI-shaped body (or, on a native endpoint, the
    client's own) whose `model` is the upstream id."""

    endpoint: Endpoint
    body: Mapping[str, Any]
    # The deployment's model's own timeouts (`timeouts:` on a model), which HTTP adapters
    # apply over their provider's; None: the provider's.
    timeouts: TimeoutOverrides | None = None
    # A batch line's call: a backend with a queue of its own (the local samplers) serves
    # it after every live request waiting there.
    background: bool = False
    # The few client headers a native call forwards (`anthropic-beta` on Endpoint.MESSAGES);
    # each adapter takes only those it knows, never a credential. Empty for every other call.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def choice_count(self) -> int:
        """How many choice indices the answer has: n per prompt (completions take a batch
        of prompts; a list of token ids is one prompt)."""
        n = self.body.get("n")
        count = n if isinstance(n, int) and n > 0 else 1
        if self.endpoint is Endpoint.COMPLETIONS:
            prompt = self.body.get("prompt")
            if isinstance(prompt, list) and prompt and not all(isinstance(t, int) for t in prompt):
                count *= len(prompt)
        return count


@dataclass(frozen=True, slots=True)
class ProviderResponse:
    """A whole (non-streamed) OpenAI-shaped response body."""

    body: JSONObject
    headers: Mapping[str, str] = field(default_factory=dict)
