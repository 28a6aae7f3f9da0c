"""`turnout serve --workers N` through the real CLI: several worker processes behind one
port share limits through Redis, refuse to start (and to reload) without shared state
unless `state.per_worker` says so, and each pass a SIGHUP's reload on."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.redis_server import redis_url as redis_url
from tests.served import SERVE, free_port, served_turnout
from tests.turnout_server import simple_config

KEY = "sk-workers-test"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def logged(log: Path, event: str) -> list[dict[str, Any]]:
    lines = log.read_text(errors="replace").splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    return [entry for entry in entries if entry.get("event") == event]


def wait_for(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def shared_config(upstream: FakeOpenAIUpstream, redis: str, **overrides: Any) -> dict[str, Any]:
    return simple_config(
        {"up": upstream.base_url},
        keys=[{"key": KEY, "limits": {"rpm": 20}}],
        # A unique prefix: the session's Redis is shared with other tests.
        state={"redis_url": redis, "prefix": f"turnout-workers-{free_port()}:"},
        storage={"single_replica": True},
        **overrides,
    )


async def _burst(url: str, count: int, connections: int) -> list[httpx.Response]:
    """`count` requests at once, spread over `connections` connections (each worker
    accepts its own, so both answer)."""
    clients = [
        httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"}, timeout=30)
        for _ in range(connections)
    ]
    try:
        calls = [
            clients[i % connections].post("/v1/chat/completions", json=CHAT) for i in range(count)
        ]
        return list(await asyncio.gather(*calls))
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))


@pytest.mark.parametrize("server", ["granian", "uvicorn"])
def test_two_workers_share_an_rpm_limit_through_redis(
    tmp_path: Path, upstream: FakeOpenAIUpstream, redis_url: str, server: str
) -> None:
    log = tmp_path / "turnout.log"
    config = shared_config(upstream, redis_url)
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, server=server, args=["--workers", "2"], log=log) as served:
        # Ready means one worker answered /health/ready: the other may still be starting.
        wait_for(lambda: len({e["pid"] for e in logged(log, "gateway_ready")}) == 2)
        responses = asyncio.run(_burst(served.url, 40, connections=8))
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 20 + [429] * 20

        # The kernel spreads connections between the workers: 8 may all reach one (a
        # chance in ~128); fresh connections then, until both have answered (each a 429).
        for _ in range(32):
            if len({entry["pid"] for entry in logged(log, "request")}) == 2:
                break
            refused = asyncio.run(_burst(served.url, 1, connections=1))
            assert [r.status_code for r in refused] == [429]
        answered = {entry["pid"] for entry in logged(log, "request")}
        assert len(answered) == 2, answered  # both workers answered
        assert served.process.pid not in answered

        # SIGHUP reaches every worker, each reloads in place (nothing changed here).
        served.process.send_signal(signal.SIGHUP)
        wait_for(lambda: {e["pid"] for e in logged(log, "config_unchanged")} == answered)
        assert served.process.poll() is None


def test_a_reload_that_drops_the_shared_state_is_refused(
    tmp_path: Path, upstream: FakeOpenAIUpstream, redis_url: str
) -> None:
    """Every check start-up makes holds on reload: without Redis, two workers would each
    keep their own limits."""
    log = tmp_path / "turnout.log"
    config = shared_config(upstream, redis_url, server={"workers": 2})  # from the config
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, log=log) as served:
        # Ready means one worker answered /health/ready: the other may still be starting.
        wait_for(lambda: len({e["pid"] for e in logged(log, "gateway_ready")}) == 2)
        workers = {e["pid"] for e in logged(log, "gateway_ready")}
        local = {k: v for k, v in config.items() if k not in ("state", "storage")}
        path.write_text(yaml.safe_dump(local))
        served.process.send_signal(signal.SIGHUP)
        rejected = wait_for(
            lambda: (found := logged(log, "config_reload_rejected")) and len(found) >= 2 and found
        )
        assert {e["pid"] for e in rejected} == workers
        assert all("per_worker" in e["error"] and "state.redis_url" in e["error"] for e in rejected)
        assert not logged(log, "config_reloaded")
        # Still serving the config with Redis.
        answer = httpx.post(
            f"{served.url}/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {KEY}"},
            timeout=10,
        )
        assert answer.status_code == 200


@pytest.mark.parametrize("how", ["flag", "config"])
def test_several_workers_without_shared_state_are_refused(tmp_path: Path, how: str) -> None:
    config = simple_config({"up": "http://127.0.0.1:9/v1"})
    args = ["--workers", "2"] if how == "flag" else []
    if how == "config":
        config["server"] = {"workers": 2}
    path = tmp_path / "turnout.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [*SERVE, "--config", str(path), "--port", str(free_port()), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result
    assert "limits, breakers and statistics would be each worker's own" in result.stderr
    assert "state.redis_url" in result.stderr
    assert "per_worker: true" in result.stderr


def test_the_flag_overrides_the_config(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    """`server.workers: 2` with `--workers 1` serves one process: no shared state needed."""
    config = simple_config({"up": upstream.base_url}, server={"workers": 2})
    with served_turnout(tmp_path / "turnout.yaml", config, args=["--workers", "1"]) as served:
        answer = httpx.post(f"{served.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert answer.status_code == 200


def test_per_worker_state_serves_when_said(tmp_path: Path, upstream: FakeOpenAIUpstream) -> None:
    log = tmp_path / "turnout.log"
    config = simple_config({"up": upstream.base_url}, state={"per_worker": True})
    path = tmp_path / "turnout.yaml"
    with served_turnout(path, config, args=["--workers", "2"], log=log) as served:
        # Ready means one worker answered /health/ready: the other may still be starting.
        wait_for(lambda: len({e["pid"] for e in logged(log, "gateway_ready")}) == 2)
        answer = httpx.post(f"{served.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert answer.status_code == 200
