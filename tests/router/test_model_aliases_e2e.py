"""Model names that change every release, end to end: a chat for an alias or for a name a
`match:` pattern takes reaches the configured model's deployment (the openai SDK); team
lists, metrics and explain read the configured name; `GET /v1/models` answers in
Anthropic's shape to the `anthropic` SDK (which sends `anthropic-version` itself) and in
OpenAI's to everyone else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import anthropic
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ADMIN, TEAM = "sk-admin", "sk-helpers"
HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture
def running(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> RunningTurnout:
    models = {
        "opus": {
            "deployments": [{"provider": "a", "model": "big-model"}],
            "aliases": ["claude-opus-latest"],
            "match": ["claude-*opus*"],
            "display_name": "Opus (local)",
        },
        "haiku": {
            "deployments": [{"provider": "b", "model": "small-model"}],
            "match": ["claude-*haiku*", "claude-*"],
        },
    }
    config = simple_config({"a": upstream.base_url, "b": upstream_b.base_url}, models=models)
    config["keys"] = [{"key": ADMIN, "admin": True}]
    config["teams"] = {"helpers": {"keys": [TEAM], "models": ["haiku"]}}
    config["metrics"] = {"public": True}
    return turnout(config)


def test_an_alias_and_a_matched_name_reach_the_configured_model(
    running: RunningTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    client = running.client(ADMIN)
    for asked, deployment, configured in [
        ("claude-opus-latest", "a/big-model", "opus"),
        ("claude-opus-4-8", "a/big-model", "opus"),
        ("claude-haiku-4-5-20251001", "b/small-model", "haiku"),
        ("claude-sonnet-9", "b/small-model", "haiku"),  # the catch-all pattern
    ]:
        reply = client.chat.completions.with_raw_response.create(model=asked, messages=HI)
        assert reply.headers["x-turnout-deployment"] == deployment
        assert reply.headers["x-turnout-model"] == configured
    assert [r.json["model"] for r in upstream.requests] == ["big-model", "big-model"]
    assert [r.json["model"] for r in upstream_b.requests] == ["small-model", "small-model"]
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=HI)
    assert caught.value.code == "model_not_found"


def test_team_lists_and_metrics_read_the_configured_name(running: RunningTurnout) -> None:
    team = running.client(TEAM)
    reply = team.chat.completions.with_raw_response.create(model="claude-haiku-5", messages=HI)
    assert reply.headers["x-turnout-deployment"] == "b/small-model"
    for outside in ("claude-opus-4-8", "claude-opus-latest", "opus"):
        with pytest.raises(openai.NotFoundError):
            team.chat.completions.create(model=outside, messages=HI)
    text = running.http().get("/metrics").text
    labels = [
        sample.labels["model"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "turnout_requests_total" and sample.labels.get("status") == "200"
    ]
    assert labels == ["haiku"]  # not the name asked for


def test_explain_says_which_entry_matched_and_how(running: RunningTurnout) -> None:
    client = running.client(ADMIN)
    for asked, configured, how in [
        ("claude-opus-4-8", "opus", "match:claude-*opus*"),
        ("claude-opus-latest", "opus", "alias"),
        ("haiku", "haiku", "exact"),
    ]:
        request = {"model": asked, "messages": HI}
        answer = client.post(
            "/router/explain", body={"endpoint": "chat", "request": request}, cast_to=object
        )
        assert isinstance(answer, dict)
        assert answer["model"] == configured
        match = {"asked": asked, "configured": configured, "matched_by": how}
        assert answer["model_match"] == match


def anthropic_client(running: RunningTurnout, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, auth_token=key, max_retries=0, timeout=20)


def test_anthropic_sdk_lists_and_retrieves_models(running: RunningTurnout) -> None:
    client = anthropic_client(running, ADMIN)
    page = client.models.list()
    assert [m.id for m in page.data] == ["opus", "haiku"]
    assert (page.has_more, page.first_id, page.last_id) == (False, "opus", "haiku")
    first = page.data[0]
    assert (first.type, first.display_name, first.lifecycle) == ("model", "Opus (local)", "active")
    assert isinstance(first.created_at, datetime)
    assert first.created_at.tzinfo is not None
    # One model a page: the SDK's auto-pagination walks them all by `after_id`.
    assert [m.id for m in client.models.list(limit=1)] == ["opus", "haiku"]
    # By any name a request may use, answered under the id asked for.
    found = client.models.retrieve("claude-opus-4-8")
    assert (found.id, found.display_name) == ("claude-opus-4-8", "Opus (local)")
    assert anthropic_client(running, TEAM).models.retrieve("claude-haiku-4").id == "claude-haiku-4"
    assert [m.id for m in anthropic_client(running, TEAM).models.list()] == ["haiku"]


def test_anthropic_sdk_errors_in_anthropics_envelope(running: RunningTurnout) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        anthropic_client(running, ADMIN).models.retrieve("gpt-9")
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "The model `gpt-9` does not exist or you do not have access to it.",
        },
    }
    with pytest.raises(anthropic.NotFoundError):  # outside the team's list: not there at all
        anthropic_client(running, TEAM).models.retrieve("claude-opus-4-8")
    with pytest.raises(anthropic.AuthenticationError) as denied:
        anthropic_client(running, "sk-nobody").models.list()
    assert isinstance(denied.value.body, dict)
    assert denied.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(running, ADMIN).models.list(limit=0)


def test_without_anthropic_version_the_shape_is_openais(running: RunningTurnout) -> None:
    client = running.client(ADMIN)
    listed = client.models.list()
    assert [(m.id, m.object) for m in listed.data] == [("opus", "model"), ("haiku", "model")]
    assert client.models.retrieve("claude-opus-latest").id == "claude-opus-latest"
    raw = running.http(headers={"authorization": f"Bearer {ADMIN}"}).get("/v1/models").json()
    assert set(raw) == {"object", "data"}
    assert set(raw["data"][0]) == {"id", "object", "created", "owned_by"}
