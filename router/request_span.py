"""A client request's server span (while tracing is on, policies/telemetry/): begun
when the pipeline has the request's body and headers (a client's `traceparent` continues
its trace), ended with the request's record: the facts its final attributes are made of
are taken from the record here, and the attributes worked out on the export thread."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from policies.plan import Target
from policies.pricing.cost import RequestCost
from policies.teams import Caller
from policies.telemetry.attributes import (
    Attributes,
    kept_usage,
    translation_list,
    usage_attributes,
)
from policies.translation import Translation
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
    """The request has ended: its server span ends, given the facts its final attributes
    are made of (`server_attributes`, on the export thread: only references and a few
    values are taken here, never a body)."""
    spans = record.spans
    if spans is None:
        return
    route = record.route
    model = route.plan.model if route is not None else None
    error_type = None if status < 400 else outcome if outcome != "ok" else str(status)
    if not spans.server.recording:
        spans.finish(status, error_type, model, None)
        return
    trace = record.trace
    facts = ServerFacts(
        kept_usage(usage),
        record.request_id,
        record.endpoint,
        outcome,
        record.extra_headers.get(CACHE_HEADER, ""),
        record.caller,
        route.rule if route is not None else None,
        len(trace.attempts) if trace is not None else None,
        trace.target if trace is not None else None,
        _translated(trace.translation if trace is not None else None),
        trace.continued if trace is not None else 0,
        record.cost,
    )
    spans.finish(status, error_type, model, (server_attributes, (facts,)))


class ServerFacts(NamedTuple):
    """What a request's server span says of it at its end, taken from its record."""

    usage: Any
    request_id: str
    endpoint: str
    outcome: str
    cache: str  # the x-turnout-cache header's value, if any
    caller: Caller | None
    rule: str | None
    attempts: int | None  # None: dispatch never started
    target: Target | None
    translated: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None
    continued: int
    cost: RequestCost | None


def _translated(
    translation: Translation | None,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]] | None:
    """What was emulated, dropped and clamped (not the translation: it holds a body)."""
    if translation is None or not (
        translation.emulated or translation.dropped or translation.clamped
    ):
        return None
    return translation.emulated, translation.dropped, translation.clamped


def server_attributes(f: ServerFacts) -> Attributes:
    """A server span's attributes from its `ServerFacts` (on the export thread)."""
    attributes: Attributes = usage_attributes(f.usage)
    attributes["turnout.request_id"] = f.request_id
    attributes["turnout.endpoint"] = f.endpoint
    attributes["turnout.outcome"] = f.outcome
    attributes["turnout.cache"] = _CACHE.get(f.cache, "none")
    if f.caller is not None:
        if f.caller.team is not None:
            attributes["turnout.team"] = f.caller.team
        attributes["turnout.key"] = f.caller.key_id  # the key's id (digest), never the key
    if f.rule is not None:
        attributes["turnout.rule"] = f.rule
    if f.attempts is not None:
        attributes["turnout.attempts"] = f.attempts
    if f.target is not None:
        attributes["turnout.deployment"] = f.target.label
    if f.translated is not None:
        attributes["turnout.translation"] = translation_list(*f.translated)
    if f.continued:
        attributes["turnout.continued"] = f.continued
    # --- Cost (policies/pricing/): what the request's upstream calls cost, on the span. ---
    cost = f.cost.reported() if f.cost is not None else None
    if cost is not None:
        attributes["turnout.cost_usd"] = cost
    return attributes
