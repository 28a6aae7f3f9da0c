"""Hedged first byte, end to end: the official openai SDK streams through a real Turnout
from scripted fake upstreams on loopback; a late first token gets the next deployment
called too, the first with content is relayed and the other is cancelled."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import CutStream, FakeOpenAIUpstream, Ok, Silence
from tests.router.test_metrics import scrape, value
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]
A, B, C = "a/a-model", "b/b-model", "c/c-model"


@pytest.fixture
def upstream_c() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


def config(*ups: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    names = "abc"[: len(ups)]
    return simple_config({n: up.base_url for n, up in zip(names, ups, strict=True)}, **overrides)


def stream(server: RunningTurnout, model: str = "m") -> tuple[str, dict[str, str]]:
    """The streamed text and the response headers."""
    with (
        server.client() as client,
        client.chat.completions.with_streaming_response.create(
            model=model, messages=MESSAGES, stream=True
        ) as response,
    ):
        text = "".join(
            chunk.choices[0].delta.content or ""
            for chunk in response.parse()
            if chunk.choices and chunk.choices[0].delta
        )
        return text, dict(response.headers)


def posts(up: FakeOpenAIUpstream) -> int:
    return sum(1 for r in up.requests if r.method == "POST")


def eventually(server: RunningTurnout, name: str, **labels: str) -> float:
    """A counter's value once the request that feeds it has been logged (a stream is
    counted when it ends, just after its last byte reached the client)."""
    deadline = time.monotonic() + 5
    while (found := value(scrape(server), name, **labels)) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    return found


def test_a_slow_first_token_is_hedged_and_the_slow_call_cancelled(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    # One failure would open a's breaker: losing the race must not count as one.
    server = turnout(
        config(upstream, upstream_b, hedge={"after": 0.3}, breaker={"failures": 1}),
    )
    upstream.enqueue(Ok(text="slow answer", first_delay=60))
    upstream_b.enqueue(Ok(text="fast answer"))

    text, headers = stream(server)

    assert text == "fast answer"
    assert headers["x-turnout-deployment"] == B
    assert headers["x-turnout-attempts"] == "2"  # the hedge counts as an attempt
    upstream.wait_for_client_closes(1)  # the slow call's connection was closed
    assert eventually(server, "turnout_hedges_total", outcome="won") == 1
    samples = scrape(server)
    assert value(samples, "turnout_attempts_total", deployment=A, outcome="hedge_lost") == 1
    assert value(samples, "turnout_breaker_state", deployment=A) == 0
    # a's breaker is closed: the next request is answered by a, with no hedge.
    upstream.enqueue(Ok(text="a again"))
    text, headers = stream(server)
    assert (text, headers["x-turnout-deployment"], headers["x-turnout-attempts"]) == (
        "a again",
        A,
        "1",
    )


def test_the_first_call_wins_when_it_answers_first_and_the_hedge_is_cancelled(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b, hedge={"after": 0.2}))
    upstream.enqueue(Ok(text="first", first_delay=1.0))
    upstream_b.enqueue(Ok(text="hedge", first_delay=60))

    text, headers = stream(server)

    assert text == "first"
    assert headers["x-turnout-deployment"] == A
    assert posts(upstream_b) == 1  # the hedge was sent ...
    upstream_b.wait_for_client_closes(1)  # ... and cancelled
    assert eventually(server, "turnout_hedges_total", outcome="lost") == 1
    assert value(scrape(server), "turnout_attempts_total", deployment=B, outcome="hedge_lost") == 1


@pytest.mark.parametrize(("most", "winner"), [(1, "b"), (2, "c")])
def test_at_most_max_hedges(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    upstream_c: FakeOpenAIUpstream,
    most: int,
    winner: str,
) -> None:
    server = turnout(config(upstream, upstream_b, upstream_c, hedge={"after": 0.2, "max": most}))
    upstream.enqueue(Ok(text="a", first_delay=60))
    upstream_b.enqueue(Ok(text="b", first_delay=1.5))
    upstream_c.enqueue(Ok(text="c"))

    text, _ = stream(server)

    assert text == winner
    assert posts(upstream_c) == (most - 1)  # one hedge: c is never called
    upstream.wait_for_client_closes(1)


def test_a_silent_upstream_is_hedged_in_the_default_config(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """No `hedge` key: once a's first tokens are known to come fast, a call that gets no
    answer is hedged after the floor (2 s), long before `first_byte` (60 s here; the
    client gives up after 20 s, so a test that waited for it fails)."""
    timeouts = {"connect": 2, "first_byte": 60, "stream_idle": 60, "total": 90}
    server = turnout(config(upstream, upstream_b, timeouts=timeouts))
    for _ in range(3):  # statistics: a's first token comes in milliseconds
        assert stream(server)[1]["x-turnout-deployment"] == A
    upstream.enqueue(Silence())

    text, headers = stream(server)

    assert headers["x-turnout-deployment"] == B
    assert text.startswith("echo:")
    upstream.wait_for_client_closes(1)


def test_a_silent_upstream_without_statistics_is_hedged_after_the_cap(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    timeouts = {"connect": 2, "first_byte": 60, "stream_idle": 60, "total": 90}
    hedge = {"cap": 0.5, "floor": 0.1}  # the default `after: auto`, with a short cap
    server = turnout(config(upstream, upstream_b, timeouts=timeouts, hedge=hedge))
    upstream.enqueue(Silence())

    _, headers = stream(server)

    assert headers["x-turnout-deployment"] == B
    assert headers["x-turnout-attempts"] == "2"


def test_a_hedge_that_fails_leaves_the_first_call_running(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b, hedge={"after": 0.2}, retry={"attempts": 1}))
    upstream.enqueue(Ok(text="first", first_delay=1.0))
    upstream_b.enqueue(CutStream(after_events=0))

    text, headers = stream(server)

    assert text == "first"
    assert headers["x-turnout-attempts"] == "2"
    assert eventually(server, "turnout_hedges_total", outcome="failed") == 1


def test_a_first_call_that_fails_leaves_the_hedge_running(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b, hedge={"after": 0.2}, retry={"attempts": 1}))
    upstream.enqueue(CutStream(after_events=0, pause=0.6))
    upstream_b.enqueue(Ok(text="hedge", first_delay=1.2))

    text, headers = stream(server)

    assert text == "hedge"
    assert headers["x-turnout-deployment"] == B


def test_when_every_call_fails_the_usual_error(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b, hedge={"after": 0.1}, retry={"attempts": 1}))
    upstream.enqueue(CutStream(after_events=0, pause=0.5))
    upstream_b.enqueue(CutStream(after_events=0, pause=0.5))

    with pytest.raises(openai.APIStatusError) as caught:
        stream(server)

    assert caught.value.status_code == 502
    assert "all deployments failed after 2 attempt(s)" in caught.value.message


def test_per_model_timeouts_override_the_top_level(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """`first_byte` 2 s at the top level; `quick` waits 0.3 s, `patient` 5 s. a answers
    after 1 s, then after 3 s (hedging off: only the timeouts decide)."""
    deployments = [{"provider": n, "model": f"{n}-model"} for n in "ab"]
    models = {
        "m": {"deployments": deployments},
        "quick": {"deployments": deployments, "timeouts": {"first_byte": 0.3, "connect": 1}},
        "patient": {"deployments": deployments, "timeouts": {"first_byte": 5}},
    }
    timeouts = {"connect": 2, "first_byte": 2, "stream_idle": 10, "total": 30}
    server = turnout(config(upstream, upstream_b, models=models, timeouts=timeouts, hedge=False))

    upstream.enqueue(Ok(delay=1.0))
    assert stream(server, "quick")[1]["x-turnout-deployment"] == B  # a timed out at 0.3 s
    upstream.enqueue(Ok(delay=1.0))
    assert stream(server, "m")[1]["x-turnout-deployment"] == A  # within the top level's 2 s
    upstream.enqueue(Ok(delay=3.0))
    assert stream(server, "patient")[1]["x-turnout-deployment"] == A  # within its own 5 s
    upstream.enqueue(Ok(delay=3.0))
    assert stream(server, "m")[1]["x-turnout-deployment"] == B  # past the top level's 2 s
