"""Capability-aware routing through a real Turnout: deployments that cannot honour a request
are skipped before any call; n, stop and streaming are emulated; strict and drop modes;
the x-turnout-emulated / -dropped / -clamped headers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "alpha beta gamma delta"}]


def single(upstream: FakeOpenAIUpstream, **capabilities: Any) -> dict[str, Any]:
    config = simple_config({"a": upstream.base_url})
    config["providers"]["a"]["capabilities"] = capabilities
    return config


def test_a_deployment_that_cannot_honour_the_request_is_skipped_uncalled(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = simple_config({"a": upstream.base_url, "b": upstream_b.base_url})
    config["models"]["m"]["deployments"][0]["capabilities"] = {"seed": False}
    reply = (
        turnout(config)
        .client()
        .chat.completions.with_raw_response.create(model="m", messages=MESSAGES, seed=5)
    )
    assert reply.headers["x-turnout-deployment"] == "b/b-model"
    assert upstream.requests == []
    assert upstream_b.requests[0].json["seed"] == 5


def test_n_is_emulated_with_one_call_per_candidate(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, n=False)).client()
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, n=3, seed=10
    )
    assert reply.headers["x-turnout-emulated"] == "n"
    assert [c.index for c in reply.parse().choices] == [0, 1, 2]
    sent = [r.json for r in upstream.requests]  # concurrent calls: any arrival order
    assert sorted((body["n"], body["seed"]) for body in sent) == [(1, 10), (1, 11), (1, 12)]


def test_stop_is_emulated_across_chunks_streamed_and_not(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, stop=False)).client()
    whole = client.chat.completions.create(model="m", messages=MESSAGES, stop=["ta gam"])
    pieces = [
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="m", messages=MESSAGES, stop=["ta gam"], stream=True
        )
        if chunk.choices
    ]
    assert whole.choices[0].message.content == "echo: alpha be"
    assert "".join(pieces) == "echo: alpha be"
    assert whole.choices[0].finish_reason == "stop"
    assert all("stop" not in r.json for r in upstream.requests)


def test_streaming_is_emulated_for_a_backend_that_cannot_stream(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, stream=False)).client()
    chunks = list(
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: alpha beta gamma delta"
    assert chunks[-1].usage is not None
    assert "stream" not in upstream.requests[0].json


def test_strict_mode_refuses_with_the_option_named(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, n=False)).client()
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="m", messages=MESSAGES, n=2, extra_body={"router": {"translation": "strict"}}
        )
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == ("n", "unsupported_parameter")
    assert upstream.requests == []


def test_a_models_configured_mode_applies(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = single(upstream, n=False)
    config["models"]["m"]["translation"] = "strict"
    with pytest.raises(openai.BadRequestError):
        turnout(config).client().chat.completions.create(model="m", messages=MESSAGES, n=2)


def test_drop_mode_drops_and_says_so(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    client = turnout(single(upstream, seed=False)).client()
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, seed=3, extra_body={"router": {"translation": "drop"}}
    )
    assert reply.headers["x-turnout-dropped"] == "seed"
    assert "seed" not in upstream.requests[0].json
    assert "router" not in upstream.requests[0].json


def test_out_of_range_temperature_is_clamped_and_reported(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok())
    client = turnout(single(upstream, temperature=1)).client()
    reply = client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, temperature=1.6
    )
    assert reply.headers["x-turnout-clamped"] == "temperature"
    assert upstream.requests[0].json["temperature"] == 1.0
    assert "x-turnout-emulated" not in reply.headers
    assert "x-turnout-dropped" not in reply.headers


def test_unknown_capability_keys_are_a_config_error(upstream: FakeOpenAIUpstream) -> None:
    from pydantic import ValidationError

    from policies.config import TurnoutConfig

    with pytest.raises(ValidationError, match="unknown capabilities nn"):
        TurnoutConfig.model_validate(single(upstream, nn=False))


def _scored(texts_and_logprobs: list[tuple[str, list[float]]]) -> bytes:
    choices = [
        {
            "index": i,
            "text": text,
            "finish_reason": "stop",
            "logprobs": {
                "tokens": [f"t{j}" for j in range(len(logprobs))],
                "token_logprobs": logprobs,
                "top_logprobs": [{} for _ in logprobs],
                "text_offset": list(range(len(logprobs))),
            },
        }
        for i, (text, logprobs) in enumerate(texts_and_logprobs)
    ]
    body = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "a-model",
        "choices": choices,
        "usage": {"prompt_tokens": 2, "completion_tokens": 7, "total_tokens": 9},
    }
    return json.dumps(body).encode()


def test_best_of_is_emulated_by_ranking_candidates_by_mean_logprob(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    # By sum "bad" (-3.0) would beat "long" (-3.6); by mean "short" (-0.5) wins.
    upstream.enqueue(
        Status(200, body=_scored([("long", [-0.9, -0.9, -0.9, -0.9]), ("short", [-0.5, -0.5]),
                                  ("bad", [-3.0])]))
    )  # fmt: skip
    client = turnout(single(upstream, best_of=False)).client()
    reply = client.completions.with_raw_response.create(model="m", prompt="x", best_of=3)
    completion = reply.parse()
    assert reply.headers["x-turnout-emulated"] == "best_of"
    assert [(c.index, c.text) for c in completion.choices] == [(0, "short")]
    assert completion.choices[0].logprobs is None  # the caller did not ask for them
    sent = upstream.requests[0].json
    assert (sent["n"], sent["logprobs"], "best_of" in sent) == (3, 0, False)


def test_echo_is_emulated_for_a_backend_without_it(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, echo=False)).client()
    reply = client.completions.with_raw_response.create(model="m", prompt="say hi", echo=True)
    assert reply.headers["x-turnout-emulated"] == "echo"
    assert reply.parse().choices[0].text == "say hi" + "echo: say hi"
    assert "echo" not in upstream.requests[0].json
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="m", prompt="say hi", echo=True, logprobs=1)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["param"] == "echo"


def test_n_streamed_through_fan_out_gives_each_index_one_finish(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    client = turnout(single(upstream, n=False)).client()
    finishes: dict[int, list[str]] = {}
    texts: dict[int, str] = {}
    for chunk in client.chat.completions.create(model="m", messages=MESSAGES, n=3, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert finishes == {0: ["stop"], 1: ["stop"], 2: ["stop"]}
    assert set(texts.values()) == {"echo: alpha beta gamma delta"}
