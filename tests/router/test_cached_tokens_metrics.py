"""Cached prompt tokens a backend reports (`usage.prompt_tokens_details.cached_tokens`) are
relayed to the client as they came and counted in `/metrics` per model and deployment, for
JSON answers, streams and completions, against real loopback replicas with prefix caches."""

from __future__ import annotations

import anthropic
from prometheus_client.parser import text_string_to_metric_families

from router.metrics import cached_tokens
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply
from tests.fakes.replica_pool import ReplicaPool
from tests.turnout_server import RunningTurnout, simple_config

SYSTEM = "Answer as a ship's navigator would, briefly and exactly. " * 12


def samples(text: str, name: str, **match: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["model"], s.labels["deployment"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and match.items() <= s.labels.items()
    }


def test_cached_tokens_are_relayed_and_counted_per_deployment() -> None:
    with ReplicaPool(2) as pool:
        config = simple_config({"a": pool.base_urls[0], "b": pool.base_urls[1]})
        config["models"] = {
            "m": {"deployments": [{"provider": "a", "model": "r"}]},
            "n": {"deployments": [{"provider": "b", "model": "r"}]},
        }
        running = RunningTurnout(config).start()
        try:
            client = running.client()
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "Where are we?"},
            ]
            seen = []
            for _ in range(2):
                answer = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
                assert answer.usage is not None
                assert answer.usage.prompt_tokens_details is not None
                seen.append(answer.usage.prompt_tokens_details.cached_tokens)
            stream = client.chat.completions.create(
                model="m",
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                stream_options={"include_usage": True},
            )
            [usage] = [c.usage for c in stream if c.usage is not None]
            assert usage.prompt_tokens_details is not None
            seen.append(usage.prompt_tokens_details.cached_tokens)
            for _ in range(2):
                client.completions.create(model="n", prompt=SYSTEM)
            with running.http() as http:
                text = http.get("/metrics").text
        finally:
            running.stop()
        first, second = pool.replicas
        assert seen == first.per_request_cached  # relayed as the replica reported them
        assert seen[0] == 0
        assert seen[1] > 0
        cached = samples(text, "turnout_prompt_cached_tokens_total")
        assert cached[("m", "a/r")] == first.cached_tokens == sum(seen)
        assert cached[("n", "b/r")] == second.cached_tokens > 0
        prompts = samples(text, "turnout_tokens_total", kind="prompt")  # the hit rate's base
        assert prompts[("m", "a/r")] == first.prompt_tokens > cached[("m", "a/r")]


def test_cached_tokens_reads_either_usage_shape() -> None:
    assert cached_tokens({"prompt_tokens_details": {"cached_tokens": 7}}) == 7
    assert cached_tokens({"cache_read_input_tokens": 5, "input_tokens": 3}) == 5
    assert cached_tokens({"prompt_tokens": 9}) == 0
    assert cached_tokens({"prompt_tokens_details": None}) == 0


def test_anthropic_cache_reads_are_relayed_as_cached_tokens_and_counted() -> None:
    """An Anthropic deployment's `cache_read_input_tokens`: an OpenAI client sees them as
    `prompt_tokens_details.cached_tokens`; a Messages client gets them untouched (JSON and
    stream); /metrics counts them each time."""
    cache = {"cache_creation_input_tokens": 40, "cache_read_input_tokens": 900}
    with FakeAnthropicUpstream() as claude:
        providers = {"claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": "k"}}
        models = {"c": {"deployments": [{"provider": "claude", "model": "claude-up"}]}}
        running = RunningTurnout(simple_config({}, providers=providers, models=models)).start()
        try:
            claude.enqueue(*(Reply(text="ok", usage=cache) for _ in range(3)))
            answer = running.client().chat.completions.create(
                model="c", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.usage is not None
            assert answer.usage.prompt_tokens_details is not None
            assert answer.usage.prompt_tokens_details.cached_tokens == 900
            messages = anthropic.Anthropic(base_url=running.url, api_key="k", max_retries=0)
            message = messages.messages.create(
                model="c", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
            assert message.usage.cache_read_input_tokens == 900
            with messages.messages.stream(
                model="c", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                assert stream.get_final_message().usage.cache_read_input_tokens == 900
            with running.http() as http:
                text = http.get("/metrics").text
        finally:
            running.stop()
    assert samples(text, "turnout_prompt_cached_tokens_total")[("c", "claude/claude-up")] == 2700
