"""A dollar budget counts only what it can price: a config whose dollar budgets reach a
deployment with no price is refused at load (so at start-up and on every reload, which
loads the file the same way), and a request whose own fallbacks reach one is refused
where a dollar budget applies. Never counted as $0."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml

from policies.loading import ConfigError, load_config
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.manual_clock import ManualClock
from tests.router.test_reload import Logs, ReloadingTurnout, events, logs, serve, write
from tests.served import SERVE, free_port
from tests.turnout_server import RunningTurnout, simple_config

__all__ = ["logs", "serve"]  # the fixtures, shared with the reload tests

PRICE = {"prompt": 1.0, "completion": 2.0}
BUDGET = {"budget_usd": {"per": "day", "usd": 5}}
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]


def two_models(url: str, **overrides: Any) -> dict[str, Any]:
    """`priced` (its deployment has a price) and `free` (a self-hosted name the shipped
    table does not list: unpriced)."""
    models = {
        "priced": {"deployments": [{"provider": "a", "model": "own-model", "price": PRICE}]},
        "free": {"deployments": [{"provider": "a", "model": "llama-local"}]},
    }
    return simple_config({"a": url}, models=models, **overrides)


def load(tmp_path: Path, config: dict[str, Any]) -> Any:
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def refusal(tmp_path: Path, config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, config)
    return str(caught.value)


@pytest.mark.parametrize(
    ("where", "place"),
    [
        ("keys[0].limits.budget_usd", lambda c: c.update(keys=[{"key": "sk-a", "limits": BUDGET}])),
        ("teams.t.limits.budget_usd", lambda c: c.update(teams={"t": {"limits": BUDGET}})),
        ("teams.t.key_limits.budget_usd", lambda c: c.update(teams={"t": {"key_limits": BUDGET}})),
        ("models.free.limits.budget_usd", lambda c: c["models"]["free"].update(limits=BUDGET)),
    ],
)
def test_a_dollar_budget_over_an_unpriced_deployment_is_refused_at_load(
    tmp_path: Path, where: str, place: Any
) -> None:
    config = two_models("http://127.0.0.1:9")
    place(config)
    message = refusal(tmp_path, config)
    assert f"{where}: a dollar budget cannot count" in message
    assert "a/llama-local" in message
    assert "a/own-model" not in message  # priced: not a problem
    assert "sk-a" not in message


def test_what_a_budget_reaches_is_all_that_must_be_priced(tmp_path: Path) -> None:
    config = two_models("http://127.0.0.1:9")
    # A team held to the priced model, the priced model's own budget: nothing unpriced.
    config["teams"] = {"t": {"models": ["priced"], "limits": BUDGET}}
    config["models"]["priced"]["limits"] = BUDGET
    load(tmp_path, config)
    # ... until the team's rule sends requests to the unpriced one,
    rule = {"when": {"user": "u"}, "use": {"model": "free"}}
    config["teams"]["t"]["rules"] = [rule]
    assert "teams.t.limits.budget_usd" in refusal(tmp_path, config)
    # ... or the priced model falls back to it.
    config["teams"]["t"]["rules"] = []
    config["models"]["priced"]["fallbacks"] = ["free"]
    assert "models.priced.limits.budget_usd" in refusal(tmp_path, config)


@pytest.mark.parametrize(
    "priced",
    [
        lambda c: c["models"]["free"]["deployments"][0].update(price={}),  # free, on purpose
        lambda c: c.update(prices={"llama-local": PRICE}),
    ],
)
def test_an_operator_prices_a_deployment_to_put_it_under_a_budget(
    tmp_path: Path, priced: Any
) -> None:
    config = two_models("http://127.0.0.1:9", keys=[{"key": "sk-a", "limits": BUDGET}])
    priced(config)
    assert load(tmp_path, config).keys[0].limits.budget_usd.usd == 5


def test_the_shipped_price_table_prices_a_hosted_model(tmp_path: Path) -> None:
    models = {"m": {"deployments": [{"provider": "a", "model": "gpt-4o-mini"}]}}
    config = simple_config({"a": "http://127.0.0.1:9"}, models=models)
    config["keys"] = [{"key": "sk-a", "limits": BUDGET}]
    load(tmp_path, config)


def test_token_budgets_need_no_price(tmp_path: Path) -> None:
    config = two_models("http://127.0.0.1:9")
    config["keys"] = [{"key": "sk-a", "limits": {"budget_tokens": {"per": "day", "tokens": 9}}}]
    config["models"]["free"]["limits"] = {"budget_tokens": {"per": "day", "tokens": 9}}
    load(tmp_path, config)


def test_a_models_limits_are_budgets_only(tmp_path: Path) -> None:
    """A model is known only once the body is routed; request limits are counted before."""
    config = two_models("http://127.0.0.1:9")
    config["models"]["priced"]["limits"] = {"rpm": 5}
    assert "models.priced.limits.rpm" in refusal(tmp_path, config)


def test_a_reload_keeps_the_rule(
    tmp_path: Path, upstream: FakeOpenAIUpstream, serve: Any, logs: Logs
) -> None:
    path = tmp_path / "turnout.yaml"
    config = two_models(upstream.base_url, keys=[{"key": "sk-a"}])
    write(path, config)
    server: ReloadingTurnout = serve(path)
    gateway = server.app.state.gateway

    config["keys"][0]["limits"] = BUDGET
    write(path, config)
    assert server.reload() is False
    [rejected] = events(logs, "config_reload_rejected")
    assert "keys[0].limits.budget_usd: a dollar budget cannot count" in rejected["error"]
    assert server.app.state.gateway is gateway  # the running config keeps serving
    with server.client("sk-a") as client:
        reply = client.chat.completions.with_raw_response.create(model="free", messages=MESSAGES)
    assert "x-ratelimit-limit-usd" not in reply.headers

    config["models"]["free"]["deployments"][0]["price"] = {}
    write(path, config)
    assert server.reload() is True
    with server.client("sk-a") as client:
        reply = client.chat.completions.with_raw_response.create(model="free", messages=MESSAGES)
    assert reply.headers["x-ratelimit-limit-usd"] == "5"


def test_fallbacks_a_request_adds_to_an_unpriced_deployment_are_refused_under_a_budget(
    turnout: Any, upstream: FakeOpenAIUpstream
) -> None:
    """Load cannot see these: the model's budget is refused the request instead."""
    config = two_models(upstream.base_url, keys=[{"key": "sk-a"}])
    config["models"]["priced"]["limits"] = BUDGET
    server: RunningTurnout = turnout(config, ManualClock())
    with server.client("sk-a") as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="priced", messages=MESSAGES, extra_body={"fallbacks": ["free"]}
            )
        assert caught.value.code == "unpriced_deployment"
        assert "a/llama-local" in caught.value.message
        # A request that adds the budget's model as its fallback is counted by its budget
        # too (router/fan_out_charge.py): refused the same, as `free` cannot be priced.
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(
                model="free", messages=MESSAGES, extra_body={"fallbacks": ["priced"]}
            )
        assert caught.value.code == "unpriced_deployment"
        # Without the budget's model, nothing is priced nor refused.
        client.chat.completions.create(model="free", messages=MESSAGES)
    assert sum(r.path == "/v1/chat/completions" for r in upstream.requests) == 1


def test_start_up_refuses_it(tmp_path: Path) -> None:
    """`turnout serve` loads the file as a reload does: it exits, saying why."""
    path = tmp_path / "turnout.yaml"
    path.write_text(
        yaml.safe_dump(two_models("http://127.0.0.1:9", teams={"t": {"limits": BUDGET}}))
    )
    done = subprocess.run(
        [*SERVE, "--config", str(path), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "teams.t.limits.budget_usd: a dollar budget cannot count" in done.stderr
    assert "a/llama-local" in done.stderr
