"""A model's dollar budget against a request that steers itself to the model: fallbacks it
adds, or `router.only`/`ignore` that leave none of its routed model's deployments. Before,
only the routed model's budget applied, so `model: cheap, fallbacks: [gpt], router:
{ignore: [a/a-model]}` was served by gpt with gpt's budget never asked (router/
fan_out_charge.py). A real Turnout, fake upstreams, the official SDK's wire format."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from policies.token_estimate import estimate_parts
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
PRICE = {"prompt": 1.0, "completion": 2.0}  # 1,000 and 2,000 nano-dollars a token
MAX_TOKENS = 10
PROMPT_ESTIMATE, _ = estimate_parts({"messages": MESSAGES, "max_tokens": MAX_TOKENS})
ESTIMATE = PROMPT_ESTIMATE * 1000 + MAX_TOKENS * 2000  # what one request reserves
REAL = 2 * 1000 + 3 * 2000  # "hello world" -> "echo: hello world": 2 and 3 tokens


def config(a: FakeOpenAIUpstream, b: FakeOpenAIUpstream, gpt_budget_nanos: int) -> Any:
    return simple_config(
        {"a": a.base_url, "b": b.base_url},
        models={
            "cheap": {"deployments": [{"provider": "a", "model": "a-model", "price": PRICE}]},
            "gpt": {
                "deployments": [{"provider": "b", "model": "b-model", "price": PRICE}],
                "limits": {"budget_usd": {"per": "day", "usd": gpt_budget_nanos / 1e9}},
            },
        },
    )


def ask(server: RunningTurnout, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": MAX_TOKENS, **extra}
    return httpx.post(f"{server.url}/v1/chat/completions", json=body)


def refused_by_gpt(answer: httpx.Response) -> str:
    assert answer.status_code == 429, answer.text
    error = answer.json()["error"]
    assert error["code"] == "budget_exceeded"
    assert "model `gpt`" in error["message"]
    return str(error["message"])


def test_narrowing_to_a_fallback_does_not_escape_its_budget(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b, 1), ManualClock())
    assert refused_by_gpt(ask(server, "gpt")).startswith("Request too large")
    for steer in (
        {"fallbacks": ["gpt"], "router": {"ignore": ["a/a-model"]}},
        {"router": {"fallbacks": ["gpt"], "only": ["b/b-model"]}},
    ):
        assert refused_by_gpt(ask(server, "cheap", **steer)).startswith("Request too large")
    assert not upstream_b.requests  # gpt's deployment was never called


def test_a_steered_request_is_settled_on_the_fallback_models_budget(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    # Room for one request's estimate, not for a second once the first's cost is spent.
    server = turnout(config(upstream, upstream_b, ESTIMATE + REAL - 1), ManualClock())
    steer = {"fallbacks": ["gpt"], "router": {"ignore": ["a/a-model"]}}
    served = ask(server, "cheap", **steer)
    assert served.status_code == 200, served.text
    assert served.headers["x-turnout-deployment"] == "b/b-model"
    assert "is spent" in refused_by_gpt(ask(server, "gpt"))
    assert "is spent" in refused_by_gpt(ask(server, "cheap", **steer))


def test_a_configured_fallback_is_not_charged_for_its_routed_model_s_requests(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """The operator's own fallbacks keep the documented rule: a model's budget counts the
    requests routed to it; a request to `cheap` that `cheap` serves is not gpt's."""
    built = config(upstream, upstream_b, 1)
    built["models"]["cheap"]["fallbacks"] = ["gpt"]
    server = turnout(built, ManualClock())
    answer = ask(server, "cheap")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-turnout-deployment"] == "a/a-model"
