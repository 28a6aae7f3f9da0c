"""The tokens of upstream calls that no answer accounts for, priced from a request's
`CallLedger` (providers/call_ledger.py): a call the upstream reported a usage for costs
that usage; any other call that was sent and may have been billed (cancelled mid-flight,
timed out, broken, answered without a usage) costs its reserved estimate (its prompt plus
the completion it allowed). Calls the upstream refused, and calls never sent, cost
nothing. The answer's own calls are left out: limits settle on its usage as before."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.token_estimate import estimate_parts
from providers.call_ledger import CallLedger, CallRecord


def unsettled_tokens(ledger: CallLedger | None) -> int:
    """What the calls no answer settles cost, in tokens (0 without a ledger)."""
    if ledger is None:
        return 0
    total = 0
    for call in ledger.unsettled():
        used = usage_tokens(call.usage)
        total += used if used is not None else sum(call_estimate(call))
    return total


def call_estimate(call: CallRecord) -> tuple[int, int]:
    """The (prompt, completion) tokens a call with no usage is charged, estimated from its
    body once (the limits and the request's cost both ask)."""
    if call.estimate is None:
        call.estimate = estimate_parts(call.body)
    return call.estimate


def usage_tokens(usage: Any) -> int | None:
    """Tokens a `usage` object counts (None when it counts none)."""
    if not isinstance(usage, Mapping):
        return None
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    parts = [usage.get(name) for name in usage_parts(usage)]
    counted = [p for p in parts if isinstance(p, int) and not isinstance(p, bool)]
    return sum(counted) if counted else None


def usage_parts(usage: Mapping[str, Any]) -> tuple[str, ...]:
    """The counts that add up to a `usage` without `total_tokens`: OpenAI's prompt and
    completion, or Anthropic's (a native Messages answer) input, output and prompt cache
    (written and read), which it counts apart from `input_tokens`."""
    return _ANTHROPIC_PARTS if "input_tokens" in usage else _OPENAI_PARTS


_OPENAI_PARTS = ("prompt_tokens", "completion_tokens")
_ANTHROPIC_PARTS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)
