"""Rebuild Turnout's shipped price table (policies/pricing/prices.json) from LiteLLM's
community-maintained `model_prices_and_context_window.json` (MIT licence), which is the
most complete and most often updated public list of hosted models' prices.

    pip download --no-deps -d /tmp/l litellm
    unzip -o /tmp/l/litellm-*.whl 'litellm/model_prices_and_context_window_backup.json' -d /tmp/l
    python scripts/update-prices.py --version 1.110.2 \\
        /tmp/l/litellm/model_prices_and_context_window_backup.json

Only the vendors Turnout's `openai` and `anthropic` kinds call by a plain model name are
kept (OpenAI, Anthropic, and the OpenAI-compatible DeepSeek, Mistral and xAI APIs), in
USD per million tokens."""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

# LiteLLM's provider name -> whether its keys carry a "provider/" prefix to strip.
VENDORS = {
    "openai": False,
    "text-completion-openai": False,
    "anthropic": False,
    "deepseek": True,
    "mistral": True,
    "xai": True,
}
MODES = {"chat", "completion", "embedding", "responses"}
OUT = Path(__file__).resolve().parent.parent / "policies" / "pricing" / "prices.json"


def per_million(entry: dict[str, Any], field: str) -> float | None:
    value = entry.get(field)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    return round(float(value) * 1_000_000, 6)


def price_of(entry: dict[str, Any]) -> dict[str, float] | None:
    prompt = per_million(entry, "input_cost_per_token")
    completion = per_million(entry, "output_cost_per_token")
    if prompt is None:
        return None
    price = {"prompt": prompt, "completion": completion or 0.0}
    cached = per_million(entry, "cache_read_input_token_cost")
    if cached is not None:
        price["cached_prompt"] = cached
    written = per_million(entry, "cache_creation_input_token_cost")
    if written is not None:
        price["cache_write_prompt"] = written
    return price


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="LiteLLM's model_prices JSON")
    parser.add_argument("--version", required=True, help="the LiteLLM release it came with")
    args = parser.parse_args()
    entries: dict[str, Any] = json.loads(args.source.read_text())
    models: dict[str, dict[str, float]] = {}
    for name, entry in sorted(entries.items()):
        if not isinstance(entry, dict) or entry.get("mode") not in MODES:
            continue
        vendor = entry.get("litellm_provider")
        if vendor not in VENDORS:
            continue
        if VENDORS[vendor]:
            name = name.removeprefix(f"{vendor}/")
        if "/" in name or name in models:
            continue
        price = price_of(entry)
        if price is not None:
            models[name] = price
    table = {
        "source": "BerriAI/litellm model_prices_and_context_window.json (MIT)",
        "version": f"litellm {args.version}",
        "taken": datetime.date.today().isoformat(),
        "unit": "USD per million tokens",
        "models": models,
    }
    OUT.write_text(json.dumps(table, indent=1, sort_keys=False) + "\n")
    print(f"{len(models)} models written to {OUT}")


if __name__ == "__main__":
    main()
