"""A request's cost from its upstream calls' usage, and each deployment's price."""

from __future__ import annotations

from typing import Any

import pytest

from policies.config import TurnoutConfig
from policies.policy_config import Price
from policies.pricing.book import PriceBook
from policies.pricing.cost import TokenCounts, counts_of, request_cost, to_nanos
from policies.pricing.table import shipped_table
from policies.token_estimate import estimate_parts
from providers.call_ledger import CallLedger, CallRecord

PRICE = Price(prompt=2.0, completion=8.0, cached_prompt=0.5, cache_write_prompt=2.5)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


@pytest.mark.parametrize(
    ("usage", "counts"),
    [
        (  # OpenAI chat: cached tokens are among the prompt's
            {
                "prompt_tokens": 1000,
                "completion_tokens": 50,
                "total_tokens": 1050,
                "prompt_tokens_details": {"cached_tokens": 600},
            },
            TokenCounts(400, 600, 0, 50),
        ),
        (  # Anthropic Messages: input leaves out cache reads and writes
            {
                "input_tokens": 10,
                "output_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 30,
            },
            TokenCounts(10, 100, 30, 5),
        ),
        (  # Responses API: input includes the cached ones
            {
                "input_tokens": 100,
                "output_tokens": 7,
                "total_tokens": 107,
                "input_tokens_details": {"cached_tokens": 40},
            },
            TokenCounts(60, 40, 0, 7),
        ),
        ({"prompt_tokens": 12, "total_tokens": 12}, TokenCounts(12, 0, 0, 0)),  # embeddings
        (  # a backend's negative counts are no refund: counted as none
            {"prompt_tokens": 5, "completion_tokens": -(10**9), "total_tokens": -(10**9) + 5},
            TokenCounts(5, 0, 0, 0),
        ),
        (
            {"input_tokens": -7, "output_tokens": 3, "cache_read_input_tokens": -(10**9)},
            TokenCounts(0, 0, 0, 3),
        ),
        ({}, None),
        (None, None),
    ],
)
def test_usage_shapes(usage: Any, counts: TokenCounts | None) -> None:
    assert counts_of(usage) == counts


def test_cached_and_written_prompt_tokens_are_priced_as_such() -> None:
    counts = TokenCounts(prompt=1_000_000, cached_prompt=2_000_000, cache_write_prompt=1_000_000)
    assert counts.cost(PRICE) == pytest.approx(2.0 + 1.0 + 2.5)
    # Unset cache prices fall back to the prompt's; per_request is added per call.
    plain = Price(prompt=1.0, completion=2.0, per_request=0.01)
    assert TokenCounts(1_000_000, 1_000_000, 0, 500_000).cost(plain) == pytest.approx(3.01)


def _ledger(*tallies: tuple[str, list[CallRecord], bool]) -> CallLedger:
    ledger = CallLedger()
    for label, calls, settled in tallies:
        tally = ledger.tally(label)
        tally.calls.extend(calls)
        tally.settled = settled
    return ledger


def test_every_billed_call_of_every_attempt_counts() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    refused = CallRecord(CHAT, billed=False)  # a 5xx: not billed
    cut = CallRecord(CHAT)  # billed, no usage: its estimate
    ledger = _ledger(
        ("a/m", [refused], False),
        ("a/m", [cut], False),
        ("b/m", [CallRecord(CHAT, usage), CallRecord(CHAT, usage)], True),  # an emulated n=2
    )
    book = PriceBook({"a/m": PRICE, "b/m": Price(prompt=1.0, completion=1.0)})
    cost = request_cost(ledger, book)
    estimate = TokenCounts(prompt=estimate_parts(CHAT)[0], completion=10).cost(PRICE)
    assert cost.usd == pytest.approx(estimate + 2 * 110 / 1e6)
    assert cost.calls == 3
    assert cost.known
    assert cost.nanos == to_nanos(cost.usd)


def test_an_unpriced_deployment_makes_the_cost_unknown_never_zero() -> None:
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    ledger = _ledger(("local/m", [CallRecord(CHAT, usage)], True))
    cost = request_cost(ledger, PriceBook({"local/m": None}))
    assert not cost.known
    assert cost.unpriced == ("local/m",)
    assert cost.reported() is None
    # A request that made no billed call costs nothing, known.
    assert request_cost(_ledger(("local/m", [], False)), PriceBook({})).reported() == 0.0


def test_the_answer_usage_stands_in_for_a_stream_that_reported_none() -> None:
    ledger = _ledger(("a/m", [CallRecord(CHAT)], True))
    answer = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    cost = request_cost(ledger, PriceBook({"a/m": PRICE}), answer)
    assert cost.usd == pytest.approx((3 * 2.0 + 4 * 8.0) / 1e6)


def test_price_book_order_deployment_then_config_then_table() -> None:
    config = TurnoutConfig.model_validate(
        {
            "providers": {
                "oai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                "vllm": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                "local": {"kind": "torch", "model": "smollm2-135m-instruct"},
            },
            "prices": {"gpt-4o-mini": {"prompt": 9, "completion": 9}},
            "models": {
                "a": {"deployments": [{"provider": "oai", "model": "gpt-4o"}]},
                "b": {"deployments": [{"provider": "oai", "model": "gpt-4o-mini"}]},
                "c": {
                    "deployments": [
                        {"provider": "vllm", "model": "gpt-4o", "price": {"prompt": 1}},
                        {"provider": "vllm", "model": "my-llama"},
                        {"provider": "local", "model": "smollm2-135m-instruct"},
                    ]
                },
            },
        }
    )
    table = shipped_table()
    book = PriceBook.from_config(config, table)
    assert book.price("oai/gpt-4o") == table.get("gpt-4o")
    assert book.price("oai/gpt-4o-mini") == Price(prompt=9, completion=9)
    assert book.price("vllm/gpt-4o") == Price(prompt=1)
    assert book.unpriced() == ["local/smollm2-135m-instruct", "vllm/my-llama"]


def test_the_shipped_table_says_where_and_when() -> None:
    table = shipped_table()
    assert "litellm" in table.source.lower()
    assert table.taken
    gpt = table.get("gpt-4o")
    assert gpt is not None
    assert gpt.prompt > 0
    assert gpt.completion > gpt.prompt
    claude = table.get("claude-sonnet-4-5")
    assert claude is not None
    assert claude.cache_write_prompt is not None


@pytest.mark.parametrize("field", ["prompt", "completion", "cached_prompt", "per_request"])
def test_a_price_is_finite(field: str) -> None:
    with pytest.raises(ValueError, match="finite"):
        Price.model_validate({field: "inf"})
    assert to_nanos(TokenCounts(10**6, 0, 0, 10**6).cost(PRICE)) == 10 * 10**9
