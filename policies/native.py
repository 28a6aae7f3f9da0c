"""Native passthrough: a front door's request as its client sent it, for the deployments
that speak the door's wire shape themselves, instead of the chat body every other
deployment gets (translated as usual). Routing, limits, breakers, retries, fallbacks and
hedging are the same for both.

- The Responses door (Endpoint.RESPONSES): deployments that declare `responses` (OpenAI
  itself, vLLM) on an adapter that can send a Responses request.
- The Messages door (Endpoint.MESSAGES): every deployment whose adapter serves Anthropic's
  Messages API (`kind: anthropic`); it is that backend's own API, so no flag declares it.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from policies.translation import Refusal, Translation
from providers.capabilities import Capabilities
from providers.types import Endpoint

if TYPE_CHECKING:
    from policies.trace import Trace


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """A door's request on `endpoint` as the client sent it (`body`: sent untranslated,
    but for its `model`, mapped to the deployment's), with the client `headers` that
    endpoint forwards (`Endpoint.client_headers`: `anthropic-beta` for Messages)."""

    endpoint: Endpoint
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, endpoint: Endpoint, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> NativeRequest:
        """The native request of a door's `body`; of the client's `headers`, only those
        `endpoint` forwards are kept (names lower-cased), so no credential travels."""
        wanted = endpoint.client_headers
        kept = {k.lower(): v for k, v in (headers or {}).items() if k.lower() in wanted}
        return cls(endpoint, body, kept)

    @property
    def key(self) -> dict[str, Any]:
        """What a response cache key adds to the chat form's for this request: the body
        and headers as sent (the chat form cannot tell every two native requests apart;
        a native deployment's answer may differ between them). `stream` is no part of it,
        as in the chat form's key."""
        body = {k: v for k, v in self.body.items() if k != "stream"}
        return {"native_request": [body, dict(self.headers)]}


def takes_native(capabilities: Capabilities, served: Set[Endpoint], endpoint: Endpoint) -> bool:
    """Whether a deployment (its capabilities, its adapter's endpoints) takes a request on
    native `endpoint` as sent: only by an adapter that can send one, and for the Responses
    API only where declared (most OpenAI-compatible servers have chat only)."""
    if endpoint not in served:
        return False
    return capabilities.responses if endpoint is Endpoint.RESPONSES else True


def native_turn(
    trace: Trace, endpoint: Endpoint, capabilities: Capabilities, served: Set[Endpoint]
) -> Translation | Refusal | None:
    """For one deployment of a request: the native request's body to send it (a
    Translation with nothing applied), the refusal it is skipped with (the chat body cannot
    stand for the request), or None: the chat body, translated as for any chat."""
    native = trace.native
    if native is None or endpoint is not Endpoint.CHAT:
        return None
    if takes_native(capabilities, served, native.endpoint):
        return Translation(native.body)
    return trace.chat_refusal
