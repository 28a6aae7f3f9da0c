"""`load_metrics:` on an OpenAI-compatible provider: a background scrape of the backend's
Prometheus `/metrics` (vLLM, SGLang, llama.cpp names) from real loopback replicas, its
stale and failing fallbacks, and `least-busy` routing by it through a real Turnout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog

from policies.config import TurnoutConfig
from policies.redaction import configured_secrets
from providers.load_report import LoadFormat, LoadParseError, parse_load
from providers.openai.adapter import OpenAIProvider
from providers.openai.settings import OpenAISettings
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, ProviderRequest
from tests.fakes.replica_pool import Replica, ReplicaPool, ReplicaSettings
from tests.turnout_server import RunningTurnout, simple_config

TIMEOUTS = UpstreamTimeouts(connect=2, first_byte=5, stream_idle=5)
INTERVAL = 0.05
CHAT = {"model": "replica", "messages": [{"role": "user", "content": "hi " * 100}]}


def provider_for(replica: Replica, *, url: str | None = None, **load: Any) -> OpenAIProvider:
    settings = OpenAISettings(
        kind="openai",
        base_url=replica.base_url,
        load_metrics={"url": url or replica.metrics_url, "interval": INTERVAL, **load},
    )
    return OpenAIProvider("pool", settings, TIMEOUTS)


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


def test_parser_reads_each_engines_names_and_sums_ranks() -> None:
    vllm = (
        'vllm:num_requests_waiting{model_name="a"} 2.0\n'
        'vllm:num_requests_waiting{model_name="b"} 1.0\n'
        "vllm:num_requests_running 4.0\n"
        "vllm:gpu_cache_usage_perc 0.5\n"
    )
    report = parse_load(vllm, LoadFormat.VLLM, scraped_at=time.monotonic(), max_age=1)
    assert (report.waiting, report.running, report.kv_cache_usage) == (3, 4, 0.5)
    assert report.requests == 7
    assert report.fresh
    llama = "llamacpp:requests_deferred 1\nllamacpp:requests_processing 2\n"
    report = parse_load(llama, LoadFormat.LLAMACPP, scraped_at=0.0, max_age=1)
    assert (report.waiting, report.running, report.kv_cache_usage) == (1, 2, None)
    assert not report.fresh  # scraped at monotonic 0: long ago
    with pytest.raises(LoadParseError):
        parse_load(vllm, LoadFormat.SGLANG, scraped_at=0.0, max_age=1)
    with pytest.raises(LoadParseError):
        parse_load("<html>not metrics</html>", LoadFormat.VLLM, scraped_at=0.0, max_age=1)


@pytest.mark.parametrize("fmt", ["vllm", "sglang", "llamacpp"])
async def test_scrapes_the_engines_queue_and_cache(fmt: str) -> None:
    settings = ReplicaSettings(
        max_running=1,
        decode_s_per_token=0.2,
        output_tokens=5,
        metrics_format=fmt,  # type: ignore[arg-type]
    )
    with ReplicaPool(1, settings) as pool:
        replica = pool.replicas[0]
        provider = provider_for(replica, format=fmt)
        await provider.start()
        try:
            calls = [
                asyncio.create_task(provider.complete(ProviderRequest(Endpoint.CHAT, CHAT)))
                for _ in range(3)
            ]
            await until(lambda: replica.waiting == 2)

            def sees_queue() -> bool:
                report = provider.load_report()
                return report is not None and (report.waiting, report.running) == (2, 1)

            await until(sees_queue)
            assert provider.load() == 3  # least-busy reads waiting + running
            report = provider.load_report()
            assert report is not None
            assert report.kv_cache_usage is not None
            assert 0 < report.kv_cache_usage <= 1
            await asyncio.gather(*calls)
            await until(lambda: provider.load() == 0)
            assert provider.load_scrape_failures() == 0
        finally:
            await provider.aclose()


@pytest.mark.parametrize("mode", ["hang", "error"])
async def test_a_failing_scrape_goes_stale_and_never_fails_a_request(mode: str) -> None:
    with ReplicaPool(1) as pool:
        replica = pool.replicas[0]
        provider = provider_for(replica, timeout=0.1)
        await provider.start()
        try:
            await until(lambda: provider.load_report() is not None)
            pool.set_metrics(0, mode)  # type: ignore[arg-type]
            await until(lambda: provider.load_report() is None)  # 3 intervals without one
            assert provider.load() is None  # routing falls back to Turnout's own counts
            stale = provider.load_report(stale=True)
            assert stale is not None
            assert not stale.fresh
            failures = provider.load_scrape_failures()
            assert failures is not None
            assert failures > 0
            answer = await provider.complete(ProviderRequest(Endpoint.CHAT, CHAT))
            assert answer.body["choices"][0]["message"]["content"].startswith("replica-0")
            pool.set_metrics(0, "live")
            await until(lambda: provider.load_report() is not None)
        finally:
            await provider.aclose()


async def test_scrapes_run_on_their_interval_not_per_request() -> None:
    with ReplicaPool(1) as pool:
        replica = pool.replicas[0]
        provider = provider_for(replica, interval=60)
        await provider.start()
        try:
            await until(lambda: provider.load_report() is not None)
            for _ in range(5):
                await provider.complete(ProviderRequest(Endpoint.CHAT, CHAT))
            assert replica.served == 5
            assert replica.metrics_scrapes == 1
        finally:
            await provider.aclose()
        assert replica.metrics_scrapes == 1  # and nothing after aclose


async def test_a_never_reachable_scrape_is_counted_and_logged_without_credentials() -> None:
    with ReplicaPool(1) as pool:
        replica = pool.replicas[0]
        pool.set_metrics(0, "error")
        url = replica.metrics_url.replace("http://", "http://scraper:s3cr3t-pw@") + "?token=t0k"
        with structlog.testing.capture_logs() as logs:
            provider = provider_for(replica, url=url)
            await provider.start()
            try:
                await until(lambda: (provider.load_scrape_failures() or 0) >= 3)
                assert provider.load_report(stale=True) is None
                assert provider.load() is None
            finally:
                await provider.aclose()
        failed = [e for e in logs if e["event"] == "load_metrics_failed"]
        assert len(failed) == 1  # once per run of failures, not per scrape
        assert failed[0]["url"] == replica.metrics_url
        assert "s3cr3t" not in repr(logs)
        assert "t0k" not in repr(logs)


def test_least_busy_routes_around_the_backend_with_a_queue() -> None:
    """Turnout has nothing in flight on either deployment; only the backend's own queue
    (filled by another client) tells them apart."""
    settings = ReplicaSettings(max_running=1, decode_s_per_token=0.2, output_tokens=10)
    with ReplicaPool(2, settings) as pool:
        config = simple_config({"a": pool.base_urls[0], "b": pool.base_urls[1]})
        for name, replica in zip("ab", pool.replicas, strict=True):
            config["providers"][name]["load_metrics"] = {
                "url": replica.metrics_url,
                "interval": 0.25,
            }
        config["models"]["m"]["strategy"] = "least-busy"
        busy = pool.replicas[0]
        running = RunningTurnout(config).start()
        try:
            with concurrent.futures.ThreadPoolExecutor(3) as others:
                for _ in range(3):
                    others.submit(httpx.post, f"{busy.base_url}/chat/completions", json=CHAT)
                deadline = time.monotonic() + 5
                while busy.waiting < 2:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                time.sleep(0.6)  # a scrape or more has seen the queue
                with running.http() as http:
                    served = [
                        http.post(
                            "/v1/chat/completions", json={**CHAT, "model": "m", "max_tokens": 1}
                        )
                        for _ in range(4)
                    ]
                    metrics = http.get("/metrics").text
            assert {r.headers["x-turnout-deployment"] for r in served} == {"b/b-model"}
            assert 'turnout_backend_requests_waiting{deployment="a/a-model"}' in metrics
            assert 'turnout_backend_load_scrape_failures_total{deployment="b/b-model"} 0.0' in (
                metrics
            )
        finally:
            running.stop()


def test_settings_refuse_what_cannot_be_scraped_and_mask_url_credentials() -> None:
    base = {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}
    for bad in ({"url": "file:///etc/passwd"}, {"url": "http://h/metrics", "format": "tgi"}):
        with pytest.raises(ValueError, match="load_metrics"):
            OpenAISettings.model_validate({**base, "load_metrics": bad})
    config = TurnoutConfig.model_validate(
        {
            "providers": {
                "p": {**base, "load_metrics": {"url": "http://mon:pw-9f3a@h:9/metrics?k=qv-77"}}
            },
            "models": {"m": {"deployments": [{"provider": "p", "model": "x"}]}},
        }
    )
    assert {"pw-9f3a", "qv-77"} <= configured_secrets(config)
