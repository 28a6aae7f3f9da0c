"""Every upstream call one request makes is paid for, however the request ends: a client
gone mid fan-out, one call of a fan-out failing, best_of ranking failing, a hedge that
lost. Limits settle on the usage the upstreams reported for the calls that finished, plus
the reserved estimate for each call cancelled once sent. A request's calls in flight are
bounded across all its attempts (hedges included), and a request that would make more
calls than `emulation.max_calls` is refused before any. The official openai SDK (a raw
socket where a client must vanish) against a real Turnout in front of fake upstreams."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from pydantic import ValidationError

from policies.config import TurnoutConfig
from policies.token_estimate import estimate_tokens
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import ManualClock
from tests.router.test_metrics import scrape
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
KEY = "sk-call-charges"
TPM = 100_000
# The fake answers "echo: hello world": 2 prompt words and 3 completion words per call.
BILLED = 2 + 3
# What one call of n=1 with max_tokens 10 reserves: what a call cut mid-flight costs.
ONE_CALL = estimate_tokens({"messages": MESSAGES, "max_tokens": 10})


def without_n(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    config = simple_config(
        {"a": upstream.base_url},
        keys=[{"key": KEY, "limits": {"tpm": TPM}}],
        metrics={"public": True},
        **overrides,
    )
    config["providers"]["a"]["capabilities"] = {"n": False, "best_of": False}
    return config


def posts(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.method == "POST" for r in upstream.requests)


def charged(server: RunningTurnout) -> int:
    """The tokens charged so far (the clock stands still: nothing refills), read from the
    headers of one more request, which reserves ONE_CALL."""
    with server.client(KEY) as client:
        probe = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=10
        )
    return TPM - ONE_CALL - int(probe.headers["x-ratelimit-remaining-tokens"])


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def closed_by_client(server: RunningTurnout) -> float:
    """Requests logged as 499 (their limits are settled just before)."""
    return sum(
        count
        for (name, labels), count in scrape(server).items()
        if name == "turnout_requests_total" and ("status", "499") in labels
    )


def post_and_vanish(server: RunningTurnout, body: dict[str, Any], sent: Callable[[], bool]) -> None:
    """POST `body` on a raw socket and close it once `sent()` says the upstream calls of
    interest were made, as a client that gives up does."""
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(head.encode() + data)
        wait_until(sent, "the upstream calls were not made")
    wait_until(lambda: closed_by_client(server) == 1, "the request was not logged as 499")


@pytest.mark.parametrize(("n", "finished"), [(4, 2), (1, 0)])
def test_a_client_gone_mid_fan_out_is_charged_for_the_calls_made(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, n: int, finished: int
) -> None:
    """Two calls at a time: the first `finished` answer, the rest hang until the client
    goes. (n=1: a plain call, cut mid-flight.)"""
    upstream.enqueue(*[Ok()] * finished, *[Ok(delay=30)] * (n - finished))
    server = turnout(without_n(upstream, emulation={"max_parallel": 2}), ManualClock())
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 10, "n": n}
    post_and_vanish(server, body, lambda: posts(upstream) == n)
    assert charged(server) == finished * BILLED + (n - finished) * ONE_CALL


def test_a_fan_out_that_fails_is_charged_for_the_calls_that_answered(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(), Ok(), Ok(), Status(400, message="no"))  # one call at a time
    server = turnout(without_n(upstream, emulation={"max_parallel": 1}), ManualClock())
    with server.client(KEY) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, n=4)
    assert posts(upstream) == 4
    assert charged(server) == 3 * BILLED  # the refused call costs nothing


def test_best_of_whose_ranking_fails_is_charged_for_every_candidate(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Candidates without logprobs cannot be ranked: a 502, after the calls were billed."""
    unranked = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "a-model",
        "choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
    }
    upstream.set_default(Status(200, body=json.dumps(unranked).encode()))
    server = turnout(without_n(upstream), ManualClock())
    with server.client(KEY) as client, pytest.raises(openai.APIStatusError) as caught:
        client.completions.create(model="m", prompt="hello world", max_tokens=10, best_of=3)
    assert caught.value.status_code == 502
    assert posts(upstream) == 3
    upstream.set_default(Ok())
    assert charged(server) == 3 * 3


