"""What the Anthropic-shaped door adds to a request's latency beside a chat completion.

One `turnout serve` (granian, one worker) in front of bench/transport/mock_upstream.py,
which answers the same text as OpenAI's chat (`/v1/chat/completions`) and as Anthropic's
Messages API (`/v1/messages`). Model `m` is the mock as an OpenAI-compatible deployment,
model `claude` the same mock as an Anthropic one. Variants, each whole and streamed:

- `chat`: a chat completion to `m` (the baseline);
- `messages, translated`: the same question to `/v1/messages` for `m`: the Anthropic
  request mapped to chat, the answer or each chunk mapped back to Anthropic's shapes;
- `messages, pass-through`: the same to `/v1/messages` for `claude`: the body sent on as
  it came (model name mapped), the answer or each event relayed.

Low concurrency (`--clients`, default 1 and 4), each client sending its requests one after
the other, so latency is measured rather than throughput; the variants interleaved in
rounds so that the machine's noise hits every variant alike. Per variant: p50 and p99 of
the whole request (the body read to its end), and for the streamed ones p50 and p99 of the
time to the first event (the first bytes of the body), and the added p50 over `chat`.

    .venv/bin/python bench/messages_bench.py [--requests 500] [--rounds 4] [--clients 1 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from typing import Any

import aiohttp
from batch_bench import servers

QUESTION = "Say hello."
CHAT = {"model": "m", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16}
CLAUDE = {**CHAT, "model": "claude"}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "unused"}
# name: (path, body, headers)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "chat": ("/v1/chat/completions", CHAT, {}),
    "messages, translated": ("/v1/messages", CHAT, ANTHROPIC_HEADERS),
    "messages, pass-through": ("/v1/messages", CLAUDE, ANTHROPIC_HEADERS),
    "chat, streamed": ("/v1/chat/completions", {**CHAT, "stream": True}, {}),
    "messages streamed, translated": (
        "/v1/messages",
        {**CHAT, "stream": True},
        ANTHROPIC_HEADERS,
    ),
    "messages streamed, pass-through": (
        "/v1/messages",
        {**CLAUDE, "stream": True},
        ANTHROPIC_HEADERS,
    ),
}


async def timed(
    port: int, variant: tuple[str, dict[str, Any], dict[str, str]], clients: int, count: int
) -> tuple[list[float], list[float]]:
    """`count` requests in all from `clients` clients, each sending its next once the last
    is read to its end: each request's whole latency and time to its first body bytes (s)."""
    path, body, headers = variant
    url = f"http://127.0.0.1:{port}{path}"
    whole: list[float] = []
    first: list[float] = []
    left = iter(range(count))
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            for _ in left:
                started = time.perf_counter()
                async with session.post(url, json=body) as response:
                    response.raise_for_status()
                    await response.content.readany()
                    first.append(time.perf_counter() - started)
                    await response.read()
                whole.append(time.perf_counter() - started)

        await asyncio.gather(*(client() for _ in range(clients)))
    return whole, first


async def check(port: int) -> None:
    """Both doors' paths answer in Anthropic's shape (a 200 of another shape would be
    measured as if it were one)."""
    async with aiohttp.ClientSession(headers=ANTHROPIC_HEADERS) as session:
        for name in ("messages, translated", "messages, pass-through"):
            path, body, _ = VARIANTS[name]
            async with session.post(f"http://127.0.0.1:{port}{path}", json=body) as response:
                answer = await response.json()
            if answer.get("type") != "message" or answer["content"][0]["type"] != "text":
                raise RuntimeError(f"{name}: not an Anthropic message: {answer}")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(clients: int, whole: dict[str, list[float]], first: dict[str, list[float]]) -> None:
    print(f"\n{clients} client(s), ms                   p50 whole  p99 whole  p50 first  p99 first")
    for name in VARIANTS:
        streamed = "streamed" in name
        row = [percentile(whole[name], 0.5), percentile(whole[name], 0.99)]
        if streamed:
            row += [percentile(first[name], 0.5), percentile(first[name], 0.99)]
        cells = "".join(f"{value * 1000:11.3f}" for value in row)
        base = "chat, streamed" if streamed else "chat"
        added = ""
        if name != base:
            delta = statistics.median(whole[name]) - statistics.median(whole[base])
            added = f"   {delta * 1000:+.3f} ms p50 over {base}"
            if streamed:
                delta = statistics.median(first[name]) - statistics.median(first[base])
                added += f", first event {delta * 1000:+.3f} ms"
        print(f"{name:35}{cells:44}{added}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, servers(tmp, anthropic=True) as (port, _pid):
        asyncio.run(check(port))
        for variant in VARIANTS.values():  # warm-up
            asyncio.run(timed(port, variant, 4, 300))
        for clients in args.clients:
            whole: dict[str, list[float]] = {name: [] for name in VARIANTS}
            first: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, variant in VARIANTS.items():
                    w, f = asyncio.run(timed(port, variant, clients, args.requests))
                    whole[name] += w
                    first[name] += f
            report(clients, whole, first)


if __name__ == "__main__":
    main()
