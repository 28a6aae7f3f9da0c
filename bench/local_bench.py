"""The in-process PyTorch sampler against Hugging Face `generate()`, one model, one run.

Loads SmolLM2-135M-Instruct once (float32, CPU) and builds three continuous-batching
`Engine`s over its weights (TorchRunner, TorchSampler, `max_context` the default 2,048):
- **engine**: the default config (`max_slots` 16, `prefill_chunk_tokens` 256 while a
  stream decodes, 1,024 padded tokens while none does, `prefix_cache` 8,192 tokens in
  blocks of 16);
- **engine32**: the same with `max_slots` 32, so that it can take 32 streams;
- **before**: the prefix cache off and chunking effectively off (`prefill_chunk_tokens`
  2**30: every waiting prompt whole, in one batched pass), `max_slots` 16.
Then, interleaved round by round (the order rotates):
1. `model.generate()`, greedy, exactly N new tokens (`min_new_tokens=N` keeps EOS away)
   → tokens/s of one stream: the baseline every ratio is taken against;
2. engine at 1, 4 and 16 streams, engine32 at 16 and 32, before at 1 and 16, all jobs
   submitted at once, greedy, sinks that ignore EOS so each stream makes exactly N tokens
   → aggregate tokens/s (all tokens / submit-to-last-finish), per-stream tokens/s, time to
   first token. The
   prompt is the same in every run, so from the second run on the engine loads its two
   whole blocks (32 of its 39 tokens) from the prefix store; `engine_x16_cold` empties the
   prefix index first, so it shows chunked batched prefill alone;
3. a ~1,500-token system prompt (`shared_prefix.py`): first-token time cold and cached on
   the engine, and on before (which never caches), with the engine's KV-cache bytes.
Once, on an engine of the default config built for it: the KV cache's and the prefix
store's bytes at start and at their peak during 16 streams, the seconds the KV cache takes
to grow from idle to `max_context`, and the process's RSS. Then end to end through
`turnout serve` (`local_http.py`), unless --no-http.

    python bench/local_bench.py [--tokens 64] [--rounds 3] [--http-rounds 2] [--threads 0]

Raw figures go to bench/results/local.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from engine_runs import (
    engine_streams,
    equal_up_to_eos,
    progress,
    rotated,
    run_record,
    stream_record,
)
from shared_prefix import prefix_round, print_prefix_round

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Write a short story about a lighthouse keeper."}]
VARIANTS = (
    "generate",
    "engine_x1",
    "engine_x4",
    "engine_x16",
    "engine_x16_cold",
    "engine32_x16",
    "engine32_x32",
    "before_x1",
    "before_x16",
    "prefix",
)
NO_CHUNKS = 1 << 30


class Bench:
    """The loaded model, the prompt, and the Turnout engines over the same weights."""

    def __init__(self, tokens: int, answer_tokens: int) -> None:
        import torch
        from transformers.generation.streamers import BaseStreamer

        from providers.local.tokenizer import TokenizerAdapter
        from providers.torch.loading import load_causal_lm

        self.torch = torch
        self.streamer_base = BaseStreamer
        self.tokens = tokens
        self.answer_tokens = answer_tokens
        self.model, self.messages = MODEL, MESSAGES
        self.loaded = load_causal_lm(MODEL, device="cpu", dtype="float32")
        self.adapter = TokenizerAdapter(self.loaded.tokenizer)
        self.prompt = self.adapter.render_chat(MESSAGES)  # what the server tokenizes too
        self.input_ids = torch.tensor([self.prompt], dtype=torch.long)
        self.runners: dict[str, Any] = {}
        self.engines = {
            "engine": self.build_engine("engine", 16, cached=True),
            "engine32": self.build_engine("engine32", 32, cached=True),
            "before": self.build_engine("before", 16, cached=False),
        }
        self.reference: list[int] = []  # generate()'s greedy tokens
        self.mismatches: list[str] = []

    def build_engine(self, name: str, slots: int, *, cached: bool) -> Any:
        """An engine over the loaded weights: the default config's prefill chunks and prefix
        cache, or neither (the runner is kept: the KV probe reads its cache)."""
        from providers.local.engine import Engine
        from providers.local.settings import LocalModelSettings
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        defaults = LocalModelSettings()
        runner = TorchRunner.from_loaded(
            self.loaded,
            max_slots=slots,
            prefix_tokens=defaults.prefix_cache.max_tokens if cached else 0,
            block_tokens=defaults.prefix_cache.block_tokens,
        )
        self.max_context = runner.max_context
        chunk = defaults.prefill_chunk_tokens if cached else NO_CHUNKS
        self.runners[name] = runner
        return Engine(runner, TorchSampler("cpu"), name, prefill_chunk_tokens=chunk)

    def kv_probe(self, name: str) -> Any:
        """The current bytes of `name`'s KV cache (its tensors are replaced as it grows)."""
        forward = self.runners[name].forward
        return lambda: int(forward.cache.keys.nbytes + forward.cache.values.nbytes)

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    # 1. Hugging Face generate()

    def generate(self) -> dict[str, Any]:
        clock = _first_token_clock(self.streamer_base)
        gc.collect()
        start = time.perf_counter()
        model: Any = self.loaded.model
        output = model.generate(
            self.input_ids,
            attention_mask=self.torch.ones_like(self.input_ids),
            max_new_tokens=self.tokens,
            min_new_tokens=self.tokens,  # no early stop: EOS is masked until N tokens
            do_sample=False,
            pad_token_id=self.loaded.tokenizer.pad_token_id,
            streamer=clock,
        )
        end = time.perf_counter()
        new = output[0, len(self.prompt) :].tolist()
        if len(new) != self.tokens:
            raise RuntimeError(f"generate() made {len(new)} tokens, not {self.tokens}")
        self.reference = new
        return run_record([stream_record(len(new), start, clock.first, end)], end - start)

    # 2. Turnout's engines

    def engine_run(self, name: str, streams: int, *, cold: bool = False) -> dict[str, Any]:
        engine = self.engines[name]
        if cold:  # the engine is idle between runs: its index may be emptied
            engine.prefix_cache.clear()
        reused = engine.prefix_cache.stats.reused
        outputs, record = engine_streams(engine, [self.prompt] * streams, self.tokens)
        record["reused_tokens"] = engine.prefix_cache.stats.reused - reused
        for tokens in outputs:
            if not equal_up_to_eos(tokens, self.reference, self.adapter.eos_ids):
                self.mismatches.append(f"{name} x{streams}: {tokens} != {self.reference}")
        return record

    def variant(self, name: str) -> dict[str, Any]:
        if name == "generate":
            return self.generate()
        engine, _, streams = name.partition("_x")
        count, _, cold = streams.partition("_")
        return self.engine_run(engine, int(count), cold=cold == "cold")

    # 3. The long shared system prompt

    def prefix(self, tag: str) -> dict[str, Any]:
        engines = {name: self.engines[name] for name in ("before", "engine")}
        probes = {"engine": self.kv_probe("engine")}
        return prefix_round(
            engines,
            self.adapter,
            tag,
            self.answer_tokens,
            self.mismatches,
            probes,
            single=frozenset({"before"}),
        )

    # Memory at the default config

    def memory(self) -> dict[str, Any]:
        """KV-cache and prefix-store bytes of an engine built with the default config, at
        start and at their peak during 16 streams of the bench prompt; how long its KV
        cache takes to grow from idle to `max_context` (what a long prompt arriving at an
        idle engine waits for); the process's RSS around it."""
        import psutil

        from providers.local.engine import Engine
        from providers.local.settings import LocalModelSettings
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        process = psutil.Process()
        defaults = LocalModelSettings()
        gc.collect()
        rss_before = process.memory_info().rss
        runner = TorchRunner.from_loaded(
            self.loaded,
            max_slots=defaults.max_slots,
            max_context=defaults.max_context,
            prefix_tokens=defaults.prefix_cache.max_tokens,
            block_tokens=defaults.prefix_cache.block_tokens,
        )
        engine = Engine(
            runner,
            TorchSampler("cpu"),
            "memory",
            prefill_chunk_tokens=defaults.prefill_chunk_tokens,
        )
        cache = runner.forward.cache
        rss_peak = [process.memory_info().rss]

        def kv_bytes() -> int:
            rss_peak[0] = max(rss_peak[0], process.memory_info().rss)
            return int(runner.forward.cache.keys.nbytes + runner.forward.cache.values.nbytes)

        figures: dict[str, Any] = {
            "max_slots": runner.max_slots,
            "max_context": runner.max_context,
            "kv_bytes_at_start": kv_bytes(),
            "kv_capacity_at_start": cache.capacity,
            "kv_bytes_upper_bound": kv_bytes() // cache.capacity * runner.max_context,
            "prefix_store_bytes": int(
                runner.forward.store.keys.nbytes + runner.forward.store.values.nbytes
            ),
            "rss_before_engine": rss_before,
            "rss_after_engine": process.memory_info().rss,
        }
        _, streams16 = engine_streams(engine, [self.prompt] * 16, self.tokens, probe=kv_bytes)
        figures["kv_bytes_peak_16_streams"] = streams16["probe_peak"]
        figures["rss_peak_16_streams"] = rss_peak[0]
        engine.close()  # the engine thread is gone: the bench may drive the cache itself
        started = time.perf_counter()
        runner.forward.cache.ensure(runner.max_context)
        figures["kv_grow_to_max_context_s"] = time.perf_counter() - started
        figures["kv_bytes_grown"] = kv_bytes()
        return figures