def hedged(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    """Two deployments of `m` on one fake (so its in-flight count spans both), neither
    with native `n`; a stream whose first content is late is hedged after 0.2 s."""
    config = without_n(upstream, hedge={"after": 0.2}, **overrides)
    config["providers"]["b"] = {**config["providers"]["a"]}
    config["models"]["m"]["deployments"].append({"provider": "b", "model": "b-model"})
    return config


def stream_n(server: RunningTurnout, n: int) -> tuple[set[int], Any]:
    with server.client(KEY) as client:
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                max_tokens=10,
                n=n,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    return {c.index for chunk in chunks for c in chunk.choices}, chunks[-1].usage


def test_a_hedged_stream_stays_within_max_parallel_across_deployments(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(*[Ok(first_delay=1.0)] * 4)  # a's first four calls are late
    server = turnout(hedged(upstream, emulation={"max_parallel": 4}), ManualClock())
    indices, _ = stream_n(server, 8)
    assert indices == set(range(8))
    assert upstream.max_in_flight <= 4


def test_a_hedge_reserves_for_its_calls_and_the_loser_is_charged(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """a's two calls are late; b's (the hedge) answer at once and win; a's are cut."""
    upstream.enqueue(Ok(first_delay=30), Ok(first_delay=30))
    server = turnout(hedged(upstream), ManualClock())
    indices, usage = stream_n(server, 2)
    assert indices == {0, 1}
    assert usage is not None
    assert usage.total_tokens == 2 * BILLED  # the winner's own usage, as the client sees it
    assert posts(upstream) == 4
    upstream.wait_for_client_closes(2)
    assert charged(server) == 2 * BILLED + 2 * ONE_CALL


def test_a_hedge_the_limits_cannot_cover_is_not_started(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    body = {"messages": MESSAGES, "max_tokens": 10, "n": 2}
    one_deployment = estimate_tokens(body, prompt_reads=2)
    upstream.enqueue(Ok(first_delay=0.6), Ok(first_delay=0.6))
    config = hedged(upstream)
    config["keys"] = [{"key": KEY, "limits": {"tpm": one_deployment + 5}}]
    server = turnout(config, ManualClock())
    indices, _ = stream_n(server, 2)
    assert indices == {0, 1}  # a answered, late
    assert posts(upstream) == 2  # b was never called: no room for both at once


def test_more_calls_than_max_calls_is_refused_before_any_call(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = without_n(upstream, emulation={"max_calls": 8})
    config["providers"]["a"]["capabilities"]["completions"] = False  # a batch: one chat each
    server = turnout(config)
    with server.client(KEY) as client:
        with pytest.raises(openai.BadRequestError) as by_n:
            client.chat.completions.create(model="m", messages=MESSAGES, n=9)
        with pytest.raises(openai.BadRequestError) as by_prompts:
            client.completions.create(model="m", prompt=["a", "b", "c"], n=3, max_tokens=1)
        within = client.chat.completions.create(model="m", messages=MESSAGES, n=8)
    assert by_n.value.param == "n"
    assert "emulation.max_calls" in by_n.value.message
    assert "drop" not in by_n.value.message  # dropping would not get past it: no such hint
    assert by_prompts.value.param == "prompt"
    assert len(within.choices) == 8
    assert posts(upstream) == 8  # the refused requests made no call


def test_a_request_larger_than_the_limit_is_told_so_without_retry_after(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    config = simple_config({"a": upstream.base_url}, keys=[{"key": KEY, "limits": {"tpm": 5000}}])
    server = turnout(config, ManualClock())
    with server.client(KEY) as client, pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="m", messages=MESSAGES, n=128, max_tokens=100)
    assert caught.value.code == "rate_limit_exceeded"
    requested = estimate_tokens({"messages": MESSAGES, "n": 128, "max_tokens": 100})
    assert (
        f"Request too large for tokens per minute on this key: Limit 5000, Requested {requested}"
        in (caught.value.message)
    )
    assert "retry-after" not in caught.value.response.headers
    assert posts(upstream) == 0


def test_max_calls_is_validated() -> None:
    with pytest.raises(ValidationError, match="max_calls"):
        TurnoutConfig.model_validate({"emulation": {"max_calls": 0}})
    assert TurnoutConfig.model_validate({}).emulation.max_calls == 128
