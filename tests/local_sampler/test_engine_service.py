"""The engine seen through the server: disconnects free slots, generations overlap, and
the event loop stays responsive while the model works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import openai
import pytest
from openai.types import Completion

from providers.local.provider import LocalGenerator
from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import STORY
from tests.turnout_server import RunningTurnout


def in_flight(generator: LocalGenerator) -> int:
    engine = generator.engine
    assert engine is not None
    return engine.in_flight + engine.queue_depth


def wait_idle(generator: LocalGenerator, within: float) -> float:
    """Seconds until the engine has nothing in flight; fails after `within` seconds."""
    started = time.monotonic()
    while in_flight(generator):
        if time.monotonic() - started > within:
            pytest.fail(f"the engine still has {in_flight(generator)} candidates in flight")
        time.sleep(0.02)
    return time.monotonic() - started


def test_closing_a_stream_frees_its_slot(server: RunningTurnout, generator: LocalGenerator) -> None:
    body = {"model": CHAT_MODEL, "prompt": STORY, "max_tokens": 500, "stream": True}
    with server.http() as http, http.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
        assert in_flight(generator) == 1
    wait_idle(generator, within=2)


def test_a_client_timeout_frees_the_slot(server: RunningTurnout, generator: LocalGenerator) -> None:
    body = {"model": CHAT_MODEL, "prompt": STORY, "max_tokens": 500}
    with server.http(timeout=1.0) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/completions", json=body)
    wait_idle(generator, within=2)


async def test_concurrent_requests_share_decode_steps(
    server: RunningTurnout, generator: LocalGenerator
) -> None:
    settings = {"model": CHAT_MODEL, "prompt": STORY, "max_tokens": 32, "temperature": 0}
    async with server.async_client(timeout=120) as client:
        started = time.perf_counter()
        single = await client.completions.create(**settings)  # type: ignore[call-overload]
        alone = time.perf_counter() - started
        assert single.usage.completion_tokens == 32

        async def probe_health() -> list[float]:
            latencies: list[float] = []
            async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
                await asyncio.sleep(0.2)  # let the eight generations start
                while in_flight(generator):
                    sent = time.perf_counter()
                    live = await http.get("/health/live")
                    latencies.append(time.perf_counter() - sent)
                    assert live.status_code == 200
                    assert (await http.get("/health/ready")).status_code == 200
                    await asyncio.sleep(0.1)
            return latencies

        # Timed twice at most: one slow run on a shared machine should not fail the test.
        together, answers, latencies = await eight_at_once(client, settings, probe_health)
        if together >= 4 * alone:
            together, answers, latencies = await eight_at_once(client, settings, probe_health)
    assert [answer.choices[0].text for answer in answers] == [single.choices[0].text] * 8
    # Continuous batching: eight requests decode in one batch, well under 8x one request.
    assert together < 4 * alone, f"8 concurrent took {together:.2f}s, one took {alone:.2f}s"
    assert latencies, "no health probe ran while the generations were in flight"
    assert max(latencies) < 1.0


async def eight_at_once(
    client: openai.AsyncOpenAI,
    settings: dict[str, Any],
    probe: Callable[[], Coroutine[Any, Any, list[float]]],
) -> tuple[float, list[Completion], list[float]]:
    """Eight identical requests at once: seconds for all, the answers, health latencies."""
    started = time.perf_counter()
    probing = asyncio.create_task(probe())
    answers = await asyncio.gather(*(client.completions.create(**settings) for _ in range(8)))
    together = time.perf_counter() - started
    return together, list(answers), await probing


def test_every_slot_serves_after_the_disconnects(client: openai.OpenAI) -> None:
    """The slots freed above serve a full batch of n=8 again."""
    answer = client.completions.create(model=CHAT_MODEL, prompt=STORY, max_tokens=2, n=8)
    assert len(answer.choices) == 8
