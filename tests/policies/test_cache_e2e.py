"""The exact-match response cache, end to end: the official openai SDK against a real
Turnout with `cache: {ttl: 60}`, in front of a fake upstream that counts its calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from policies.config import TurnoutConfig
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
CACHE = "x-turnout-cache"


def cached(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    return simple_config({"up": upstream.base_url}, cache={"ttl": 60}, **overrides)


def ask(server: RunningTurnout, content: str = "hi", key: str = "unused", **kwargs: Any) -> Any:
    with server.client(key) as client:
        return client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": content}], **kwargs
        )


def calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def completion_id(raw: Any) -> str:
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    return completion.id


def test_an_identical_request_is_a_hit_and_the_upstream_is_called_once(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(cached(upstream))
    first = ask(server, temperature=0.5)
    assert first.headers[CACHE] == "miss"
    second = ask(server, temperature=0.5)
    assert second.headers[CACHE] == "hit"
    assert completion_id(second) == completion_id(first)  # the very same answer
    assert calls(upstream) == 1

    for different in (
        {"content": "hello"},
        {"temperature": 0.7},
        {"temperature": 0.5, "max_tokens": 9},
    ):
        raw = ask(server, **different)
        assert raw.headers[CACHE] == "miss", different
    assert calls(upstream) == 4


def test_no_store_is_not_stored_and_no_cache_is_not_read(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(cached(upstream))
    not_kept = ask(server, extra_body={"cache": {"no_store": True}})
    assert not_kept.headers[CACHE] == "miss"
    assert ask(server).headers[CACHE] == "miss"  # nothing was stored
    assert ask(server).headers[CACHE] == "hit"
    assert calls(upstream) == 2

    fresh = ask(server, extra_body={"cache": {"no_cache": True}})
    assert fresh.headers[CACHE] == "miss"
    assert calls(upstream) == 3
    # `cache` is Turnout's own: never forwarded.
    assert all("cache" not in r.json for r in upstream.requests if r.json is not None)


def test_streams_are_never_served_from_nor_stored_in_the_cache(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(cached(upstream))
    with server.client() as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert raw.headers[CACHE] == "bypass"
            assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert calls(upstream) == 2
    assert ask(server).headers[CACHE] == "miss"  # the streams stored nothing
    assert ask(server).headers[CACHE] == "hit"
    with server.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        assert raw.headers[CACHE] == "bypass"
        list(raw.parse())
    assert calls(upstream) == 4


def two_teams(share: bool) -> dict[str, Any]:
    return {
        "teams": {"red": {"keys": ["sk-red"]}, "blue": {"keys": ["sk-blue"]}},
        "cache": {"ttl": 60, "share_across_teams": share},
    }


def test_teams_do_not_share_entries(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, **two_teams(share=False)))
    assert ask(server, key="sk-red").headers[CACHE] == "miss"
    assert ask(server, key="sk-blue").headers[CACHE] == "miss"
    assert ask(server, key="sk-red").headers[CACHE] == "hit"
    assert ask(server, key="sk-blue").headers[CACHE] == "hit"
    assert calls(upstream) == 2


def test_share_across_teams_shares_entries(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, **two_teams(share=True)))
    assert ask(server, key="sk-red").headers[CACHE] == "miss"
    assert ask(server, key="sk-blue").headers[CACHE] == "hit"
    assert calls(upstream) == 1


def test_an_entry_expires_after_its_ttl(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(cached(upstream))
    short = {"cache": {"ttl": 0.3}}  # per request, shorter than the config's 60 s
    assert ask(server, extra_body=short).headers[CACHE] == "miss"
    assert ask(server, extra_body=short).headers[CACHE] == "hit"
    time.sleep(0.4)
    assert ask(server, extra_body=short).headers[CACHE] == "miss"
    assert calls(upstream) == 2


def test_a_hit_says_what_the_original_answer_did(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = cached(upstream)
    config["providers"]["up"]["capabilities"] = {"n": False}
    server = turnout(config)
    first = ask(server, n=2)
    assert first.headers["x-turnout-emulated"] == "n"
    hit = ask(server, n=2)
    assert hit.headers[CACHE] == "hit"
    for header in ("x-turnout-emulated", "x-turnout-deployment", "x-turnout-model"):
        assert hit.headers[header] == first.headers[header], header
    assert hit.headers["x-turnout-attempts"] == "0"


def test_a_request_translated_differently_never_gets_the_cached_answer(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = cached(upstream)
    config["providers"]["up"]["capabilities"] = {"n": False}
    server = turnout(config)
    assert ask(server, n=2).headers[CACHE] == "miss"
    with server.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hi"}],
            n=2,
            extra_body={"router": {"translation": "strict"}},
        )
    assert caught.value.param == "n"


def test_keys_outside_teams_do_not_share_entries(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(cached(upstream, keys=[{"key": "sk-one"}, {"key": "sk-two"}]))
    assert ask(server, key="sk-one").headers[CACHE] == "miss"
    assert ask(server, key="sk-one").headers[CACHE] == "hit"
    assert ask(server, key="sk-two").headers[CACHE] == "miss"
    assert calls(upstream) == 2


@pytest.mark.parametrize(
    ("settings", "wait"),
    [({"ttl": 0.2}, 0.3), ({"ttl": 0.1, "ttl_max": 0.2}, 0.3)],
    ids=["default-max-is-ttl", "ttl_max"],
)
def test_a_requested_ttl_is_capped(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, settings: dict[str, float], wait: float
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, cache=settings))
    forever = {"cache": {"ttl": 1e308}}
    assert ask(server, extra_body=forever).headers[CACHE] == "miss"
    time.sleep(wait)  # past the cap: the entry is gone, whatever the client asked for
    assert ask(server, extra_body=forever).headers[CACHE] == "miss"
    assert calls(upstream) == 2


def test_ttl_max_may_not_be_below_ttl() -> None:
    with pytest.raises(ValueError, match="ttl_max"):
        TurnoutConfig.model_validate({"cache": {"ttl": 60, "ttl_max": 10}})
