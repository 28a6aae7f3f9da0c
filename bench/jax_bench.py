"""The in-process JAX sampler beside the PyTorch one: one model, one process, one run.

Loads SmolLM2-135M-Instruct once (float32, CPU) through the torch loader, copies its
weights into JAX, and builds two continuous-batching `Engine`s over the same weights:
TorchRunner + TorchSampler and JaxRunner + JaxSampler (`max_slots` 16, `max_context` 512).
Then:
1. compile: `compile_ahead`, as `kind: jax` does at load — every prefill bucket, decode
   batch x attention window bucket and slot copy, then the sampler's steps for every
   batch size — timed; then the JAX engine's first 1-stream and 16-stream runs, counting
   any XLA compile they still trigger (jax.monitoring's events, every thread: expected 0);
2. interleaved rounds (the order rotates each round) of greedy runs, exactly N new tokens
   per stream (sinks ignore EOS), all jobs submitted at once, at 1 and 16 concurrent
   streams on each engine → aggregate tokens/s (all tokens / submit-to-last-finish),
   per-stream tokens/s, time to first token.
Every JAX stream's greedy tokens are checked against the torch engine's (equal up to the
first EOS). No network is used.

    python bench/jax_bench.py [--tokens 64] [--rounds 3]

Raw figures go to bench/results/jax.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from local_bench import (
    MAX_CONTEXT,
    MAX_SLOTS,
    MESSAGES,
    MODEL,
    engine_streams,
    median_of,
    progress,
)

HERE = Path(__file__).resolve().parent
STREAMS = (1, 16)
FRAMEWORKS = ("torch", "jax")


class Engines:
    """Both engines over one model's weights, and the prompt they all decode from."""

    def __init__(self, tokens: int) -> None:
        import jax
        import jax.numpy as jnp

        from providers.jax.runner import JaxRunner
        from providers.jax.sampling import JaxSampler
        from providers.jax.weights import jax_llama
        from providers.local.engine import Engine
        from providers.local.tokenizer import TokenizerAdapter
        from providers.torch.loading import load_causal_lm
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        self.tokens = tokens
        loaded = load_causal_lm(MODEL, device="cpu", dtype="float32")
        self.adapter = TokenizerAdapter(loaded.tokenizer)
        self.prompt = self.adapter.render_chat(MESSAGES)
        device = jax.devices()[0]
        self.device = str(device)
        started = time.perf_counter()
        weights, shape = jax_llama(
            loaded.model, max_context=MAX_CONTEXT, dtype=jnp.float32, device=device
        )
        self.convert_s = time.perf_counter() - started
        self.jax_runner = JaxRunner(
            weights, shape, max_slots=MAX_SLOTS, max_context=MAX_CONTEXT, device=device
        )
        jax_sampler = JaxSampler(device)
        started = time.perf_counter()
        self.jax_runner.compile_ahead()
        self.model_compile_s = time.perf_counter() - started
        jax_sampler.compile_ahead(MAX_SLOTS, shape.vocab_size)
        self.sampler_compile_s = time.perf_counter() - started - self.model_compile_s
        torch_runner = TorchRunner.from_loaded(loaded, max_slots=MAX_SLOTS, max_context=MAX_CONTEXT)
        self.engines = {
            "torch": Engine(torch_runner, TorchSampler("cpu"), "bench-torch"),
            "jax": Engine(self.jax_runner, jax_sampler, "bench-jax"),
        }
        self.reference: list[int] = []  # the torch engine's greedy tokens
        self.mismatches: list[str] = []

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()

    def run(self, framework: str, streams: int) -> dict[str, Any]:
        engine = self.engines[framework]
        outputs, record = engine_streams(engine, self.prompt, self.tokens, streams)
        for tokens in outputs:
            self._check_greedy(tokens, f"{framework} x{streams}")
        return record

    def _check_greedy(self, tokens: list[int], where: str) -> None:
        if not self.reference:
            self.reference = tokens
            return
        for ours, theirs in zip(tokens, self.reference, strict=True):
            if ours != theirs:
                self.mismatches.append(f"{where}: {ours} != {theirs}")
                return
            if ours in self.adapter.eos_ids:
                return


