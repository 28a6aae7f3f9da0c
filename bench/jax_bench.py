"""The in-process JAX sampler beside the PyTorch one: one model, one process, one run.

Loads SmolLM2-135M-Instruct once (float32, CPU) through the torch loader, copies its
weights into JAX, and builds two continuous-batching `Engine`s over the same weights, both
with the default config (`max_slots` 16, `max_context` 2,048, `prefill_chunk_tokens` 256,
`prefix_cache` 8,192 tokens in blocks of 16): TorchRunner + TorchSampler and JaxRunner +
JaxSampler. Then:
1. compile: `compile_ahead`, as `kind: jax` does at load — every prefill pass shape,
   decode batch x attention window bucket, slot copy and prefix-store block copy, then the
   sampler's steps for every batch size — timed; then the JAX engine's first 1-stream and
   16-stream runs and its first long-system-prompt round, counting any XLA compile they
   still trigger (jax.monitoring's events, every thread: expected 0);
2. interleaved rounds (the order rotates each round) of greedy runs, exactly N new tokens
   per stream (sinks ignore EOS), all jobs submitted at once, at 1 and 16 concurrent
   streams on each engine → aggregate tokens/s (all tokens / submit-to-last-finish),
   per-stream tokens/s, time to first token; and of the ~1,500-token system prompt's
   first-token time, cold and cached, on each engine (`shared_prefix.py`).
Every JAX stream's greedy tokens are checked against the torch engine's (equal up to the
first EOS), the cached answers too. The KV cache's and the prefix store's bytes are read
from their shapes (the JAX ones are allocated whole at start). No network is used.

    python bench/jax_bench.py [--tokens 64] [--rounds 3]

Raw figures go to bench/results/jax.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from engine_runs import engine_streams, equal_up_to_eos, median_of, progress, rotated
from local_bench import MESSAGES, MODEL, git_state
from shared_prefix import prefix_round, print_prefix_round

HERE = Path(__file__).resolve().parent
STREAMS = (1, 16)
FRAMEWORKS = ("torch", "jax")
MIB = 1 << 20


class Engines:
    """Both engines over one model's weights, and the prompt they all decode from."""

    def __init__(self, tokens: int, answer_tokens: int) -> None:
        import jax
        import jax.numpy as jnp

        from providers.jax.runner import JaxRunner
        from providers.jax.sampling import JaxSampler
        from providers.jax.weights import jax_llama
        from providers.local.engine import Engine
        from providers.local.settings import LocalModelSettings
        from providers.local.tokenizer import TokenizerAdapter
        from providers.torch.loading import load_causal_lm
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        self.tokens = tokens
        self.answer_tokens = answer_tokens
        defaults = LocalModelSettings()
        loaded = load_causal_lm(MODEL, device="cpu", dtype="float32")
        self.adapter = TokenizerAdapter(loaded.tokenizer)
        self.prompt = self.adapter.render_chat(MESSAGES)
        device = jax.devices()[0]
        self.device = str(device)
        started = time.perf_counter()
        torch_runner = TorchRunner.from_loaded(
            loaded,
            max_slots=defaults.max_slots,
            prefix_tokens=defaults.prefix_cache.max_tokens,
            block_tokens=defaults.prefix_cache.block_tokens,
        )
        self.max_slots, self.max_context = torch_runner.max_slots, torch_runner.max_context
        weights, shape = jax_llama(
            loaded.model, max_context=self.max_context, dtype=jnp.float32, device=device
        )
        self.convert_s = time.perf_counter() - started
        self.jax_runner = JaxRunner(
            weights,
            shape,
            max_slots=self.max_slots,
            max_context=self.max_context,
            device=device,
            prefill_chunk_tokens=defaults.prefill_chunk_tokens,
            prefix_cache=defaults.prefix_cache,
        )
        jax_sampler = JaxSampler(device)
        started = time.perf_counter()
        self.jax_runner.compile_ahead()
        self.model_compile_s = time.perf_counter() - started
        jax_sampler.compile_ahead(self.max_slots, shape.vocab_size)
        self.sampler_compile_s = time.perf_counter() - started - self.model_compile_s
        chunk = defaults.prefill_chunk_tokens
        self.engines = {
            "torch": Engine(torch_runner, TorchSampler("cpu"), "torch", prefill_chunk_tokens=chunk),
            "jax": Engine(self.jax_runner, jax_sampler, "jax", prefill_chunk_tokens=chunk),
        }
        forward = torch_runner.forward
        self.torch_kv = lambda: int(forward.cache.keys.nbytes + forward.cache.values.nbytes)
        self.memory = {
            "torch_kv_bytes_at_start": self.torch_kv(),
            "torch_prefix_store_bytes": int(
                forward.store.keys.nbytes + forward.store.values.nbytes
            ),
            # [layers, slots, context, kv_heads, head_dim] keys and values, and the store's
            # [layers, blocks, block_tokens, kv_heads, head_dim]: allocated whole at start.
            "jax_kv_bytes": 2
            * 4
            * shape.layers
            * self.max_slots
            * self.max_context
            * shape.kv_heads
            * shape.head_dim,
            "jax_prefix_store_bytes": 2
            * 4
            * shape.layers
            * self.jax_runner.store_blocks
            * self.jax_runner.block_tokens
            * shape.kv_heads
            * shape.head_dim,
        }
        self.reference: list[int] = []  # the torch engine's greedy tokens
        self.mismatches: list[str] = []

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def run(self, framework: str, streams: int) -> dict[str, Any]:
        engine = self.engines[framework]
        reused = engine.prefix_cache.stats.reused
        probe = self.torch_kv if framework == "torch" else None
        outputs, record = engine_streams(engine, [self.prompt] * streams, self.tokens, probe=probe)
        record["reused_tokens"] = engine.prefix_cache.stats.reused - reused
        for tokens in outputs:
            if not self.reference:
                self.reference = tokens
            elif not equal_up_to_eos(tokens, self.reference, self.adapter.eos_ids):
                self.mismatches.append(f"{framework} x{streams}: {tokens} != {self.reference}")
        return record

    def prefix(self, tag: str) -> dict[str, Any]:
        return prefix_round(
            self.engines,
            self.adapter,
            tag,
            self.answer_tokens,
            self.mismatches,
            {"torch": self.torch_kv},
        )


