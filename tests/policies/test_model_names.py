"""What a client's model name means: exact names, then aliases, then the most specific
`match:` pattern (policies/model_names.py), and the config errors refused at load."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from policies.config import TurnoutConfig
from policies.errors import ApiError
from policies.model_names import ModelNames, Resolved, literal_chars
from policies.plan import Planner
from policies.routing import Router, RouterChoices
from policies.teams import ANONYMOUS, Caller

PROVIDERS = {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9"}}


def config(models: dict[str, dict[str, Any]], **extra: Any) -> TurnoutConfig:
    entries = {
        name: {"deployments": [{"provider": "p", "model": f"{name}-upstream"}], **names}
        for name, names in models.items()
    }
    return TurnoutConfig.model_validate({"providers": PROVIDERS, "models": entries, **extra})


MODELS: dict[str, dict[str, Any]] = {
    "opus": {"aliases": ["claude-opus-latest"], "match": ["claude-*opus*"]},
    "haiku": {"match": ["claude-*haiku*"]},
    "sonnet": {"match": ["claude-*"]},  # everything else Claude-named
    "claude-3-opus": {},  # a configured name that the patterns above also match
}


def test_exact_name_then_alias_then_pattern() -> None:
    names = config(MODELS).model_names
    assert names.resolve("opus") == Resolved("opus", "exact")
    assert names.resolve("claude-3-opus") == Resolved("claude-3-opus", "exact")
    assert names.resolve("claude-opus-latest") == Resolved("opus", "alias")
    assert names.resolve("claude-opus-4-8") == Resolved("opus", "match:claude-*opus*")


def test_an_alias_wins_over_a_pattern_that_also_takes_it() -> None:
    names = config({"a": {"aliases": ["claude-x-haiku"]}, "b": {"match": ["claude-*haiku*"]}})
    assert names.model_names.resolve("claude-x-haiku") == Resolved("a", "alias")


def test_the_most_specific_pattern_wins_whatever_the_config_order() -> None:
    names = config(MODELS).model_names
    assert names.resolve("claude-3-5-haiku-20241022") == Resolved("haiku", "match:claude-*haiku*")
    assert names.resolve("claude-sonnet-4-5") == Resolved("sonnet", "match:claude-*")
    reordered = config(dict(reversed(list(MODELS.items())))).model_names
    assert reordered.resolve("claude-opus-4-8") == Resolved("opus", "match:claude-*opus*")


def test_ties_go_to_the_longer_pattern_then_to_config_order() -> None:
    # Same literal characters (7): `claude-?*` is longer than `claude-*`.
    names = config({"short": {"match": ["claude-*"]}, "long": {"match": ["claude-?*"]}})
    assert names.model_names.resolve("claude-x") == Resolved("long", "match:claude-?*")
    # Same literals and length: the first in config order.
    names = config({"one": {"match": ["claude-[ab]*"]}, "two": {"match": ["claude-[xa]*"]}})
    assert names.model_names.resolve("claude-a1") == Resolved("one", "match:claude-[ab]*")
    swapped = config({"two": {"match": ["claude-[xa]*"]}, "one": {"match": ["claude-[ab]*"]}})
    assert swapped.model_names.resolve("claude-a1") == Resolved("two", "match:claude-[xa]*")


def test_literal_characters_leave_out_wildcards_and_sets() -> None:
    assert literal_chars("claude-*opus*") == 11
    assert literal_chars("gpt-?o") == 5
    assert literal_chars("m[0-9]x") == 2
    assert literal_chars("m[!]]x") == 2  # `]` first in a set is a member
    assert literal_chars("m[x") == 3  # an unclosed `[` is a literal, as fnmatch reads it


def test_patterns_are_case_sensitive_and_whole_name() -> None:
    names = config({"opus": {"match": ["claude-*opus*"]}}).model_names
    assert names.resolve("Claude-Opus-4") is None
    assert names.resolve("x-claude-opus") is None
    assert config({"m": {"match": ["gpt-4o"]}}).model_names.resolve("gpt-4o-mini") is None


def test_unknown_name_is_the_usual_404() -> None:
    names = config(MODELS).model_names
    assert names.resolve("gpt-9") is None
    with pytest.raises(ApiError) as caught:
        names.require("gpt-9")
    assert (caught.value.status, caught.value.code) == (404, "model_not_found")


def test_answers_are_remembered_up_to_a_bound() -> None:
    class Small(ModelNames):
        MAX_CACHED = 2

    names = Small(config(MODELS).models)
    for asked in ("claude-a", "claude-b", "claude-c", "nothing"):
        assert names.resolve(asked) == (
            Resolved("sonnet", "match:claude-*") if asked != "nothing" else None
        )
    assert names.resolve("claude-c") == Resolved("sonnet", "match:claude-*")
    assert len(names._matched) == 2


@pytest.mark.parametrize(
    ("models", "says"),
    [
        (
            {"a": {"aliases": ["b"]}, "b": {}},
            "models.a.aliases[0]: 'b' is the name of model 'b'",
        ),
        (
            {"a": {"aliases": ["x"]}, "b": {"aliases": ["y", "x"]}},
            "models.b.aliases[1]: 'x' is already an alias of 'a'",
        ),
        (
            {"a": {"match": ["claude-*"]}, "b": {"match": ["claude-*"]}},
            "models.b.match[0]: 'claude-*' is already a pattern of 'a'",
        ),
        ({"a": {"aliases": [""]}}, "aliases.0"),
        ({"a": {"match": [""]}}, "match.0"),
    ],
)
def test_clashing_or_empty_names_are_refused_at_load(
    models: dict[str, dict[str, Any]], says: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        config(models)
    assert says in str(caught.value)


def route_config() -> TurnoutConfig:
    rules = [{"name": "opus-to-haiku", "when": {"model": "opus"}, "use": {"model": "haiku"}}]
    teams = {
        "cheap": {"keys": ["sk-cheap"], "models": ["haiku"]},
        "ruled": {"keys": ["sk-ruled"], "rules": rules},
    }
    return config(MODELS, teams=teams)


def team(config: TurnoutConfig, name: str) -> Caller:
    return Caller(f"team:{name}", None, name, False, config.teams[name])


def test_routing_plans_the_configured_model_and_keeps_what_was_asked() -> None:
    cfg = route_config()
    route = Router(cfg, Planner(cfg)).route(ANONYMOUS, {"model": "claude-opus-4-8"}, {})
    assert route.plan.model == "opus"
    assert [t.model_name for t in route.plan.targets] == ["opus"]
    assert (route.asked, route.resolved) == ("claude-opus-4-8", ("opus", "match:claude-*opus*"))


def test_a_teams_list_and_rules_read_the_configured_name() -> None:
    cfg = route_config()
    router = Router(cfg, Planner(cfg))
    body = {"model": "claude-3-5-haiku-latest"}
    assert router.route(team(cfg, "cheap"), body, {}).plan.model == "haiku"
    with pytest.raises(ApiError) as caught:
        router.route(team(cfg, "cheap"), {"model": "claude-opus-latest"}, {})
    assert caught.value.code == "model_not_found"
    assert "claude-opus-latest" in caught.value.message
    ruled = router.route(team(cfg, "ruled"), {"model": "claude-opus-latest"}, {})
    assert (ruled.plan.model, ruled.rule) == ("haiku", "opus-to-haiku")


def test_request_fallbacks_resolve_as_the_model_does() -> None:
    cfg = route_config()
    router = Router(cfg, Planner(cfg))
    choices = RouterChoices(fallbacks=["claude-3-5-haiku", "haiku"])
    route = router.route(ANONYMOUS, {"model": "opus"}, {}, choices)
    assert [t.model_name for t in route.plan.targets] == ["opus", "haiku"]
    with pytest.raises(ApiError) as caught:
        router.route(ANONYMOUS, {"model": "opus"}, {}, RouterChoices(fallbacks=["gpt-9"]))
    assert (caught.value.param, caught.value.code) == ("fallbacks[0]", "model_not_found")
