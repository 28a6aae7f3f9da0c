"""A pool of real loopback HTTP servers, each modelling one replica of a serving engine
(vLLM, SGLang, llama.cpp) closely enough for cache-aware routing to matter:

- an LRU prefix cache of fixed-size blocks (`tests.fakes.prefix_cache`) with a fixed
  capacity; a request's cached leading blocks are not prefilled again;
- prefill time per uncached token and decode time per generated token (`asyncio.sleep`);
- at most `max_running` requests at once, the rest queued in arrival order;
- `/metrics` in the engine's Prometheus names (`metrics_format`), and the cache hits in
  each answer's `usage.prompt_tokens_details.cached_tokens`;
- OpenAI-compatible `/v1/chat/completions` (JSON and SSE) and `/v1/completions`,
  `/v1/models`, and `GET /stats` (its counters as JSON, for a bench in another process).

The pool runs its own event loop in a daemon thread, so sync and async tests and a bench
script can all use it::

    with ReplicaPool(4, ReplicaSettings(capacity_blocks=256)) as pool:
        pool.base_urls  # one per replica, up to /v1
        pool.replicas[0].served, pool.replicas[0].cached_tokens
        pool.kill(1); pool.revive(1); pool.set_metrics(2, "hang")

`python -m tests.fakes.replica_pool --replicas 4` serves one until interrupted, printing
its base URLs (one a line) once they listen.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, TypeVar

import orjson
from aiohttp import web

from tests.fakes.prefix_cache import PrefixCache, render_prompt, tokens_of

MetricsFormat = Literal["vllm", "sglang", "llamacpp"]
# live: the figures now; frozen: those of the moment it froze; hang: never answers;
# error: answers 500.
MetricsMode = Literal["live", "frozen", "hang", "error"]
T = TypeVar("T")


@dataclass(frozen=True)
class ReplicaSettings:
    block_chars: int = 64
    capacity_blocks: int = 1024
    prefill_s_per_token: float = 0.0
    decode_s_per_token: float = 0.0
    max_running: int = 4
    output_tokens: int = 4
    metrics_format: MetricsFormat = "vllm"


@dataclass
class Replica:
    """One replica's engine state and counters (read them from any thread)."""

    name: str
    settings: ReplicaSettings
    port: int = 0
    cache: PrefixCache = field(init=False)
    running: int = 0
    waiting: int = 0
    blocks_in_use: int = 0  # prompt blocks of the requests running (the KV they hold)
    served: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    per_request_cached: list[int] = field(default_factory=list)
    block_queries: int = 0
    block_hits: int = 0
    metrics_scrapes: int = 0
    metrics_mode: MetricsMode = "live"
    frozen_metrics: str = ""
    alive: bool = True
    _slots: asyncio.Semaphore | None = None
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.cache = PrefixCache(self.settings.capacity_blocks, self.settings.block_chars)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "served": self.served,
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "block_queries": self.block_queries,
            "block_hits": self.block_hits,
            "running": self.running,
            "waiting": self.waiting,
            "cached_blocks": len(self.cache),
        }

    # The engine: queue, prefill, decode.

    async def _admit(self, prompt: str) -> tuple[int, int]:
        """Wait for a slot, then prefill: (prompt tokens, cached tokens)."""
        assert self._slots is not None
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.blocks_in_use += len(prompt) // self.settings.block_chars
        blocks, hit = self.cache.admit(prompt)
        prompt_tokens = tokens_of(len(prompt))
        cached = min(prompt_tokens, tokens_of(hit * self.settings.block_chars))
        self.block_queries += blocks
        self.block_hits += hit
        self.prompt_tokens += prompt_tokens
        self.cached_tokens += cached
        self.per_request_cached.append(cached)
        await _sleep((prompt_tokens - cached) * self.settings.prefill_s_per_token)
        return prompt_tokens, cached

    def _release(self, prompt: str) -> None:
        assert self._slots is not None
        self.running -= 1
        self.blocks_in_use -= len(prompt) // self.settings.block_chars
        self.served += 1
        self._slots.release()

    def _output(self, body: dict[str, Any]) -> int:
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        out = self.settings.output_tokens
        return min(out, limit) if isinstance(limit, int) and limit > 0 else out

    # HTTP.

    async def generate(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        chat = request.path.endswith("/chat/completions")
        prompt = render_prompt(body)
        out = self._output(body)
        if body.get("stream"):
            return await self._stream(request, body, chat, prompt, out)
        prompt_tokens, cached = await self._admit(prompt)
        try:
            await _sleep(out * self.settings.decode_s_per_token)
        finally:
            self._release(prompt)
        text = _text(self.name, out)
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        answer = _envelope(body, chat, stream=False)
        answer["choices"] = [choice]
        answer["usage"] = _usage(prompt_tokens, cached, out)
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chat: bool, prompt: str, out: int
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        prompt_tokens, cached = await self._admit(prompt)
        try:
            for i in range(out):
                if i:
                    await _sleep(self.settings.decode_s_per_token)
                piece = _text(self.name, 1) if i == 0 else " x"
                if chat:
                    delta = {"content": piece, **({"role": "assistant"} if i == 0 else {})}
                    choice: dict[str, Any] = {"index": 0, "delta": delta}
                else:
                    choice = {"index": 0, "text": piece}
                choice["finish_reason"] = "length" if i == out - 1 else None
                await response.write(_event(body, chat, choices=[choice]))
        finally:
            self._release(prompt)
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            usage = _usage(prompt_tokens, cached, out)
            await response.write(_event(body, chat, choices=[], usage=usage))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": "replica", "object": "model", "created": 0, "owned_by": "pool"}]
        return web.json_response({"object": "list", "data": data})

    async def metrics(self, request: web.Request) -> web.Response:
        self.metrics_scrapes += 1
        mode = self.metrics_mode
        if mode == "hang":
            await asyncio.Event().wait()
        if mode == "error":
            return web.Response(status=500, text="metrics unavailable")
        text = self.frozen_metrics if mode == "frozen" else self.metrics_text()
        return web.Response(text=text, content_type="text/plain")

    async def stats_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    def metrics_text(self) -> str:
        # As vLLM counts it (BlockPool.get_usage): blocks held by running requests; blocks
        # only cached (free to reuse or evict) are not in use.
        usage = min(1.0, self.blocks_in_use / self.settings.capacity_blocks)
        fmt = self.settings.metrics_format
        if fmt == "sglang":
            rows = [
                ("sglang:num_queue_reqs", "gauge", self.waiting),
                ("sglang:num_running_reqs", "gauge", self.running),
                ("sglang:token_usage", "gauge", usage),
            ]
        elif fmt == "llamacpp":
            rows = [
                ("llamacpp:requests_deferred", "gauge", self.waiting),
                ("llamacpp:requests_processing", "gauge", self.running),
                ("llamacpp:kv_cache_usage_ratio", "gauge", usage),
            ]
        else:
            rows = [
                ("vllm:num_requests_waiting", "gauge", self.waiting),
                ("vllm:num_requests_running", "gauge", self.running),
                ("vllm:kv_cache_usage_perc", "gauge", usage),
                ("vllm:prefix_cache_queries", "counter", self.block_queries),
                ("vllm:prefix_cache_hits", "counter", self.block_hits),
            ]
        label = '{model_name="replica"}' if fmt != "llamacpp" else ""
        lines = []
        for name, kind, value in rows:
            sample = f"{name}_total" if kind == "counter" else name
            lines += [f"# HELP {name} {name}", f"# TYPE {name} {kind}"]
            lines.append(f"{sample}{label} {float(value)}")
        return "\n".join(lines) + "\n"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.generate)
        app.router.add_post("/v1/completions", self.generate)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/stats", self.stats_handler)
        return app

    async def serve(self) -> None:
        self._slots = self._slots or asyncio.Semaphore(self.settings.max_running)
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._runner = runner
        self.alive = True

    async def stop(self) -> None:
        """As a crash seen from outside: the port closes and open connections drop."""
        runner, self._runner = self._runner, None
        self.alive = False
        if runner is not None:
            await runner.cleanup()


