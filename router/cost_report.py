"""How a request's cost is shown to its client and in its log line.

- `x-turnout-cost-usd` on a whole answer (and on an error answer, whose failed attempts
  may have been billed): the dollars as a plain decimal with up to 9 places and no
  exponent (`0.000123`, `0` for a cache hit), or `unpriced` when a deployment it called
  has no price: never a number that could be read as $0.
- a stream's usage chunk, when the client asked for it (`stream_options.include_usage`):
  `turnout.cost_usd`, the same figure as a JSON number, or null when unpriced, in the
  chunk's `turnout` object (where a continued stream's closing chunk says `continued`
  too), so that `usage` itself stays OpenAI's, equal to a whole answer's. A stream's
  headers leave before its cost is known, so they carry none.
- the log line: `cost_usd` (a number or null) and, when null, `unpriced` (the
  deployments with no price)."""

from __future__ import annotations

from typing import Any

from policies.pricing.cost import RequestCost

COST_HEADER = "x-turnout-cost-usd"
UNPRICED = "unpriced"
EXTRA = "turnout"  # a chunk's object of Turnout's own fields (policies/continuation.py)
COST_FIELD = "cost_usd"


def header_value(cost: RequestCost) -> str:
    reported = cost.reported()
    if reported is None:
        return UNPRICED
    return f"{reported:.9f}".rstrip("0").rstrip(".")


def log_fields(cost: RequestCost | None) -> dict[str, Any]:
    if cost is None:  # ended before any cost was worked out (a crash)
        return {"cost_usd": None}
    reported = cost.reported()
    if reported is None:
        return {"cost_usd": None, "unpriced": list(cost.unpriced)}
    return {"cost_usd": reported}


def with_cost(chunk: dict[str, Any], cost: RequestCost) -> dict[str, Any]:
    """A stream's usage chunk with the request's cost (a copy: the chunk may be kept
    elsewhere)."""
    extra = chunk.get(EXTRA)
    own = extra if isinstance(extra, dict) else {}
    return {**chunk, EXTRA: {**own, COST_FIELD: cost.reported()}}
