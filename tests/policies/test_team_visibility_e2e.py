"""A team sees only its own models and deployments, in errors and headers too; and a team
denied routing options is denied every spelling of them (`router.*` and the top-level
`fallbacks`). Through a real Turnout, with the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from router.routing_options import ROUTING_FIELDS
from router.schemas.common import router_only_fields
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
TEAM, LOCKED, ADMIN = "sk-team-x", "sk-team-locked", "sk-admin-v"
HIDDEN = ("ok-y", "`y`")  # the deployment and the model team `x` may not see


def visibility_config(up: FakeOpenAIUpstream) -> dict[str, Any]:
    """`xfail` falls back to `y`, which team `x` may not use; team `locked` may not choose
    routing per request."""
    models = {
        "xfail": {"deployments": [{"provider": "fake", "model": "fail-x"}], "fallbacks": ["y"]},
        "y": {"deployments": [{"provider": "fake", "model": "ok-y"}]},
    }
    teams = {
        "x": {"keys": [TEAM], "models": ["xfail"]},
        "locked": {"keys": [LOCKED], "models": ["xfail", "y"], "allow_router_options": False},
    }
    return simple_config(
        {"fake": up.base_url},
        models,
        teams=teams,
        keys=[{"key": ADMIN, "admin": True}],
        retry={"attempts": 1},
    )


@pytest.fixture
def server(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> RunningTurnout:
    return turnout(visibility_config(upstream))


def post(server: RunningTurnout, key: str, body: dict[str, Any]) -> httpx.Response:
    with server.http(headers={"authorization": f"Bearer {key}"}) as http:
        return http.post("/v1/chat/completions", json={"messages": MESSAGES, **body})


def assert_hidden(response: httpx.Response) -> None:
    shown = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    for name in HIDDEN:
        assert name not in shown, shown


def test_a_no_deployment_error_names_only_the_teams_deployments(server: RunningTurnout) -> None:
    reply = post(server, TEAM, {"model": "xfail", "router": {"only": ["nonexistent"]}})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("no_deployment", "router")
    assert "fake/fail-x: not in router.only" in error["message"]
    assert_hidden(reply)


def test_a_failed_request_names_only_the_teams_deployments(
    server: RunningTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(500))
    reply = post(server, TEAM, {"model": "xfail"})
    assert reply.status_code == 500
    assert reply.headers["x-turnout-deployment"] == "fake/fail-x"
    assert_hidden(reply)
    assert [r.json["model"] for r in upstream.requests] == ["fail-x"]


def test_an_admin_explaining_for_the_team_still_sees_why(server: RunningTurnout) -> None:
    with server.client(ADMIN) as client:
        answer = client.post(
            "/router/explain",
            cast_to=object,
            body={"team": "x", "request": {"model": "xfail", "messages": MESSAGES}},
        )
    assert isinstance(answer, dict)
    reasons = {d["deployment"]: d["reason"] for d in answer["deployments"]}
    assert reasons["fake/ok-y"] == "excluded: model not in the team's list"


@pytest.mark.parametrize(
    "choice",
    [
        {"fallbacks": ["y"]},
        {"router": {"fallbacks": ["y"]}},
        {"router": {"only": ["fake"]}},
        {"router": {"ignore": ["fake/ok-y"]}},
        {"router": {"strategy": "priority"}},
    ],
    ids=["top-level-fallbacks", "router.fallbacks", "only", "ignore", "strategy"],
)
def test_a_team_denied_routing_options_is_denied_every_spelling(
    server: RunningTurnout, upstream: FakeOpenAIUpstream, choice: dict[str, Any]
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as denied:
        server.client(LOCKED).chat.completions.create(
            model="xfail", messages=MESSAGES, extra_body=choice
        )
    assert denied.value.code == "router_options_not_allowed"
    assert denied.value.param == "router"
    assert upstream.requests == []
    # Without the options the same request is routed (and reaches the upstream).
    server.client(LOCKED).chat.completions.create(model="xfail", messages=MESSAGES)


def test_every_field_turnout_consumes_is_classified() -> None:
    """A new Turnout-own body field that chooses routing must be gathered by
    router/routing_options.py (and so checked); `cache` is the one that chooses none."""
    assert router_only_fields() - {"cache"} == ROUTING_FIELDS
