"""`POST /v1/router/explain` and `turnout explain`, end to end: the plan for a request —
team, rule, each deployment eligible or excluded and why, what would be emulated — with
no backend called. The endpoint through the official openai SDK's generic `post`."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ROOT = Path(__file__).resolve().parents[2]
ADMIN = "sk-admin"
RESEARCH = "sk-research"
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
]
REQUEST: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "n": 2,
    "tools": TOOLS,
}


def explained_config(up: FakeOpenAIUpstream, spare: FakeOpenAIUpstream) -> dict[str, Any]:
    """Model `m` on four deployments, each to be judged differently, and a fallback model
    outside team `research`'s list."""
    models = {
        "m": {
            "deployments": [
                {"provider": "up", "model": "a"},
                {"provider": "up", "model": "b", "capabilities": {"n": False}},
                {"provider": "up", "model": "c", "capabilities": {"tools": False}},
                {"provider": "spare", "model": "d"},
            ],
            "fallbacks": ["other"],
        },
        "other": {"deployments": [{"provider": "spare", "model": "e"}]},
    }
    teams = {
        "research": {
            "keys": [RESEARCH],
            "models": ["m"],
            "limits": {"rpm": 5},
            "key_limits": {"rpm": 3},
            "rules": [{"name": "only-up", "when": {"model": "m"}, "use": {"deployments": ["up"]}}],
        }
    }
    return simple_config(
        {"up": up.base_url, "spare": spare.base_url},
        models,
        keys=[{"key": ADMIN, "admin": True}],
        teams=teams,
        breaker={"failures": 1, "cooldown": 30},
        retry={"attempts": 1},
    )


def explain(server: RunningTurnout, query: dict[str, Any], key: str = ADMIN) -> dict[str, Any]:
    with server.client(key) as client:
        answer = client.post("/router/explain", cast_to=object, body=query)
    assert isinstance(answer, dict)
    return answer


def by_label(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["deployment"]: d for d in answer["deployments"]}


def requests_seen(*upstreams: FakeOpenAIUpstream) -> int:
    return sum(len(u.requests) for u in upstreams)


def test_the_plan_says_why_each_deployment_is_eligible_or_not_and_calls_nothing(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(explained_config(upstream, upstream_b), ManualClock())
    upstream.enqueue(Status(503))
    with server.client(RESEARCH) as client:  # a real request: `up/a` fails, its breaker opens
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=REQUEST["messages"]
        )
    assert raw.headers["x-turnout-deployment"] == "up/b"
    seen = requests_seen(upstream, upstream_b)

    answer = explain(server, {"team": "research", "request": REQUEST})

    assert requests_seen(upstream, upstream_b) == seen  # no backend was called
    assert answer["caller"]["team"] == "research"
    assert answer["rule"] == "only-up"
    assert answer["model"] == "m"
    assert [d["deployment"] for d in answer["deployments"]] == [
        "up/a",
        "up/b",
        "up/c",
        "spare/d",  # the excluded follow, in plan order
        "spare/e",
    ]
    plan = by_label(answer)
    assert plan["up/a"] | {"reason": plan["up/a"]["reason"]} == {
        "deployment": "up/a",
        "via_model": "m",
        "breaker": "open",
        "eligible": False,
        "reason": "breaker open",
    }
    assert plan["up/b"]["eligible"] is True
    assert plan["up/b"]["breaker"] == "closed"
    assert plan["up/b"]["emulated"] == ["n"]
    assert plan["up/c"]["eligible"] is False
    assert plan["up/c"]["reason"].startswith("missing capability: `tools`")
    assert plan["spare/e"] == {
        "deployment": "spare/e",
        "eligible": False,
        "reason": "excluded: model not in the team's list",
    }
    assert plan["spare/d"]["reason"] == "excluded: not in only-up"
    assert answer["would_serve"] == "up/b"
    # The team's rpm: one of 5 used by the real request above; explaining took none.
    assert answer["limits"] == [
        {
            "limit": "rpm:key",  # a key of the team's, as a fresh one stands
            "kind": "rate",
            "capacity": 3,
            "remaining": 3,
            "reset_s": 0.0,
            "over": False,
        },
        {
            "limit": "rpm:team:research",
            "kind": "rate",
            "capacity": 5,
            "remaining": 4,
            "reset_s": 12.0,
            "over": False,
        },
    ]
    assert explain(server, {"team": "research", "request": REQUEST})["limits"] == answer["limits"]