class ReplicaPool:
    def __init__(self, replicas: int, settings: ReplicaSettings | None = None) -> None:
        settings = settings or ReplicaSettings()
        self.replicas = [Replica(f"replica-{i}", settings) for i in range(replicas)]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ReplicaPool:
        self._thread.start()
        for replica in self.replicas:
            self._call(replica.serve())
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _shutdown(self) -> None:
        for replica in self.replicas:
            await replica.stop()
        # Whatever still runs (a hung /metrics answer) ends with the pool.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    @property
    def base_urls(self) -> list[str]:
        return [r.base_url for r in self.replicas]

    def kill(self, index: int) -> None:
        self._call(self.replicas[index].stop())

    def revive(self, index: int) -> None:
        """Listening again on the same port, its cache kept (a restart would drop it:
        `clear_cache` for that)."""
        self._call(self.replicas[index].serve())

    def clear_cache(self, index: int) -> None:
        self._loop.call_soon_threadsafe(self.replicas[index].cache.clear)

    def set_metrics(self, index: int, mode: MetricsMode) -> None:
        replica = self.replicas[index]
        if mode == "frozen":
            replica.frozen_metrics = replica.metrics_text()
        replica.metrics_mode = mode

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)


_ids = itertools.count()


def _text(name: str, tokens: int) -> str:
    return " ".join([name] + ["x"] * (tokens - 1))


def _usage(prompt: int, cached: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _envelope(body: dict[str, Any], chat: bool, *, stream: bool) -> dict[str, Any]:
    kind = "chat.completion" if chat else "text_completion"
    return {
        "id": f"cmpl-pool-{next(_ids)}",
        "object": f"{kind}.chunk" if stream and chat else kind,
        "created": int(time.time()),
        "model": body.get("model", "replica"),
    }


def _event(body: dict[str, Any], chat: bool, **fields: Any) -> bytes:
    payload = _envelope(body, chat, stream=True) | fields
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--capacity-blocks", type=int, default=1024)
    parser.add_argument("--block-chars", type=int, default=64)
    parser.add_argument("--max-running", type=int, default=4)
    parser.add_argument("--prefill-ms-per-token", type=float, default=0.0)
    parser.add_argument("--decode-ms-per-token", type=float, default=0.0)
    parser.add_argument("--output-tokens", type=int, default=4)
    args = parser.parse_args()
    settings = ReplicaSettings(
        block_chars=args.block_chars,
        capacity_blocks=args.capacity_blocks,
        prefill_s_per_token=args.prefill_ms_per_token / 1000,
        decode_s_per_token=args.decode_ms_per_token / 1000,
        max_running=args.max_running,
        output_tokens=args.output_tokens,
    )
    with ReplicaPool(args.replicas, settings) as pool:
        print("\n".join(pool.base_urls), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