def compile_phase(engines: Engines) -> dict[str, Any]:
    """The JAX engine's first runs after `compile_ahead` (1 and 16 streams, one
    long-system-prompt round on both engines): wall time, and every XLA compile they still
    caused (any thread, model and sampler steps alike)."""
    import jax

    compiles: list[float] = []

    def listener(event: str, duration: float, **details: str | int) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(duration)

    phase: dict[str, Any] = {}
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for streams in STREAMS:
            before = len(compiles)
            result = engines.run("jax", streams)
            phase[f"jax_x{streams}_first_run"] = {
                "wall_s": result["wall_s"],
                "executables_compiled": len(compiles) - before,
                "compile_s": sum(compiles[before:]),
            }
            print(
                f"jax x{streams} first run: {result['wall_s']:.1f} s wall, "
                f"{len(compiles) - before} executables compiled during it",
                flush=True,
            )
        before = len(compiles)
        started = time.perf_counter()
        engines.prefix("Warm-up")
        phase["prefix_first_round"] = {
            "wall_s": time.perf_counter() - started,
            "executables_compiled": len(compiles) - before,
            "compile_s": sum(compiles[before:]),
        }
        print(f"first long-prompt round: {len(compiles) - before} executables compiled", flush=True)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream (N)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--answer-tokens", type=int, default=8, help="tokens per long-system-prompt answer"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "jax.json")
    args = parser.parse_args()

    started = time.perf_counter()
    engines = Engines(args.tokens, args.answer_tokens)
    import jax
    import torch

    environment = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "answer_tokens": args.answer_tokens,
        "prompt_tokens": len(engines.prompt),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__,
        "jax_device": engines.device,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_at_start": os.getloadavg(),
        "commit": git_state(),
        "max_slots": engines.max_slots,
        "max_context": engines.max_context,
        "weights_to_jax_s": engines.convert_s,
    }
    print(f"# {json.dumps(environment)}")
    engines.run("torch", 1)  # the reference tokens, and torch's own warm-up
    compiled = compile_phase(engines)
    engines.run("torch", 16)

    variants: list[Any] = [(framework, n) for n in STREAMS for framework in FRAMEWORKS]
    variants.append("prefix")
    runs: dict[str, list[dict[str, Any]]] = {f"{f}_x{n}": [] for f, n in variants[:-1]}
    prefix_runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        for variant in rotated(variants, round_index):
            if variant == "prefix":
                result = engines.prefix(f"Round {round_index}")
                prefix_runs.append(result)
                print_prefix_round(f"round {round_index}", result)
                continue
            framework, streams = variant
            record = engines.run(framework, streams)
            runs[f"{framework}_x{streams}"].append(record)
            progress(f"round {round_index} {framework:>5} x{streams:<2}", record)
    environment["load_average_after_rounds"] = os.getloadavg()
    engines.close()

    stats = engines.jax_runner.steps.stats
    results = {
        "environment": environment,
        "compile": compiled,
        "compile_ahead": {
            "model_executables": stats.count,
            "model_compile_s": stats.seconds,
            "model_wall_s": engines.model_compile_s,
            "sampler_wall_s": engines.sampler_compile_s,
        },
        "rounds": runs,
        "prefix_rounds": [
            {
                name: {kind: {k: v for k, v in f.items() if k != "tokens"} for kind, f in r.items()}
                for name, r in result.items()
            }
            for result in prefix_runs
        ],
        "memory": engines.memory,
        "greedy_mismatches": engines.mismatches,
        "total_seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    report(runs, results)
    print(f"\nwhole run {results['total_seconds']:.0f} s; raw results: {args.out}")


def report(runs: dict[str, list[dict[str, Any]]], results: dict[str, Any]) -> None:
    from local_report import prefix_medians

    print(f"\n## interleaved rounds (medians of {len(runs['torch_x1'])})")
    print(
        "| engine | streams | aggregate tok/s (range) | per-stream tok/s | TTFT p50/max ms "
        "| reused | x torch | x own x1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, measured in runs.items():
        framework, streams = name.split("_x")
        aggregate = median_of(measured, "aggregate_tokens_per_s")
        torch_aggregate = median_of(runs[f"torch_x{streams}"], "aggregate_tokens_per_s")
        own_x1 = median_of(runs[f"{framework}_x1"], "aggregate_tokens_per_s")
        low = min(r["aggregate_tokens_per_s"] for r in measured)
        high = max(r["aggregate_tokens_per_s"] for r in measured)
        print(
            f"| {framework} | {streams} | {aggregate:.1f} ({low:.1f}-{high:.1f}) "
            f"| {median_of(measured, 'per_stream_tokens_per_s'):.1f} "
            f"| {median_of(measured, 'ttft_p50_s') * 1000:.0f} / "
            f"{median_of(measured, 'ttft_max_s') * 1000:.0f} | {measured[-1]['reused_tokens']} "
            f"| {aggregate / torch_aggregate:.2f} | {aggregate / own_x1:.2f} |"
        )
    prefix = prefix_medians(results["prefix_rounds"])
    print(f"\n## 1,500-token system prompt (medians of {len(results['prefix_rounds'])}), TTFT ms")
    print("| engine | prompt tokens | cold | cached | reused | cached / cold |")
    print("|---|---|---|---|---|---|")
    for name, figures in prefix.items():
        print(
            f"| {name} | {figures['prompt_tokens']} | {figures['cold'] * 1000:.0f} "
            f"| {figures['cached'] * 1000:.0f} | {figures['reused']} "
            f"| {figures['cached'] / figures['cold']:.2f} |"
        )
    print(
        f"  jax / torch cold: {prefix['jax']['cold'] / prefix['torch']['cold']:.2f}, "
        f"cached: {prefix['jax']['cached'] / prefix['torch']['cached']:.2f}"
    )
    print("\nmemory (MiB):")
    for key, value in results["memory"].items():
        print(f"  {key}: {value / MIB:.0f}")
    print(f"  torch KV peak during the long prompts: {prefix['torch']['kv_peak'] / MIB:.0f}")
    ahead = results["compile_ahead"]
    print(
        f"\nJAX compile ahead: {ahead['model_executables']} model executables in "
        f"{ahead['model_wall_s']:.1f} s, sampler steps {ahead['sampler_wall_s']:.1f} s "
        f"(weights to JAX: {results['environment']['weights_to_jax_s']:.1f} s)"
    )
    for name, figures in results["compile"].items():
        print(
            f"  {name}: {figures['wall_s']:.1f} s wall, {figures['executables_compiled']} compiles"
        )
    agreement = "; ".join(results["greedy_mismatches"]) or "yes"
    print(f"JAX greedy tokens equal torch's up to EOS (cached answers too): {agreement}")


if __name__ == "__main__":
    main()
