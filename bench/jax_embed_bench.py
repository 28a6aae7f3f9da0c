"""The JAX sentence embedder beside the PyTorch one: one model, one process, one run.

Loads the packaged all-MiniLM-L6-v2 twice (float32): `TorchEmbedder` on the CPU and
`JaxEmbedder` on JAX's default device. Then:
1. compile: the JAX embedder's first batch, which compiles its one shape bucket (batch 16 x
   the batch's padded length); compile seconds are reported apart from the timed rounds;
2. one untimed warm-up round, then interleaved rounds (the order alternates each round)
   of `--calls` calls per embedder, each embedding the same batch of 16 short texts →
   embeddings/s (16 x calls / seconds) and milliseconds per batch.
Every JAX vector is checked against torch's (cosine similarity and largest component
difference are reported). No network is used.

    python bench/jax_embed_bench.py [--calls 20] [--rounds 5]

Raw figures go to bench/results/jax_embed.json.
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

HERE = Path(__file__).resolve().parent
MODEL = "all-minilm-l6-v2"
TEXTS = [
    "The cat sat on the mat.",
    "Stock markets fell sharply today.",
    "How do I reset my password?",
    "A kitten naps on the couch.",
    "Quarterly revenue grew by four percent.",
    "The weather in Paris is mild in spring.",
    "Please send the invoice by Friday.",
    "Turnout routes requests to many backends.",
    "She plays the violin every evening.",
    "Add two cups of flour and stir well.",
    "The train to Berlin leaves at noon.",
    "Embeddings map text to vectors.",
    "My laptop battery drains too quickly.",
    "The museum opens at nine on Sundays.",
    "Water boils at one hundred degrees Celsius.",
    "Our team meeting moved to Thursday.",
]
FRAMEWORKS = ("torch", "jax")


def timed_calls(embedder: Any, calls: int) -> dict[str, float]:
    started = time.perf_counter()
    for _ in range(calls):
        embedder.embed(TEXTS)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "embeddings_per_s": len(TEXTS) * calls / seconds,
        "ms_per_batch": seconds / calls * 1000,
    }


def parity(ours: list[list[float]], theirs: list[list[float]]) -> dict[str, float]:
    import numpy as np

    mine, reference = np.asarray(ours), np.asarray(theirs)
    cosines = (mine * reference).sum(axis=1) / (
        np.linalg.norm(mine, axis=1) * np.linalg.norm(reference, axis=1)
    )
    return {
        "min_cosine": float(cosines.min()),
        "max_abs_difference": float(np.abs(mine - reference).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20, help="batches per embedder per round")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "jax_embed.json")
    args = parser.parse_args()

    import jax
    import torch

    from providers.jax.embedder import JaxEmbedder
    from providers.torch.embedder import TorchEmbedder

    embedders: dict[str, Any] = {
        "torch": TorchEmbedder.load(MODEL, device="cpu"),
        "jax": JaxEmbedder.load(MODEL),
    }
    jax_embedder: JaxEmbedder = embedders["jax"]
    reference, tokens = embedders["torch"].embed(TEXTS)  # torch's own warm-up too
    started = time.perf_counter()
    vectors, _ = jax_embedder.embed(TEXTS)
    first_call_s = time.perf_counter() - started
    environment = {
        "batch": len(TEXTS),
        "batch_tokens": tokens,
        "bucket": jax_embedder.bucket(len(TEXTS), _longest(jax_embedder)),
        "calls": args.calls,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__,
        "jax_device": str(jax.devices()[0]),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(f"# {json.dumps(environment)}")
    compiled = {
        "first_call_s": first_call_s,
        "executables": jax_embedder.stats.count,
        "compile_s": jax_embedder.stats.seconds,
    }
    print(
        f"jax first batch: {first_call_s:.2f} s wall, {compiled['executables']} executable "
        f"compiled in {compiled['compile_s']:.2f} s",
        flush=True,
    )

    for name in FRAMEWORKS:  # torch's first batches after loading run several times slower
        timed_calls(embedders[name], args.calls)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in FRAMEWORKS}
    for round_index in range(args.rounds):
        order = FRAMEWORKS if round_index % 2 == 0 else FRAMEWORKS[::-1]
        for name in order:
            result = timed_calls(embedders[name], args.calls)
            runs[name].append(result)
            print(
                f"round {round_index} {name:>5}: {result['embeddings_per_s']:.0f} embeddings/s, "
                f"{result['ms_per_batch']:.1f} ms per batch of {len(TEXTS)}",
                flush=True,
            )
    results = {
        "environment": environment,
        "compile": compiled,
        "rounds": runs,
        "parity": parity(vectors, reference),
    }
    report(runs, results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {args.out}")


def _longest(embedder: Any) -> int:
    """The batch's padded width: its longest text with [CLS] and [SEP]."""
    return max(len(embedder.tokenizer(text)["input_ids"]) for text in TEXTS)


def report(runs: dict[str, list[dict[str, float]]], results: dict[str, Any]) -> None:
    def median(name: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[name])

    print(f"\n## interleaved rounds (medians of {len(runs['torch'])})")
    print("| embedder | embeddings/s (range) | ms per batch of 16 | x torch |")
    print("|---|---|---|---|")
    for name in FRAMEWORKS:
        rates = [run["embeddings_per_s"] for run in runs[name]]
        rate = median(name, "embeddings_per_s")
        print(
            f"| {name} | {rate:.0f} ({min(rates):.0f}-{max(rates):.0f}) "
            f"| {median(name, 'ms_per_batch'):.1f} "
            f"| {rate / median('torch', 'embeddings_per_s'):.2f} |"
        )
    agreement = results["parity"]
    print(
        f"\nJAX vs torch vectors: min cosine {agreement['min_cosine']:.8f}, "
        f"max |difference| {agreement['max_abs_difference']:.2e}"
    )


if __name__ == "__main__":
    main()
