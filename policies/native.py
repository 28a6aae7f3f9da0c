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

from collections.abc import Set

from policies.native_request import NativeRequest
from policies.trace import Trace
from policies.translation import Refusal, Translation
from providers.capabilities import Capabilities
from providers.types import Endpoint

__all__ = ["NativeRequest", "native_turn", "takes_native"]


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
