"""What a request cost in US dollars, from the usage its upstream calls reported.

Every billed call of every attempt counts (providers/call_ledger.py keeps them: retries,
fallbacks, hedges that produced tokens, stream continuations, the calls of an emulated
`n` or `best_of`), each at the price of the deployment it was made to. A call's tokens
are split as its backend bills them: fresh prompt tokens, prompt tokens read from the
backend's prompt cache (priced as `cached_prompt`), prompt tokens written to it
(Anthropic's cache creation, `cache_write_prompt`) and completion tokens; plus the
deployment's `per_request`. A billed call with no usage (cut mid-flight, or a backend
that reports none) costs its estimate, as limits charge it. A call to a deployment with
no known price makes the request's cost unknown (`unpriced`), never $0.

Dollar limits count whole nano-dollars (`nanos`): the state stores keep integers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from policies.call_cost import call_estimate
from policies.policy_config import Price
from policies.pricing.book import PriceBook
from policies.token_estimate import estimate_parts
from providers.call_ledger import CallLedger

PER_MILLION = 1_000_000.0
NANOS_PER_USD = 1_000_000_000


class TokenCounts(NamedTuple):
    """One call's tokens as a backend bills them (a tuple: made for every call priced)."""

    prompt: int = 0  # read fresh
    cached_prompt: int = 0  # read from the backend's prompt cache
    cache_write_prompt: int = 0  # written to it
    completion: int = 0

    def cost(self, price: Price) -> float:
        """USD for these tokens in one call at `price` (its `per_request` included)."""
        cached = price.prompt if price.cached_prompt is None else price.cached_prompt
        written = price.prompt if price.cache_write_prompt is None else price.cache_write_prompt
        per_token = (
            self.prompt * price.prompt
            + self.cached_prompt * cached
            + self.cache_write_prompt * written
            + self.completion * price.completion
        )
        return per_token / PER_MILLION + price.per_request


def counts_of(usage: Any) -> TokenCounts | None:
    """The billed tokens a `usage` reports, in any of the shapes Turnout relays: OpenAI's
    chat, completions and embeddings (`prompt_tokens`, cached ones among them), the
    Responses API's (`input_tokens`, cached ones among them, with a `total_tokens`) and
    Anthropic's Messages (`input_tokens` leaving out the cache's reads and writes, no
    total). None: the usage counts nothing."""
    if usage is None or not isinstance(usage, (dict, Mapping)):  # no ABC check for these
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        # OpenAI's shape, the common one: `_int` written out (this runs for every call).
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        prompt = prompt if type(prompt) is int and prompt > 0 else 0
        completion = completion if type(completion) is int and completion > 0 else 0
        details = usage.get("prompt_tokens_details")
        if not details or not isinstance(details, (dict, Mapping)):
            return TokenCounts(prompt, 0, 0, completion)
        read, written = _int(details.get("cached_tokens")), _int(details.get("cache_write_tokens"))
        return TokenCounts(max(prompt - read - written, 0), read, written, completion)
    if "input_tokens" in usage or "output_tokens" in usage:
        output = _int(usage.get("output_tokens"))
        if "total_tokens" in usage or "input_tokens_details" in usage:  # the Responses API's
            read = _int(_mapping(usage.get("input_tokens_details")).get("cached_tokens"))
            return TokenCounts(max(_int(usage.get("input_tokens")) - read, 0), read, 0, output)
        return TokenCounts(
            _int(usage.get("input_tokens")),
            _int(usage.get("cache_read_input_tokens")),
            _int(usage.get("cache_creation_input_tokens")),
            output,
        )
    if "total_tokens" in usage:  # an embeddings usage without its parts
        return TokenCounts(prompt=_int(usage.get("total_tokens")))
    return None


def estimated_counts(body: Mapping[str, Any], prompt_reads: int = 1) -> TokenCounts:
    """What a call (or `prompt_reads` calls) of `body` may use, before it is made: its
    prompt's estimate, all fresh, and every completion token it allows."""
    prompt, completion = estimate_parts(body, prompt_reads)
    return TokenCounts(prompt=prompt, completion=completion)


class DeploymentCost(NamedTuple):
    """One deployment's share of a request: its billed calls, their tokens, and their cost
    (`usd` None: the deployment has no price). Spend is kept and counted per deployment."""

    label: str
    usd: float | None
    calls: int
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class RequestCost:
    """What one request's upstream calls cost. `unpriced`: deployments called (and billed
    for) that have no price, whose share of the cost is unknown; `calls`: billed calls;
    `shares`: the same split per deployment called, in the order first called."""

    usd: float = 0.0
    unpriced: tuple[str, ...] = ()
    calls: int = 0
    shares: tuple[DeploymentCost, ...] = ()

    @property
    def known(self) -> bool:
        return not self.unpriced

    @property
    def nanos(self) -> int:
        return to_nanos(self.usd)

    def reported(self) -> float | None:
        """The cost to report: None when some of it is unknown."""
        return round(self.usd, 9) if self.known else None


def request_cost(
    ledger: CallLedger | None, book: PriceBook, answer_usage: Any = None
) -> RequestCost:
    """The cost of every billed call in `ledger`. `answer_usage`: the answer's usage as the
    pipeline settled it, for an answering attempt of one call whose backend reported none
    (a stream's usage estimated from its text)."""
    shares = deployment_costs(ledger, book, answer_usage)
    usd, calls, unpriced = 0.0, 0, list[str]()
    for share in shares:  # written out: this runs for every request (issue 20: <= 20 us)
        calls += share.calls
        if share.usd is None:
            unpriced.append(share.label)
        else:
            usd += share.usd
    return RequestCost(usd, tuple(sorted(unpriced)), calls, shares)


def deployment_costs(
    ledger: CallLedger | None, book: PriceBook, answer_usage: Any = None
) -> tuple[DeploymentCost, ...]:
    """The billed calls of `ledger` per deployment called (several attempts at one
    deployment add up): what each deployment's calls cost, or None for one with no price.
    See `request_cost` for `answer_usage`."""
    if ledger is None:
        return ()
    found: dict[str, list[Any]] = {}  # label -> [usd or None, calls, prompt, completion]
    for tally in ledger.tallies:
        entry: list[Any] | None = None
        price: Price | None = None
        for call in tally.calls:
            if not call.billed:
                continue
            if entry is None:
                label = tally.label or "unknown"
                price = book.price(tally.label)
                entry = found.get(label)
                if entry is None:
                    entry = found[label] = [None if price is None else 0.0, 0, 0, 0]
            counts = counts_of(call.usage)
            if counts is None and tally.settled and len(tally.calls) == 1:
                counts = counts_of(answer_usage)
            if counts is None:
                prompt, completion = call_estimate(call)
                counts = TokenCounts(prompt, 0, 0, completion)
            entry[1] += 1
            if price is not None:
                entry[0] += counts.cost(price)
            entry[2] += counts[0] + counts[1] + counts[2]  # prompt: fresh, cached, written
            entry[3] += counts[3]
    return tuple([_share((label, *entry)) for label, entry in found.items()])


# A `DeploymentCost` from its five values without the named tuple's keyword-handling
# `__new__` (a Python function): a share is made per deployment of every request.
_share = partial(tuple.__new__, DeploymentCost)


def to_nanos(usd: float) -> int:
    return round(usd * NANOS_PER_USD)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, (dict, Mapping)) else {}


def _int(value: Any) -> int:
    # Not a bool, nor any other int subclass; never below 0: a backend's negative count
    # would make a negative cost, which settling would hand back to a dollar budget.
    return value if type(value) is int and value > 0 else 0
