"""local_bench.py's printed report: medians of the interleaved rounds as markdown tables,
the ratios issue 15 asks for, and each goal met or missed."""

from __future__ import annotations

import statistics
from typing import Any

from engine_runs import median_of

MIB = 1 << 20


def report(results: dict[str, Any]) -> None:
    runs = results["rounds"]
    base = median_of(runs["generate"], "aggregate_tokens_per_s")
    rounds = len(runs["generate"])
    print(f"\n## interleaved rounds (medians of {rounds}; ratio vs generate())")
    print(
        "| variant | streams | aggregate tok/s (range) | per-stream tok/s | TTFT p50/max ms "
        "| prompt tokens reused | x generate |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, measured in runs.items():
        aggregate = median_of(measured, "aggregate_tokens_per_s")
        low = min(r["aggregate_tokens_per_s"] for r in measured)
        high = max(r["aggregate_tokens_per_s"] for r in measured)
        reused = measured[-1].get("reused_tokens", "")
        print(
            f"| {name} | {measured[0]['streams']} | {aggregate:.1f} ({low:.1f}-{high:.1f}) "
            f"| {median_of(measured, 'per_stream_tokens_per_s'):.1f} "
            f"| {median_of(measured, 'ttft_p50_s') * 1000:.0f} / "
            f"{median_of(measured, 'ttft_max_s') * 1000:.0f} | {reused} | {aggregate / base:.2f} |"
        )

    def ratio(a: str, b: str, key: str = "aggregate_tokens_per_s") -> float:
        return median_of(runs[a], key) / median_of(runs[b], key)

    print("\nratios (of medians):")
    for a, b in (
        ("engine32_x32", "engine32_x16"),
        ("engine32_x16", "engine_x16"),
        ("engine_x16", "before_x16"),
        ("engine_x16_cold", "before_x16"),
        ("engine_x1", "before_x1"),
    ):
        print(f"  aggregate {a} / {b}: {ratio(a, b):.2f}")
    for key in ("ttft_p50_s", "ttft_max_s"):
        for a in ("engine_x16", "engine_x16_cold"):
            print(f"  {key} {a} / before_x16: {ratio(a, 'before_x16', key):.2f}")

    prefix = prefix_medians(results["prefix_rounds"])
    print(f"\n## 1,500-token system prompt (medians of {len(results['prefix_rounds'])}), TTFT ms")
    print("| engine | prompt tokens | cold | cached | reused | cached / cold | KV MiB peak |")
    print("|---|---|---|---|---|---|---|")
    for name, figures in prefix.items():
        cached = figures["cached"]
        cells = ["", "", ""]
        if cached is not None:
            cells = [
                f"{cached * 1000:.0f}",
                str(figures["reused"]),
                f"{cached / figures['cold']:.2f}",
            ]
        peak = f"{figures['kv_peak'] / MIB:.0f}" if figures["kv_peak"] else ""
        print(
            f"| {name} | {figures['prompt_tokens']} | {figures['cold'] * 1000:.0f} "
            f"| {' | '.join(cells)} | {peak} |"
        )
    engine_prefix, before_prefix = prefix["engine"], prefix["before"]
    print(f"  engine cold / before: {engine_prefix['cold'] / before_prefix['cold']:.2f}")
    print(f"  engine cached / before: {engine_prefix['cached'] / before_prefix['cold']:.2f}")

    memory = results["memory"]
    print("\n## memory at the default config (MiB)")
    for key, value in memory.items():
        shown = f"{value / MIB:.0f}" if ("bytes" in key or "rss" in key) else value
        print(f"  {key}: {shown}")

    http_runs = results["http_phase"]
    if http_runs:
        phase_base = median_of(http_runs["generate"], "aggregate_tokens_per_s")
        print(f"\n## with `turnout serve` up (medians of {len(http_runs['generate'])})")
        print("| variant | streams | aggregate tok/s | TTFT p50/max ms | x generate | x engine |")
        print("|---|---|---|---|---|---|")
        for name, measured in http_runs.items():
            aggregate = median_of(measured, "aggregate_tokens_per_s")
            engine = http_runs.get(name.replace("http", "engine"))
            vs_engine = (
                f"{aggregate / median_of(engine, 'aggregate_tokens_per_s'):.2f}"
                if engine and name.startswith("http")
                else ""
            )
            print(
                f"| {name} | {measured[0]['streams']} | {aggregate:.1f} "
                f"| {median_of(measured, 'ttft_p50_s') * 1000:.0f} / "
                f"{median_of(measured, 'ttft_max_s') * 1000:.0f} "
                f"| {aggregate / phase_base:.2f} | {vs_engine} |"
            )

    print("\ngoals (issue 15, interleaved medians):")
    x16 = ratio("engine_x16", "generate")
    rising = ratio("engine32_x32", "engine32_x16")
    cached_ratio = engine_prefix["cached"] / engine_prefix["cold"]
    ttft = ratio("engine_x16", "before_x16", "ttft_p50_s")
    ttft_cold = ratio("engine_x16_cold", "before_x16", "ttft_p50_s")
    single = ratio("engine_x1", "before_x1")
    goals = (
        ("16 streams >= 8x generate()", x16 >= 8, f"{x16:.2f}x"),
        (
            "aggregate still rising at 32",
            rising > 1,
            f"x32 / x16 = {rising:.2f}, x32 / generate = {ratio('engine32_x32', 'generate'):.2f}",
        ),
        ("cached-prefix TTFT <= 0.3x cold", cached_ratio <= 0.3, f"{cached_ratio:.2f}x"),
        (
            "16 streams' TTFT p50 below before's",
            ttft < 1,
            f"{ttft:.2f}x (prompt's blocks cached), {ttft_cold:.2f}x (index emptied)",
        ),
        (
            "single stream no slower than before",
            single >= 0.95,
            f"engine x1 / before x1 = {single:.2f}, / generate = "
            f"{ratio('engine_x1', 'generate'):.2f}",
        ),
    )
    for label, met, shown in goals:
        print(f"  {label}: {shown}  {'met' if met else 'MISSED'}")
    agreement = "; ".join(results["greedy_mismatches"]) or "yes"
    print(f"greedy tokens equal (generate() / cache-off engine) up to EOS: {agreement}")


def prefix_medians(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per engine: median cold and cached TTFT (s; cached None for an engine sent only
    one request), prompt tokens, tokens reused, the KV cache's peak bytes."""
    medians: dict[str, dict[str, Any]] = {}
    for name, first in rounds[0].items():
        has_cached = "cached" in first
        medians[name] = {
            "cold": statistics.median(r[name]["cold"]["ttft_s"] for r in rounds),
            "cached": (
                statistics.median(r[name]["cached"]["ttft_s"] for r in rounds)
                if has_cached
                else None
            ),
            "prompt_tokens": first["cold"]["prompt_tokens"],
            "reused": first["cached"]["reused_tokens"] if has_cached else 0,
            "kv_peak": max(
                (f.get("kv_bytes_peak", 0) for r in rounds for f in r[name].values()), default=0
            ),
        }
    return medians
