"""A Turnout app whose shared state is a real three-master Redis Cluster
(`state: {redis_url: redis+cluster://..., cluster: true}`): requests through HTTP with the
official SDK, and the key's rpm limit holds exactly."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.redis_cluster import RedisCluster
from tests.turnout_server import RunningTurnout, simple_config

LIMITED = "sk-cluster-limited"


def test_an_rpm_limit_holds_on_a_cluster(
    redis_cluster: RedisCluster,
    turnout: Callable[..., RunningTurnout],
    upstream: FakeOpenAIUpstream,
) -> None:
    state = {"redis_url": redis_cluster.url, "cluster": True, "prefix": f"e2e:{uuid.uuid4().hex}:"}
    config = simple_config(
        {"up": upstream.base_url},
        keys=[{"key": LIMITED, "limits": {"rpm": 5}}],
        state=state,
        storage={"single_replica": True},
    )
    first, second = turnout(config), turnout(config)  # two replicas, one cluster
    ready = httpx.get(f"http://127.0.0.1:{first.port}/health/ready", timeout=5)
    assert ready.status_code == 200

    outcomes: list[int] = []
    for server in (first, second) * 4:
        client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1", api_key=LIMITED, max_retries=0
        )
        messages: Any = [{"role": "user", "content": "hi"}]
        try:
            client.chat.completions.create(model="m", messages=messages)
            outcomes.append(200)
        except openai.RateLimitError:
            outcomes.append(429)
        finally:
            client.close()

    assert outcomes == [200] * 5 + [429] * 3
    assert sum(r.path == "/v1/chat/completions" for r in upstream.requests) == 5
