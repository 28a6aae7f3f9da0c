"""Shared state on a real redis-server: two `turnout serve` processes behind one Redis
enforce one rate limit and respect one circuit breaker, and two in-process apps share one
response cache. Each client talks to its replica through the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.redis_server import redis_url as redis_url
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
LIMITED = "sk-limited"  # 10 requests a minute, wherever they arrive
UNLIMITED = "sk-unlimited"


@dataclass(frozen=True)
class Replicas:
    urls: tuple[str, str]
    config: Path
    steady: FakeOpenAIUpstream  # serves model `m`
    primary: FakeOpenAIUpstream  # model `flaky`: first choice ...
    fallback: FakeOpenAIUpstream  # ... and where it fails over to

    def client(self, replica: int, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.urls[replica]}/v1", api_key=key, max_retries=0)

    def async_client(self, replica: int, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.urls[replica]}/v1", api_key=key, max_retries=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    command = [sys.executable, "-m", "router", "serve", "--config", str(config)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return process, f"http://127.0.0.1:{port}"


def _wait_ready(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"turnout serve exited:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"turnout serve not ready:\n{log.read_text()}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def replicas(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Two real Turnout processes sharing one Redis namespace, started side by side."""
    with ExitStack() as stack:
        steady, primary, fallback = (stack.enter_context(FakeOpenAIUpstream()) for _ in range(3))
        upstreams = {
            "steady": steady.base_url,
            "primary": primary.base_url,
            "fallback": fallback.base_url,
        }
        models = {
            "m": {"deployments": [{"provider": "steady", "model": "s"}]},
            "flaky": {
                "deployments": [
                    {"provider": "primary", "model": "p"},
                    {"provider": "fallback", "model": "f"},
                ]
            },
        }
        config = simple_config(
            upstreams,
            models,
            keys=[{"key": LIMITED, "limits": {"rpm": 10}}, {"key": UNLIMITED}],
            breaker={"failures": 2, "cooldown": 60},
            retry={"attempts": 1},
            state={"redis_url": redis_url, "prefix": f"test:{uuid.uuid4().hex}:"},
            storage={"single_replica": True},
        )
        folder = tmp_path_factory.mktemp("replicas")
        path = folder / "turnout.yaml"
        path.write_text(yaml.safe_dump(config))
        started = [_serve(path, folder / f"replica-{i}.log") for i in range(2)]
        for process, _ in started:
            stack.callback(process.wait, 15)
            stack.callback(process.terminate)
        for i, (process, url) in enumerate(started):
            _wait_ready(process, url, folder / f"replica-{i}.log")
        yield Replicas((started[0][1], started[1][1]), path, steady, primary, fallback)


def calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


async def test_two_processes_enforce_one_rate_limit(replicas: Replicas) -> None:
    async def one(client: openai.AsyncOpenAI) -> bool:
        try:
            await client.chat.completions.create(model="m", messages=MESSAGES)
        except openai.RateLimitError:
            return False
        return True

    async with (
        replicas.async_client(0, LIMITED) as first,
        replicas.async_client(1, LIMITED) as second,
    ):
        outcomes = await asyncio.gather(*(one(c) for _ in range(15) for c in (first, second)))
    assert sum(outcomes) == 10  # of 30, across both replicas
    assert calls(replicas.steady) == 10


def test_a_breaker_opened_through_one_process_is_respected_by_the_other(
    replicas: Replicas, tmp_path: Path
) -> None:
    replicas.primary.set_default(Status(503))
    with replicas.client(0, UNLIMITED) as client:
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(model="flaky", messages=MESSAGES)
            assert raw.headers["x-turnout-deployment"] == "fallback/f"
    assert calls(replicas.primary) == 2  # the second failure opened the shared breaker

    with replicas.client(1, UNLIMITED) as client:
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="flaky", messages=MESSAGES)
            assert raw.headers["x-turnout-deployment"] == "fallback/f"
            assert raw.headers["x-turnout-attempts"] == "1"
    assert calls(replicas.primary) == 2  # the other process never called it
    assert calls(replicas.fallback) == 5

    # `turnout explain` on the same config reads the same breaker.
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"model": "flaky", "messages": MESSAGES}))
    command = [sys.executable, "-m", "router", "explain", "--config", str(replicas.config)]
    done = subprocess.run(
        [*command, str(request)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    plan = {d["deployment"]: d for d in json.loads(done.stdout)["deployments"]}
    assert (plan["primary/p"]["breaker"], plan["primary/p"]["reason"]) == ("open", "breaker open")
    assert plan["fallback/f"]["eligible"] is True


def test_two_apps_on_one_redis_share_the_response_cache(
    redis_url: str, turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    state = {"redis_url": redis_url, "prefix": f"test:{uuid.uuid4().hex}:"}
    config = simple_config(
        {"up": upstream.base_url},
        cache={"ttl": 60},
        state=state,
        storage={"single_replica": True},
    )
    first, second = turnout(config), turnout(config)

    def ask(server: RunningTurnout) -> Any:
        with server.client() as client:
            return client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)

    missed = ask(first)
    assert missed.headers["x-turnout-cache"] == "miss"
    hit = ask(second)
    assert hit.headers["x-turnout-cache"] == "hit"
    assert hit.parse().id == missed.parse().id
    assert calls(upstream) == 1
