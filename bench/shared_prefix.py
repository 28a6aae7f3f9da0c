"""Time to first token behind a long shared system prompt, cold and from the prefix cache
(issue 15): shared by local_bench.py and jax_bench.py.

Each round builds a new ~1,500-token system prompt (its first words name the round, so no
block of it is in any store yet) and sends, to each engine, one chat with user message A
(cold: nothing of it is cached; on an engine with the prefix cache it is prefilled and its
whole blocks are stored) and then one with the same system prompt and user message B
(cached: the system prompt's whole blocks are loaded from the store, only the rest is
prefilled). A request makes `answer_tokens` greedy tokens; TTFT is submit → first token.
The greedy tokens of every engine's answer to B are compared with the first engine's (an
engine without a prefix cache is sent B alone: A would warm nothing there): loading blocks
must not change an answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine_runs import Probe, engine_streams, equal_up_to_eos

SYSTEM_TOKENS = 1500
QUESTIONS = (
    "Which rule covers refunds for damaged parcels? Answer in one sentence.",
    "Summarise rule 12 for a new colleague, in plain words.",
)
_TOPICS = (
    "refunds for damaged parcels",
    "late deliveries to rural addresses",
    "customers who ask for a manager",
    "invoices in a foreign currency",
    "orders placed twice by mistake",
    "gift cards that will not redeem",
    "parcels left with a neighbour",
    "address changes after dispatch",
)


def system_text(adapter: Any, tag: str, tokens: int = SYSTEM_TOKENS) -> str:
    """A support-desk rule book of at least `tokens` tokens, starting with `tag`."""
    lines = [f"{tag}. You are the support assistant of a parcel company. Follow these rules."]
    index = 0
    while len(adapter.encode_text("\n".join(lines))) < tokens:
        index += 1
        topic = _TOPICS[index % len(_TOPICS)]
        lines.append(
            f"Rule {index}: for {topic}, first apologise once, then quote section "
            f"{index}.{index % 7} of the manual, offer at most {index % 5 + 1} options, "
            "and never promise a date the depot has not confirmed."
        )
    return "\n".join(lines)


def chat_prompts(adapter: Any, tag: str) -> list[list[int]]:
    """The two chats (same system prompt, user messages A and B) as token ids."""
    system = system_text(adapter, tag)
    return [
        list(
            adapter.render_chat(
                [{"role": "system", "content": system}, {"role": "user", "content": q}]
            )
        )
        for q in QUESTIONS
    ]


def first_token(
    engine: Any, prompt: Sequence[int], answer_tokens: int, probe: Probe | None = None
) -> dict[str, Any]:
    """One request alone on `engine`: its TTFT, its greedy tokens, prompt tokens reused,
    and the probe's peak (KV-cache bytes) if there is one."""
    stats = engine.prefix_cache.stats
    reused_before = stats.reused
    outputs, record = engine_streams(engine, [prompt], answer_tokens, probe=probe)
    figures = {
        "ttft_s": record["ttft_p50_s"],
        "prompt_tokens": len(prompt),
        "reused_tokens": stats.reused - reused_before,
        "tokens": outputs[0],
    }
    if probe is not None:
        figures["kv_bytes_peak"] = record["probe_peak"]
    return figures


def prefix_round(
    engines: dict[str, Any],
    adapter: Any,
    tag: str,
    answer_tokens: int,
    mismatches: list[str],
    probes: Mapping[str, Probe] | None = None,
    single: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Cold (A) then cached (B) on each engine, B alone on those in `single` (engines
    without a prefix cache); every B's tokens checked against the first engine's.
    → {engine: {"cold": figures, "cached": figures}}, a `single` engine's B under "cold"."""
    prompts = chat_prompts(adapter, tag)
    probes = probes or {}
    result: dict[str, dict[str, Any]] = {}
    for name, engine in engines.items():
        probe = probes.get(name)
        if name in single:
            result[name] = {"cold": first_token(engine, prompts[1], answer_tokens, probe)}
            continue
        cold = first_token(engine, prompts[0], answer_tokens, probe)
        cached = first_token(engine, prompts[1], answer_tokens, probe)
        result[name] = {"cold": cold, "cached": cached}
    answers = {name: f.get("cached", f["cold"])["tokens"] for name, f in result.items()}
    expected = next(iter(answers.values()))
    for name, got in answers.items():
        if not equal_up_to_eos(got, expected, adapter.eos_ids):
            mismatches.append(f"{tag} {name}: {got} != {expected}")
    return result


def print_prefix_round(label: str, result: dict[str, dict[str, Any]]) -> None:
    for name, figures in result.items():
        cold, cached = figures["cold"], figures.get("cached")
        if cached is None:
            print(f"{label} prefix {name:>8}: cold {cold['ttft_s'] * 1000:6.0f} ms", flush=True)
            continue
        print(
            f"{label} prefix {name:>8}: cold {cold['ttft_s'] * 1000:6.0f} ms, cached "
            f"{cached['ttft_s'] * 1000:6.0f} ms ({cached['reused_tokens']} of "
            f"{cached['prompt_tokens']} prompt tokens reused), "
            f"{cached['ttft_s'] / cold['ttft_s']:.2f}x",
            flush=True,
        )
