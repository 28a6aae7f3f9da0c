"""Native passthrough for the Responses door: a deployment that declares `responses`
(OpenAI itself, vLLM) gets the Responses API request as the client sent it, untranslated,
instead of the chat body every other deployment gets (translated as usual). Routing,
limits, breakers, retries, fallbacks and hedging are the same for both."""

from __future__ import annotations

from collections.abc import Set

from policies.trace import Trace
from policies.translation import Refusal, Translation
from providers.capabilities import Capabilities
from providers.types import Endpoint


def takes_native(capabilities: Capabilities, served: Set[Endpoint]) -> bool:
    """Whether a deployment (its capabilities, its adapter's endpoints) takes a Responses
    API request natively: declared, and only by an adapter that can send one."""
    return capabilities.responses and Endpoint.RESPONSES in served


def native_turn(
    trace: Trace, endpoint: Endpoint, capabilities: Capabilities, served: Set[Endpoint]
) -> Translation | Refusal | None:
    """For one deployment of a request: the native request to send it (a Translation
    with nothing applied), the refusal it is skipped with (the chat body cannot stand for
    the request), or None: the chat body, translated as for any chat."""
    if trace.native is None or endpoint is not Endpoint.CHAT:
        return None
    if takes_native(capabilities, served):
        return Translation(trace.native)
    return trace.chat_refusal
