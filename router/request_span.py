"""A client request's server span (while tracing is on, policies/telemetry/): begun
when the pipeline has the request's body and headers (a client's `traceparent` continues
its trace), ended with the request's record, its final attributes read from it here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from policies.telemetry.attributes import Attributes, translation_list, usage_attributes
from providers.types import Endpoint
from router.gateway import Gateway

if TYPE_CHECKING:
    from router.accounting import RequestRecord

CACHE_HEADER = "x-turnout-cache"  # router/accounting.CACHE
_CACHE = {"hit": "hit", "miss": "miss"}  # anything else (no cache, a stream's bypass): none


def begin_server_span(
    gateway: Gateway,
    record: RequestRecord,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
) -> None:
    """Give `record` its server span, if tracing is on and it has none yet."""
    tracing = gateway.tracing
    if tracing is None or record.spans is not None:
        return
    record.spans = tracing.request(
        endpoint, body, headers, record.started, gateway.config.providers, gateway.redactor
    )
    record.span_end = end_server_span
    if record.trace is not None:
        record.trace.spans = record.spans


def end_server_span(record: RequestRecord, status: int, usage: Any, outcome: str) -> None:
    """The request has ended: its server span's final attributes, from its record."""
    spans = record.spans
    if spans is None:
        return
    if not spans.server.is_recording():
        spans.finish({}, status, None)
        return
    attributes: Attributes = usage_attributes(usage)
    attributes["turnout.request_id"] = record.request_id
    attributes["turnout.endpoint"] = record.endpoint
    attributes["turnout.outcome"] = outcome
    attributes["turnout.cache"] = _CACHE.get(record.extra_headers.get(CACHE_HEADER, ""), "none")
    caller, route, trace = record.caller, record.route, record.trace
    if caller is not None:
        if caller.team is not None:
            attributes["turnout.team"] = caller.team
        attributes["turnout.key"] = caller.key_id  # the key's id (digest), never the key
    if route is not None and route.rule is not None:
        attributes["turnout.rule"] = route.rule
    if trace is not None:
        attributes["turnout.attempts"] = len(trace.attempts)
        if trace.target is not None:
            attributes["turnout.deployment"] = trace.target.label
        translation = trace.translation
        if translation is not None:
            done = translation_list(translation.emulated, translation.dropped, translation.clamped)
            if done:
                attributes["turnout.translation"] = done
        if trace.continued:
            attributes["turnout.continued"] = trace.continued
    # --- Cost (policies/pricing/): what the request's upstream calls cost, on the span. ---
    cost = record.cost.reported() if record.cost is not None else None
    if cost is not None:
        attributes["turnout.cost_usd"] = cost
    error_type = None if status < 400 else outcome if outcome != "ok" else str(status)
    spans.finish(attributes, status, error_type, route.plan.model if route is not None else None)
