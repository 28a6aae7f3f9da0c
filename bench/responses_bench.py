"""The Responses door's cost beside a chat completion, in one run.

One `turnout serve` (granian, one worker; SQLite storage under a temporary
`storage.path`) in front of bench/transport/mock_upstream.py, which speaks chat only. 32
aiohttp clients send, interleaved in rounds so that the machine's noise hits every
variant alike: a chat completion (the baseline), the same question as a Responses request
with `store: false` (the translation alone), the same with `store: true` (the default:
the turn written to SQLite before the answer), and each of the three streamed. Requests
per second, and each variant's ratio to its chat baseline.

    .venv/bin/python bench/responses_bench.py [--requests 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from typing import Any

from batch_bench import rate, servers

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}
RESPONSES = {"model": "m", "input": "Say hello.", "max_output_tokens": 16}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": ("/v1/chat/completions", CHAT),
    "responses, store false": ("/v1/responses", {**RESPONSES, "store": False}),
    "responses, stored": ("/v1/responses", RESPONSES),
    "chat, streamed": ("/v1/chat/completions", {**CHAT, "stream": True}),
    "responses streamed, store false": (
        "/v1/responses",
        {**RESPONSES, "store": False, "stream": True},
    ),
    "responses streamed, stored": ("/v1/responses", {**RESPONSES, "stream": True}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp, servers(tmp) as (port, _pid):
        for path, body in VARIANTS.values():  # warm-up
            asyncio.run(rate(port, path, body, 200))
        for _ in range(args.rounds):
            for name, (path, body) in VARIANTS.items():
                rates[name].append(asyncio.run(rate(port, path, body, args.requests)))
    for name, measured in rates.items():
        base = "chat, streamed" if "stream" in name else "chat"
        ratio = statistics.median(measured) / statistics.median(rates[base])
        print(f"{name:34} {statistics.median(measured):8,.0f} requests/s  {ratio:.2f}x {base}")


if __name__ == "__main__":
    main()
