"""A provider's connection pool full: calls past `max_connections` wait for a connection,
within their request's deadline, and are then served; the connect timeout never cuts that
wait, and nothing about it reaches a breaker (real Turnout, real upstream, the SDK)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.turnout_server import RunningTurnout, policy_series

TEXT = "one two three four"
MESSAGES: Any = [{"role": "user", "content": "count"}]
StartTurnout = Callable[[dict[str, Any]], RunningTurnout]


def pooled_config(upstream: FakeOpenAIUpstream, quick_total: float = 60) -> dict[str, Any]:
    """Two connections to the upstream; a connect timeout far below a stream's length
    (aiohttp's `connect` timeout used to include the wait for a pooled connection); the
    breaker at its defaults (3 failures in a row open it). Two models on the one provider:
    `m`, and `quick`, whose requests have `quick_total` seconds."""
    deployments = [{"provider": "up", "model": "gpt-4o-mini"}]
    return {
        "providers": {
            "up": {"kind": "openai", "base_url": upstream.base_url, "max_connections": 2}
        },
        "models": {
            "m": {"deployments": deployments},
            "quick": {"deployments": deployments, "timeouts": {"total": quick_total}},
        },
        "timeouts": {"connect": 0.3, "first_byte": 10, "stream_idle": 10, "total": 60},
    }


async def streamed(client: openai.AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def test_streams_past_the_pool_wait_for_a_connection_and_arrive_whole(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=TEXT, chunk_delay=0.15))  # each stream holds ~1 s
    server = turnout(pooled_config(upstream))
    client = server.async_client(timeout=60)

    texts = await asyncio.gather(*(streamed(client) for _ in range(10)))

    assert texts == [TEXT] * 10
    assert upstream.max_in_flight == 2  # the pool held: the rest waited for it
    assert policy_series(server.url) == {
        "turnout_attempts_total[('deployment', 'up/gpt-4o-mini'), ('outcome', 'ok')]": 10.0
    }


async def test_a_wait_for_a_connection_ends_at_the_request_deadline_not_in_a_breaker(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Two streams hold both connections past a `quick` request's deadline: it waits for
    one until its deadline, and is answered 504; the deployment is not blamed."""
    upstream.set_default(Ok(text=TEXT, chunk_delay=0.6))  # each stream holds ~3.6 s
    server = turnout(pooled_config(upstream, quick_total=1))
    client = server.async_client(timeout=30)

    async def waiting() -> openai.APIStatusError:
        await asyncio.to_thread(upstream.wait_for_requests, 2)  # both connections taken
        try:
            await client.chat.completions.create(model="quick", messages=MESSAGES)
        except openai.APIStatusError as exc:
            return exc
        raise AssertionError("answered, though no connection was free before the deadline")

    holders = [asyncio.ensure_future(streamed(client)) for _ in range(2)]
    refused = await waiting()
    assert await asyncio.gather(*holders) == [TEXT] * 2

    assert refused.status_code == 504
    assert "within the request deadline of 1s" in refused.message
    assert len(upstream.requests) == 2  # the waiting request never reached the upstream
    series = policy_series(server.url)
    assert not [name for name, count in series.items() if "state" in name and count]
