"""2,000 streams at once through one Turnout process and one provider, at the provider's
default `max_connections`: every stream whole, all 2,000 open upstream together, no
failure, no breaker opened. Turnout runs as `turnout serve` does (granian, its own
process, so that it has a core of its own beside the client and the upstream here).

The upstream holds each stream until all 2,000 are open, then ends each with a few chunks:
so "at once" is certain, not a matter of timing. Before the fix, the provider's pool of
512 let the rest wait under the connect timeout: 504s, and a breaker opened."""

from __future__ import annotations

import asyncio
import resource
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from tests.fakes.held_streams import TEXT, HeldStreams
from tests.served import served_turnout
from tests.turnout_server import policy_series

STREAMS = 2000
# Per process: the client's and the upstream's sockets here, Turnout's both sides there.
FILES_NEEDED = 2 * STREAMS + 1024
MESSAGES: Any = [{"role": "user", "content": "hold on"}]


@pytest.fixture(scope="module")
def enough_files() -> Iterator[None]:
    """Raise this process's open-file limit (Turnout's process inherits it) where the
    soft limit is below what 2,000 streams take; skip where even the hard one is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < FILES_NEEDED:
        pytest.skip(f"the open-file limit ({hard}) is below the {FILES_NEEDED} needed")
    if soft != resource.RLIM_INFINITY and soft < FILES_NEEDED:
        resource.setrlimit(resource.RLIMIT_NOFILE, (FILES_NEEDED, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def served(tmp_path: Path, enough_files: None) -> Iterator[tuple[HeldStreams, str]]:
    """The held upstream, and the URL of a `turnout serve` in front of it: the provider
    breaker and server at their defaults (`server.max_connections`, 4,096, lets 2,000
    in)."""
    with HeldStreams(hold=STREAMS) as upstream:
        config = {
            "providers": {"up": {"kind": "openai", "base_url": upstream.base_url}},
            "models": {"m": {"deployments": [{"provider": "up", "model": "held"}]}},
        }
        with served_turnout(
            tmp_path / "turnout.yaml",
            config,
            args=["--log-level", "error"],
            log=tmp_path / "stderr.log",
            stdout=subprocess.DEVNULL,
            ready_timeout=60,
            stop_timeout=30,
        ) as turnout:
            yield upstream, turnout.url


async def streamed(client: openai.AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


async def test_two_thousand_streams_at_once_through_one_provider(
    served: tuple[HeldStreams, str],
) -> None:
    upstream, url = served
    # The SDK over aiohttp (its `aiohttp` extra): httpx's own pool crawls at this many.
    limits = httpx2.Limits(max_connections=STREAMS, max_keepalive_connections=STREAMS)
    http_client = openai.DefaultAioHttpClient(limits=limits, timeout=120)
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", max_retries=0, http_client=http_client
    ) as client:
        texts = await asyncio.gather(
            *(streamed(client) for _ in range(STREAMS)), return_exceptions=True
        )

    failures = [repr(t) for t in texts if not isinstance(t, str)]
    assert failures == []
    assert texts == [TEXT] * STREAMS
    assert upstream.peak == STREAMS  # all open upstream at once, through the one pool
    assert policy_series(url) == {
        "turnout_attempts_total[('deployment', 'up/held'), ('outcome', 'ok')]": float(STREAMS)
    }
