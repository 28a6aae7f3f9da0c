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
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.held_streams import TEXT, HeldStreams

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
        path = tmp_path / "turnout.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        command = [sys.executable, "-m", "router", "serve", "--config", str(path)]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(process, url)
            yield upstream, url
        finally:
            process.terminate()
            process.wait(timeout=30)


def wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            pytest.fail(f"turnout serve exited with {process.returncode}: {stderr}")
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail("turnout serve never became ready")


async def streamed(client: openai.AsyncOpenAI) -> str:
    stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    parts = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    return "".join(parts)


def policy_series(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=20).text
    return {
        f"{sample.name}{sorted(sample.labels.items())}": sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in ("turnout_breaker_transitions_total", "turnout_attempts_total")
    }


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
