"""What a request's upstream calls may cost before any is made: the estimate a dollar
budget reserves (policies/limits.py), corrected to the real cost once the request ends.

The request's estimated tokens (the prompt once per upstream call that reads it, every
completion token it allows: policies/token_estimate.py) are priced at the dearest price
among the deployments its plan may reach (the model's, its fallbacks', its
context-window fallbacks'), plus `per_request` once per call. Admission cannot know
which deployment will answer; reserving the dearest means a fallback to a dearer one
never spends past the budget unseen, and settlement gives back what was not spent.

A plan that may reach a deployment with no price cannot be estimated: where a dollar
budget applies, the request is refused (400 `unpriced_deployment`) rather than counted
at $0. Start-up and reload already refuse a config whose dollar budgets reach unpriced
deployments (policies/pricing/budget_check.py); only fallbacks a request adds itself can
still lead there."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.errors import ApiError
from policies.fan_out_cost import UpstreamCalls
from policies.policy_config import Price
from policies.pricing.book import PriceBook
from policies.pricing.cost import estimated_counts, to_nanos


@dataclass(frozen=True, slots=True)
class SpendEstimate:
    """The prices a request's plan may pay, and the body whose tokens they price."""

    body: Mapping[str, Any]
    prices: tuple[Price, ...]
    unpriced: tuple[str, ...] = ()  # labels of reachable deployments with no price

    @classmethod
    def of(cls, book: PriceBook, labels: Iterable[str], body: Mapping[str, Any]) -> SpendEstimate:
        prices: list[Price] = []
        unpriced: set[str] = set()
        for label in labels:
            price = book.price(label)
            if price is None:
                unpriced.add(label)
            elif price not in prices:
                prices.append(price)
        return cls(body, tuple(prices), tuple(sorted(unpriced)))

    def nanos(self, calls: UpstreamCalls) -> int:
        """The dearest cost of `calls` among the plan's prices, in nano-dollars. Raises
        the 400 when the plan may reach an unpriced deployment (only asked where a dollar
        budget applies)."""
        if self.unpriced:
            raise unpriced_refusal(self.unpriced)
        counts = estimated_counts(self.body, calls.prompt_reads)
        extra_calls = max(0, calls.calls - 1)  # `cost` counts one call's `per_request`
        return max(
            (
                to_nanos(counts.cost(price) + extra_calls * price.per_request)
                for price in self.prices
            ),
            default=0,
        )


def unpriced_refusal(labels: tuple[str, ...]) -> ApiError:
    return ApiError(
        "A dollar budget applies to this request, and it may be served by deployments "
        f"with no price ({', '.join(labels)}), whose spending that budget cannot count. "
        "Ask for fallbacks that are priced, or have the operator set their `price:`.",
        status=400,
        type="invalid_request_error",
        code="unpriced_deployment",
    )
