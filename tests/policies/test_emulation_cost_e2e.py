"""Emulations that make several upstream calls (`n` and `best_of` on a backend without
them) are bounded and paid for in full: at most `emulation.max_parallel` calls at once,
admission charges every call (prompt included each time) before the first starts, and
limits settle on the usage summed over the calls. The official openai SDK against a real
Turnout in front of fake upstreams that lack native `n`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from policies.config import TurnoutConfig
from policies.rules import estimate_prompt_tokens
from policies.token_estimate import estimate_tokens
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
KEY = "sk-emulation-test"
# The fake answers "echo: hello world": 2 prompt words and 3 completion words per call.
PROMPT, COMPLETION = 2, 3


def without_n(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    config = simple_config({"a": upstream.base_url}, **overrides)
    config["providers"]["a"]["capabilities"] = {"n": False, "best_of": False}
    return config


def limited(tpm: int) -> list[dict[str, Any]]:
    return [{"key": KEY, "limits": {"tpm": tpm}}]


def posts(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.method == "POST" for r in upstream.requests)


@pytest.mark.parametrize(("max_parallel", "stream"), [(None, False), (2, False), (3, True)])
def test_fanned_out_calls_run_at_most_max_parallel_at_once(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    max_parallel: int | None,
    stream: bool,
) -> None:
    upstream.set_default(Ok(delay=0.05))
    overrides = {} if max_parallel is None else {"emulation": {"max_parallel": max_parallel}}
    server = turnout(without_n(upstream, **overrides))
    with server.client() as client:
        if stream:
            streamed = client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES, n=8, stream=True
            )
            indices = {c.index for chunk in streamed.parse() for c in chunk.choices}
            headers = streamed.headers
        else:
            whole = client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES, n=8
            )
            indices = {c.index for c in whole.parse().choices}
            headers = whole.headers
    assert headers["x-turnout-emulated"] == "n"
    assert indices == set(range(8))
    assert posts(upstream) == 8
    assert 1 <= upstream.max_in_flight <= (max_parallel or 4)


def test_admission_charges_every_fanned_out_call_before_any_starts(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    body = {"messages": MESSAGES, "max_tokens": 10, "n": 8}
    prompt = estimate_prompt_tokens(body)
    native = estimate_tokens(body)  # the prompt read once, 8 completions
    fanned = 8 * (prompt + 10)  # 8 calls, each reading the prompt
    tpm = (native + fanned) // 2
    assert native < tpm < fanned
    server = turnout(without_n(upstream, keys=limited(tpm)), ManualClock())

    with server.client(KEY) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, n=8)
    assert caught.value.code == "rate_limit_exceeded"
    assert posts(upstream) == 0  # refused before any call
    with server.client(KEY) as client:
        one = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10)
    assert one.choices[0].message.content == "echo: hello world"


@pytest.mark.parametrize("stream", [False, True])
def test_limits_settle_on_the_usage_summed_over_every_call(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, stream: bool
) -> None:
    server = turnout(without_n(upstream, keys=limited(1000)), ManualClock())
    with server.client(KEY) as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    n=4,
                    max_tokens=10,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            usage = chunks[-1].usage
        else:
            usage = client.chat.completions.create(
                model="m", messages=MESSAGES, n=4, max_tokens=10
            ).usage
        following = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=10
        )
    billed = 4 * (PROMPT + COMPLETION)  # each call read the prompt
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (4 * PROMPT, 4 * COMPLETION)
    assert usage.total_tokens == billed
    reserved = estimate_tokens({"messages": MESSAGES, "max_tokens": 10})
    remaining = following.headers["x-ratelimit-remaining-tokens"]
    assert int(remaining) == 1000 - billed - reserved


def test_best_of_is_charged_and_settled_for_every_candidate(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    body = {"prompt": "hello world", "max_tokens": 10, "best_of": 4}
    prompt = estimate_prompt_tokens(body)
    native, fanned = estimate_tokens(body), 4 * (prompt + 10)
    tpm = (native + fanned) // 2
    assert native < tpm < fanned
    refusing = turnout(without_n(upstream, keys=limited(tpm)), ManualClock())
    with refusing.client(KEY) as client, pytest.raises(openai.RateLimitError):
        client.completions.create(model="m", prompt="hello world", max_tokens=10, best_of=4)
    assert posts(upstream) == 0

    upstream.set_default(Ok(delay=0.05))
    config = without_n(upstream, keys=limited(1000), emulation={"max_parallel": 2})
    server = turnout(config, ManualClock())
    with server.client(KEY) as client:
        reply = client.completions.with_raw_response.create(
            model="m", prompt="hello world", max_tokens=10, best_of=4
        )
        following = client.completions.with_raw_response.create(
            model="m", prompt="hello world", max_tokens=10
        )
    assert reply.headers["x-turnout-emulated"] == "best_of"  # candidates fanned out
    assert posts(upstream) == 5  # 4 candidates, then the following request
    assert upstream.max_in_flight <= 2
    usage = reply.parse().usage
    assert usage is not None
    assert usage.total_tokens == 4 * (PROMPT + COMPLETION)
    reserved = estimate_tokens({"prompt": "hello world", "max_tokens": 10})
    remaining = int(following.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 1000 - usage.total_tokens - reserved


def test_a_batch_through_chat_with_n_fanned_out_is_bounded_and_charged_per_call(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(delay=0.05))
    config = without_n(upstream, keys=limited(1000), emulation={"max_parallel": 2})
    config["providers"]["a"]["capabilities"]["completions"] = False  # chat only
    server = turnout(config, ManualClock())
    prompts = ["hello world", "hello world", "hello world"]
    with server.client(KEY) as client:
        reply = client.completions.with_raw_response.create(
            model="m", prompt=prompts, n=2, max_tokens=10
        )
    assert set(reply.headers["x-turnout-emulated"].split(", ")) == {"n", "completions"}
    assert sorted(c.index for c in reply.parse().choices) == list(range(6))
    assert posts(upstream) == 6  # one chat per prompt, each fanned out twice
    assert upstream.max_in_flight <= 2
    body = {"prompt": prompts, "n": 2, "max_tokens": 10}
    reserved = 2 * estimate_prompt_tokens(body) + 3 * 2 * 10  # each prompt read twice
    assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 1000 - reserved


def two_deployments(native: FakeOpenAIUpstream, fanned: FakeOpenAIUpstream, tpm: int) -> Any:
    config = simple_config(
        {"native": native.base_url, "fanned": fanned.base_url}, keys=limited(tpm)
    )
    config["providers"]["fanned"]["capabilities"] = {"n": False}
    return config


@pytest.mark.parametrize("room", [False, True])
def test_a_fallback_that_fans_out_reserves_the_difference_first(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    room: bool,
) -> None:
    body = {"messages": MESSAGES, "max_tokens": 10, "n": 8}
    native = estimate_tokens(body)
    fanned = 8 * (estimate_prompt_tokens(body) + 10)
    tpm = fanned + 5 if room else (native + fanned) // 2
    upstream.set_default(Status(401))  # the native deployment fails: on to the fallback
    server = turnout(two_deployments(upstream, upstream_b, tpm), ManualClock())
    with server.client(KEY) as client:
        if not room:
            with pytest.raises(openai.RateLimitError):
                client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, n=8)
            assert posts(upstream) == 1
            assert posts(upstream_b) == 0  # refused before any of its calls
            return
        reply = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=10, n=8
        )
    assert reply.headers["x-turnout-deployment"] == "fanned/fanned-model"
    assert reply.headers["x-turnout-emulated"] == "n"
    assert posts(upstream_b) == 8


def test_max_parallel_is_validated() -> None:
    with pytest.raises(ValidationError, match="max_parallel"):
        TurnoutConfig.model_validate({"emulation": {"max_parallel": 0}})
    assert TurnoutConfig.model_validate({}).emulation.max_parallel == 4
