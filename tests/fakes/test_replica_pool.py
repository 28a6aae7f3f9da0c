"""The replica pool models a serving engine: prefix cache with LRU eviction, queueing past
`max_running`, cache hits in usage and in its Prometheus `/metrics`, kill and revive."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.prefix_cache import PrefixCache
from tests.fakes.replica_pool import ReplicaPool, ReplicaSettings

SYSTEM = "You are a careful assistant. " * 20  # 580 chars: 9 whole blocks of 64


def chat(base_url: str, user: str, *, stream: bool = False) -> httpx.Response:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=10)


def metrics_of(url: str) -> dict[str, float]:
    text = httpx.get(url, timeout=5).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_prefix_cache_is_lru_over_chained_blocks() -> None:
    cache = PrefixCache(capacity=4, block_chars=4)
    assert cache.admit("aaaabbbbcc") == (2, 0)
    assert cache.admit("aaaabbbbdddd") == (3, 2)
    # Same second block after a different first one: no hit (chained hashes).
    assert cache.admit("zzzzbbbb") == (2, 0)
    assert len(cache) == 4  # 5 distinct blocks seen, capacity 4: the oldest went
    assert cache.cached_prefix_blocks("aaaabbbb") == 0  # "aaaa" was least recently used
    assert cache.cached_prefix_blocks("zzzzbbbb") == 2


def test_second_request_reports_cached_tokens_in_usage_and_metrics() -> None:
    with ReplicaPool(1) as pool:
        url = pool.base_urls[0]
        first = chat(url, "hello").json()["usage"]
        second = chat(url, "hello again").json()["usage"]
        replica = pool.replicas[0]
        assert first["prompt_tokens_details"]["cached_tokens"] == 0
        cached = second["prompt_tokens_details"]["cached_tokens"]
        assert cached >= len(SYSTEM) // 4 - 16  # the system prompt's whole blocks
        assert cached < second["prompt_tokens"]
        assert replica.served == 2
        assert replica.per_request_cached == [0, cached]
        seen = metrics_of(replica.metrics_url)
        assert seen["vllm:prefix_cache_hits_total"] == replica.block_hits > 0
        assert seen["vllm:prefix_cache_queries_total"] == replica.block_queries
        # Idle: the cached blocks are free to reuse or evict, none in use (as vLLM counts).
        assert seen["vllm:kv_cache_usage_perc"] == 0


def test_stream_ends_with_usage_and_done() -> None:
    with ReplicaPool(1) as pool:
        chat(pool.base_urls[0], "warm")
        text = chat(pool.base_urls[0], "warm", stream=True).text
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert '"cached_tokens":' in events[-2]
        assert '"choices":[]' in events[-2]


def test_requests_past_max_running_wait_and_show_in_metrics() -> None:
    settings = ReplicaSettings(max_running=1, decode_s_per_token=0.1, output_tokens=4)
    with ReplicaPool(1, settings) as pool:
        url = pool.base_urls[0]
        with concurrent.futures.ThreadPoolExecutor(3) as workers:
            calls = [workers.submit(chat, url, f"q{i}") for i in range(3)]
            deadline = time.monotonic() + 5
            while pool.replicas[0].waiting < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            seen = metrics_of(pool.replicas[0].metrics_url)
            assert seen["vllm:num_requests_running"] == 1
            assert seen["vllm:num_requests_waiting"] == 2
            assert all(c.result().status_code == 200 for c in calls)
        assert pool.replicas[0].served == 3


@pytest.mark.parametrize(
    ("fmt", "names"),
    [
        ("sglang", {"sglang:num_queue_reqs", "sglang:num_running_reqs", "sglang:token_usage"}),
        (
            "llamacpp",
            {
                "llamacpp:requests_deferred",
                "llamacpp:requests_processing",
                "llamacpp:kv_cache_usage_ratio",
            },
        ),
    ],
)
def test_other_engines_metric_names(fmt: str, names: set[str]) -> None:
    with ReplicaPool(1, ReplicaSettings(metrics_format=fmt)) as pool:  # type: ignore[arg-type]
        assert names <= set(metrics_of(pool.replicas[0].metrics_url))


def test_kill_revive_and_metrics_modes() -> None:
    with ReplicaPool(2) as pool:
        pool.kill(0)
        with pytest.raises(httpx.ConnectError):
            chat(pool.base_urls[0], "x")
        assert chat(pool.base_urls[1], "x").status_code == 200
        pool.revive(0)
        assert chat(pool.base_urls[0], "x").status_code == 200
        pool.set_metrics(1, "frozen")
        before = metrics_of(pool.replicas[1].metrics_url)
        chat(pool.base_urls[1], "y" * 300)
        assert metrics_of(pool.replicas[1].metrics_url) == before
        pool.set_metrics(1, "error")
        assert httpx.get(pool.replicas[1].metrics_url).status_code == 500
        pool.set_metrics(1, "hang")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(pool.replicas[1].metrics_url, timeout=0.2)
        pool.set_metrics(1, "live")
        assert httpx.get(f"{pool.base_urls[1][:-3]}/stats").json()["served"] == 2