def test_explaining_as_a_key_routes_as_that_key_would(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(explained_config(upstream, upstream_b), ManualClock())
    plain = {"model": "m", "messages": REQUEST["messages"]}

    as_key = explain(server, {"key": RESEARCH, "request": plain})
    assert as_key["rule"] == "only-up"
    assert as_key["would_serve"] == "up/a"
    assert [(x["limit"], x["remaining"]) for x in as_key["limits"]] == [
        ("rpm:key", 3),
        ("rpm:team:research", 5),
    ]

    as_admin = explain(server, {"request": plain})  # no team: no rule, nothing excluded
    assert as_admin["caller"]["admin"] is True
    assert as_admin["rule"] is None
    assert all(d["eligible"] for d in as_admin["deployments"])
    assert len(as_admin["deployments"]) == 5
    assert requests_seen(upstream, upstream_b) == 0


def test_only_admin_keys_may_explain(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(explained_config(upstream, upstream_b))
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        explain(server, {"request": REQUEST}, key=RESEARCH)
    assert forbidden.value.status_code == 403
    with pytest.raises(openai.AuthenticationError):
        explain(server, {"request": REQUEST}, key="sk-unknown")
    with server.http() as http:
        response = http.post("/v1/router/explain", json={"request": REQUEST})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert requests_seen(upstream, upstream_b) == 0


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router", "explain", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_the_cli_prints_the_same_plan(
    tmp_path: Path,
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
) -> None:
    config = explained_config(upstream, upstream_b)
    config_file = tmp_path / "turnout.yaml"
    config_file.write_text(yaml.safe_dump(config))
    request_file = tmp_path / "request.json"
    request_file.write_text(httpx.Request("POST", "/", json=REQUEST).content.decode())

    done = run_cli("--config", config_file, request_file, "--team", "research")
    assert done.returncode == 0, done.stderr
    printed = yaml.safe_load(done.stdout)

    server = turnout(config)
    over_http = explain(server, {"team": "research", "request": REQUEST})
    assert printed["deployments"] == over_http["deployments"]
    assert {k: v for k, v in printed.items() if k != "caller"} == {
        k: v for k, v in over_http.items() if k != "caller"
    }
    assert printed["rule"] == "only-up"
    assert printed["would_serve"] == "up/a"  # a fresh process: no breaker is open
    assert requests_seen(upstream, upstream_b) == 0


def test_the_cli_rejects_a_bad_config_naming_the_file_and_key(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config = simple_config({"up": "http://127.0.0.1:9/v1"}, teams={"t": {"limits": {"rpm": 0}}})
    config_file.write_text(yaml.safe_dump(config))
    request_file = tmp_path / "request.json"
    request_file.write_text('{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')

    done = run_cli("--config", config_file, request_file)
    assert done.returncode == 1
    assert str(config_file) in done.stderr
    assert "teams.t.limits.rpm" in done.stderr
    assert done.stdout == ""


def test_explain_sees_the_emulations_a_deployment_declares(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """`suffix` on a backend without it is emulated through the deployment's FIM template:
    explain must judge with what the deployment declares, as dispatch does."""
    deployment = {"provider": "up", "model": "coder", "capabilities": {"suffix": False}}
    models = {"code": {"deployments": [{**deployment, "fim": "starcoder"}]}}
    config = simple_config({"up": upstream.base_url}, models, keys=[{"key": ADMIN, "admin": True}])
    server = turnout(config)
    request: dict[str, Any] = {
        "model": "code",
        "prompt": "def add(a, b):",
        "suffix": "return c",
        "max_tokens": 8,
    }

    answer = explain(server, {"endpoint": "completions", "request": request})
    (only,) = answer["deployments"]
    assert only["eligible"] is True, only["reason"]
    assert only["emulated"] == ["suffix"]
    with server.client(ADMIN) as client:
        raw = client.completions.with_raw_response.create(**request)
    assert raw.headers["x-turnout-emulated"] == "suffix"  # what explain said


def test_explain_says_which_limit_is_over_and_takes_nothing_from_it(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(explained_config(upstream, upstream_b), ManualClock())
    plain = {"model": "m", "messages": REQUEST["messages"]}
    with server.client(RESEARCH) as client:
        for _ in range(3):  # the key's whole minute
            client.chat.completions.create(**plain)
    seen = requests_seen(upstream, upstream_b)

    for _ in range(2):
        answer = explain(server, {"key": RESEARCH, "request": plain})
        assert [(x["limit"], x["remaining"], x["over"]) for x in answer["limits"]] == [
            ("rpm:key", 0, True),
            ("rpm:team:research", 2, False),
        ]
    assert requests_seen(upstream, upstream_b) == seen


def test_a_responses_request_is_explained_as_the_chat_it_runs(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """`"endpoint": "responses"`: the plan of the chat request the Responses door runs: a
    deployment without tools is excluded for the request's function tool."""
    server = turnout(explained_config(upstream, upstream_b))
    request = {
        "model": "m",
        "input": "hi",
        "tools": [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}],
    }

    answer = explain(server, {"endpoint": "responses", "request": request})

    deployments = by_label(answer)
    assert deployments["up/a"]["eligible"] is True
    assert deployments["up/c"]["eligible"] is False
    assert requests_seen(upstream, upstream_b) == 0
    with pytest.raises(openai.BadRequestError) as refused:
        explain(server, {"endpoint": "responses", "request": {"model": "m", "input": 3}})
    assert refused.value.response.json()["error"]["param"] == "input"


def test_a_built_in_tool_is_explained_only_where_a_deployment_is_native(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    models = {
        "chat-only": {"deployments": [{"provider": "up", "model": "a"}]},
        "native": {
            "deployments": [
                {"provider": "up", "model": "n", "capabilities": {"responses": True}},
                {"provider": "up", "model": "a"},
            ]
        },
    }
    server = turnout(
        simple_config({"up": upstream.base_url}, models, keys=[{"key": ADMIN, "admin": True}])
    )
    request = {"input": "news?", "tools": [{"type": "web_search"}]}

    with pytest.raises(openai.BadRequestError) as refused:
        explain(server, {"endpoint": "responses", "request": {"model": "chat-only", **request}})
    assert refused.value.response.json()["error"]["param"] == "tools[0].type"
    answer = explain(server, {"endpoint": "responses", "request": {"model": "native", **request}})
    assert [d["deployment"] for d in answer["deployments"]][:1] == ["up/n"]
    assert requests_seen(upstream) == 0