def _first_token_clock(base: type) -> Any:
    class FirstTokenClock(base):  # type: ignore[misc]
        """generate()'s streamer: put() gets the prompt first, then each new token."""

        def __init__(self) -> None:
            self.calls = 0
            self.first: float | None = None

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.first = time.perf_counter()

        def end(self) -> None:
            pass

    return FirstTokenClock()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream (N)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved in-process rounds")
    parser.add_argument(
        "--answer-tokens", type=int, default=8, help="tokens per long-system-prompt answer"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch intra-op threads here and in the server (OMP_NUM_THREADS); 0: torch's own",
    )
    parser.add_argument("--http-rounds", type=int, default=2, help="rounds through HTTP")
    parser.add_argument("--no-http", action="store_true", help="skip the `turnout serve` part")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "local.json")
    args = parser.parse_args()
    if args.threads:
        # Before torch is imported (here and in the server, which inherits the environment).
        os.environ["OMP_NUM_THREADS"] = str(args.threads)

    started = time.perf_counter()
    bench = Bench(args.tokens, args.answer_tokens)
    torch = bench.torch
    environment = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "answer_tokens": args.answer_tokens,
        "prompt_tokens": len(bench.prompt),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_start": os.getloadavg(),
        "commit": git_state(),
        "max_context": bench.max_context,
    }
    print(f"# {json.dumps(environment)}")
    print("warm-up ...", flush=True)
    bench.generate()
    for name in ("engine_x1", "engine_x16", "engine32_x32", "before_x1", "before_x16"):
        bench.variant(name)
    bench.prefix("Warm-up")

    variants = list(VARIANTS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants if name != "prefix"}
    prefix_runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for name in rotated(variants, round_index):
            if name == "prefix":
                result = bench.prefix(f"Round {round_index}")
                prefix_runs.append(result)
                print_prefix_round(f"round {round_index}", result)
                continue
            record = bench.variant(name)
            runs[name].append(record)
            progress(f"round {round_index} {name:>15}", record)
    environment["load_average_after_rounds"] = os.getloadavg()

    print("memory at the default config ...", flush=True)
    results = {
        "environment": environment,
        "rounds": runs,
        "prefix_rounds": [_without_tokens(r) for r in prefix_runs],
        "memory": bench.memory(),
        "http_phase": {},
        "greedy_mismatches": bench.mismatches,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))  # kept should the HTTP phase fail
    if not args.no_http:
        from local_http import http_phase

        results["http_phase"] = http_phase(bench, args.tokens, args.http_rounds)
    bench.close()
    results["total_seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(results, indent=2))
    from local_report import report

    report(results)
    print(f"\nwhole run {results['total_seconds']:.0f} s; raw results: {args.out}")


def git_state() -> str:
    """HEAD, and which files under providers/ differ from it (other work in the tree)."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--short", "providers"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split("\n")
    changed = [line.strip() for line in dirty if line.strip()]
    return f"{head} + uncommitted {changed}" if changed else head


def _without_tokens(result: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name: {kind: {k: v for k, v in f.items() if k != "tokens"} for kind, f in figures.items()}
        for name, figures in result.items()
    }


if __name__ == "__main__":
    main()