def compile_phase(engines: Engines) -> dict[str, Any]:
    """The JAX engine's first runs after `compile_ahead`: wall time, and every XLA compile
    they still caused (any thread, model and sampler steps alike)."""
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
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per stream (N)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "jax.json")
    args = parser.parse_args()

    started = time.perf_counter()
    engines = Engines(args.tokens)
    if len(engines.prompt) + args.tokens > MAX_CONTEXT:
        parser.error(f"--tokens {args.tokens} does not fit max_context {MAX_CONTEXT}")
    import jax
    import torch

    environment = {
        "tokens": args.tokens,
        "rounds": args.rounds,
        "prompt_tokens": len(engines.prompt),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__,
        "jax_device": engines.device,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "max_slots": MAX_SLOTS,
        "max_context": MAX_CONTEXT,
        "weights_to_jax_s": engines.convert_s,
    }
    print(f"# {json.dumps(environment)}")
    engines.run("torch", 1)  # the reference tokens, and torch's own warm-up
    compiled = compile_phase(engines)
    engines.run("torch", 16)

    variants = [(framework, n) for n in STREAMS for framework in FRAMEWORKS]
    runs: dict[str, list[dict[str, Any]]] = {f"{f}_x{n}": [] for f, n in variants}
    for round_index in range(args.rounds):
        shift = round_index % len(variants)
        for framework, streams in variants[shift:] + variants[:shift]:
            result = engines.run(framework, streams)
            runs[f"{framework}_x{streams}"].append(result)
            progress(f"round {round_index} {framework:>5} x{streams:<2}", result)
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
        "greedy_mismatches": engines.mismatches,
        "total_seconds": time.perf_counter() - started,
    }
    report(runs, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwhole run {results['total_seconds']:.0f} s; raw results: {args.out}")


def report(runs: dict[str, list[dict[str, Any]]], results: dict[str, Any]) -> None:
    print(f"\n## interleaved rounds (medians of {len(runs['torch_x1'])})")
    print("| engine | streams | aggregate tok/s | per-stream tok/s | TTFT p50/max ms | x torch |")
    print("|---|---|---|---|---|---|")
    for name, measured in runs.items():
        framework, streams = name.split("_x")
        aggregate = median_of(measured, "aggregate_tokens_per_s")
        torch_aggregate = median_of(runs[f"torch_x{streams}"], "aggregate_tokens_per_s")
        print(
            f"| {framework} | {streams} | {aggregate:.1f} "
            f"| {median_of(measured, 'per_stream_tokens_per_s'):.1f} "
            f"| {median_of(measured, 'ttft_p50_s') * 1000:.0f} / "
            f"{median_of(measured, 'ttft_max_s') * 1000:.0f} | {aggregate / torch_aggregate:.2f} |"
        )
    ahead = results["compile_ahead"]
    print(
        f"\nJAX compile ahead: {ahead['model_executables']} model executables in "
        f"{ahead['model_wall_s']:.1f} s, sampler steps {ahead['sampler_wall_s']:.1f} s "
        f"(weights to JAX: {results['environment']['weights_to_jax_s']:.1f} s)"
    )
    walls = [statistics.median(r["wall_s"] for r in runs[f"jax_x{n}"]) for n in STREAMS]
    for n, wall in zip(STREAMS, walls, strict=True):
        first = results["compile"][f"jax_x{n}_first_run"]["wall_s"]
        compiled = results["compile"][f"jax_x{n}_first_run"]["executables_compiled"]
        print(
            f"  jax x{n}: first run {first:.1f} s ({compiled} compiles), "
            f"later runs {wall:.1f} s (median)"
        )
    agreement = "; ".join(results["greedy_mismatches"]) or "yes"
    print(f"JAX greedy tokens equal torch's up to EOS: {agreement}")


if __name__ == "__main__":
    main()
