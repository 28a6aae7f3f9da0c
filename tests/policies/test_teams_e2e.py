"""Teams through a real Turnout with the official SDK: keys (plain and sha256) resolve to
teams, a team sees only its models, rules route by what the client sends, the `router`
object narrows choices where the team allows it, and a team's translation mode applies."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.fakes.behaviors import context_length_exceeded
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
HASHED_KEY = "sk-hashed-research-2"


def team_config(a: FakeOpenAIUpstream, b: FakeOpenAIUpstream) -> dict[str, Any]:
    config = simple_config(
        {"a": a.base_url, "b": b.base_url},
        models={
            "chat-small": {"deployments": [{"provider": "a", "model": "small"}]},
            "local": {"deployments": [{"provider": "b", "model": "local-model"}]},
            "both": {
                "deployments": [
                    {"provider": "a", "model": "both-a"},
                    {"provider": "b", "model": "both-b"},
                ]
            },
            "secret": {"deployments": [{"provider": "a", "model": "secret-model"}]},
        },
    )
    config["teams"] = {
        "research": {
            "keys": ["sk-research", "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest()],
            "models": ["chat-small", "local", "both"],
            "rules": [
                {
                    "name": "batch",
                    "when": {"metadata": {"tier": "batch"}},
                    "use": {"model": "local"},
                },
                {"when": {"header": {"X-Route": "b-only"}}, "use": {"deployments": ["b"]}},
                {"when": {"user": "vip", "stream": True}, "use": {"model": "local"}},
                {"when": {"has_tools": True}, "use": {"model": "local"}},
                {"when": {"prompt_tokens_over": 50}, "use": {"model": "local"}},
            ],
        },
        "ops": {
            "keys": ["sk-ops"],
            "models": ["both"],
            "allow_router_options": False,
            "translation": "strict",
        },
    }
    config["keys"] = [{"key": "sk-admin", "admin": True}]
    return config


@pytest.fixture
def running(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> RunningTurnout:
    return turnout(team_config(upstream, upstream_b))


def test_keys_plain_and_hashed_reach_the_team(running: RunningTurnout) -> None:
    for key in ("sk-research", HASHED_KEY):
        reply = running.client(key).chat.completions.with_raw_response.create(
            model="chat-small", messages=MESSAGES
        )
        assert reply.headers["x-turnout-deployment"] == "a/small"
    with pytest.raises(openai.AuthenticationError):
        running.client("sk-nobody").chat.completions.create(model="chat-small", messages=MESSAGES)
    digest_itself = "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest()
    with pytest.raises(openai.AuthenticationError):  # the digest is not a key
        running.client(digest_itself).chat.completions.create(model="chat-small", messages=MESSAGES)


def test_a_team_sees_only_its_models(running: RunningTurnout, upstream: FakeOpenAIUpstream) -> None:
    ops = running.client("sk-ops")
    with pytest.raises(openai.NotFoundError) as caught:
        ops.chat.completions.create(model="chat-small", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        ops.models.retrieve("chat-small")
    assert [m.id for m in ops.models.list()] == ["both"]
    research = running.client("sk-research")
    assert [m.id for m in research.models.list()] == ["chat-small", "local", "both"]
    with pytest.raises(openai.NotFoundError):
        research.chat.completions.create(model="secret", messages=MESSAGES)
    admin = running.client("sk-admin")  # a top-level key has no team: every model
    assert len(admin.models.list().data) == 4
    assert all(r.json["model"] != "secret-model" for r in upstream.requests)


def test_a_fallback_outside_the_team_is_as_if_it_did_not_exist(running: RunningTurnout) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        running.client("sk-research").chat.completions.create(
            model="chat-small", messages=MESSAGES, extra_body={"fallbacks": ["secret"]}
        )
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "fallbacks[0]"


@pytest.mark.parametrize(
    ("kwargs", "headers", "rule_deployment"),
    [
        ({"metadata": {"tier": "batch"}}, {}, "b/local-model"),
        ({"metadata": {"tier": "interactive"}}, {}, "a/small"),
        ({}, {"X-Route": "b-only"}, None),  # deployments subset of chat-small: none left
        ({"user": "vip"}, {}, "a/small"),  # the rule also needs stream: true
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, {}, "b/local-model"),
        ({"messages": [{"role": "user", "content": "word " * 60}]}, {}, "b/local-model"),
    ],
    ids=["metadata", "metadata-other", "header", "user-needs-stream", "tools", "long-prompt"],
)
def test_rules_route_by_what_the_client_sends(
    running: RunningTurnout,
    kwargs: dict[str, Any],
    headers: dict[str, str],
    rule_deployment: str | None,
) -> None:
    client = running.client("sk-research", default_headers=headers)
    body = {"model": "chat-small", "messages": MESSAGES, **kwargs}
    if rule_deployment is None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(**body)
        assert caught.value.param == "router"
        return
    reply = client.chat.completions.with_raw_response.create(**body)
    assert reply.headers["x-turnout-deployment"] == rule_deployment


def test_a_header_rule_narrows_a_model_with_several_deployments(
    running: RunningTurnout,
) -> None:
    client = running.client("sk-research", default_headers={"x-route": "b-only"})
    reply = client.chat.completions.with_raw_response.create(model="both", messages=MESSAGES)
    assert reply.headers["x-turnout-deployment"] == "b/both-b"


def test_a_rule_may_match_streams(running: RunningTurnout) -> None:
    client = running.client("sk-research")
    with client.chat.completions.with_streaming_response.create(
        model="chat-small", messages=MESSAGES, user="vip", stream=True
    ) as reply:
        assert reply.headers["x-turnout-deployment"] == "b/local-model"
        assert "".join(line for line in reply.iter_lines())


def test_the_first_matching_rule_wins(running: RunningTurnout) -> None:
    client = running.client("sk-research", default_headers={"x-route": "b-only"})
    reply = client.chat.completions.with_raw_response.create(  # batch (first) beats header
        model="chat-small", messages=MESSAGES, metadata={"tier": "batch"}
    )
    assert reply.headers["x-turnout-deployment"] == "b/local-model"


def test_router_options_narrow_and_reorder(running: RunningTurnout) -> None:
    client = running.client("sk-research")
    only_b = client.chat.completions.with_raw_response.create(
        model="both", messages=MESSAGES, extra_body={"router": {"only": ["b"]}}
    )
    assert only_b.headers["x-turnout-deployment"] == "b/both-b"
    ignore_a = client.chat.completions.with_raw_response.create(
        model="both", messages=MESSAGES, extra_body={"router": {"ignore": ["a/both-a"]}}
    )
    assert ignore_a.headers["x-turnout-deployment"] == "b/both-b"
    cheapest = client.chat.completions.with_raw_response.create(
        model="both", messages=MESSAGES, extra_body={"router": {"strategy": "priority"}}
    )
    assert cheapest.headers["x-turnout-deployment"] == "a/both-a"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="both", messages=MESSAGES, extra_body={"router": {"only": ["nobody"]}}
        )
    assert caught.value.param == "router"


def test_a_team_may_be_denied_router_options(running: RunningTurnout) -> None:
    with pytest.raises(openai.PermissionDeniedError) as caught:
        running.client("sk-ops").chat.completions.create(
            model="both", messages=MESSAGES, extra_body={"router": {"only": ["b"]}}
        )
    assert caught.value.param == "router"


def test_the_team_translation_mode_applies_and_a_request_may_override_it(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = team_config(upstream, upstream_b)
    config["providers"]["a"]["capabilities"] = {"n": False}
    config["providers"]["b"]["capabilities"] = {"n": False}
    config["teams"]["ops"]["allow_router_options"] = True
    running = turnout(config)
    with pytest.raises(openai.BadRequestError) as caught:  # ops is strict
        running.client("sk-ops").chat.completions.create(model="both", messages=MESSAGES, n=2)
    assert caught.value.param == "n"
    emulated = running.client("sk-research").chat.completions.with_raw_response.create(
        model="both", messages=MESSAGES, n=2
    )
    assert emulated.headers["x-turnout-emulated"] == "n"
    dropped = running.client("sk-ops").chat.completions.with_raw_response.create(
        model="both", messages=MESSAGES, n=2, extra_body={"router": {"translation": "drop"}}
    )
    assert dropped.headers["x-turnout-dropped"] == "n"


def test_config_errors_name_the_team_key_path(tmp_path: Any) -> None:
    from policies.loading import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text(
        "providers: {a: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {deployments: [{provider: a, model: x}]}}\n"
        "teams:\n  t:\n    keys: ['sha256:abc']\n    models: [ghost]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "teams" in str(caught.value)
    assert "sha256" in str(caught.value)


def test_context_window_fallbacks_outside_the_team_are_never_reached(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = team_config(upstream, upstream_b)
    config["models"]["chat-small"]["context_window_fallbacks"] = ["secret", "local"]
    config["models"]["secret"]["deployments"] = [{"provider": "b", "model": "secret-model"}]
    running = turnout(config)
    upstream.set_default(context_length_exceeded())
    reply = running.client("sk-research").chat.completions.with_raw_response.create(
        model="chat-small", messages=MESSAGES
    )
    assert reply.headers["x-turnout-model"] == "local"  # `secret` was skipped, not tried
    assert [r.json["model"] for r in upstream_b.requests] == ["local-model"]


def test_one_key_cannot_belong_to_two_owners_in_any_spelling(tmp_path: Any) -> None:
    from policies.loading import ConfigError, load_config

    hexdigest = hashlib.sha256(b"sk-x").hexdigest()
    path = tmp_path / "dup.yaml"
    path.write_text(
        "providers: {a: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}}\n"
        "models: {m: {deployments: [{provider: a, model: x}]}}\n"
        f"keys: [{{key: 'sha256:{hexdigest.upper()}', admin: true}}]\n"
        "teams:\n"
        "  a: {keys: [sk-x], models: [m]}\n"
        f"  b: {{keys: ['sha256:{hexdigest}']}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "teams.a.keys[0]: the same key is already listed at keys[0]" in message
    assert "teams.b.keys[0]: the same key is already listed at keys[0]" in message
    assert "sk-x" not in message
