"""Upstream HTTP client comparison against the mock upstream, under uvloop.

For every (mode, concurrency) the clients run in interleaved rounds (A, B, C, A, B, C, ...),
each for a fixed duration after a short warm-up, so machine noise hits all of them alike.
Modes: ``json`` (POST, read body, orjson.loads) and ``stream`` (POST stream=true, read the
SSE stream to ``[DONE]``, orjson.loads every chunk). The mock runs in its own process.

    python bench/transport/client_compare.py --duration 4 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import httpx2
import orjson
import uvloop
from upstream_clients import CLIENT_KINDS, ClientKind, UpstreamClient, make_client

HERE = Path(__file__).resolve().parent
BODY = orjson.dumps(
    {
        "model": "mock-model",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {
                "role": "user",
                "content": "Write one short sentence about load balancing HTTP requests "
                "across many upstream LLM deployments, please.",
            },
        ],
        "temperature": 0.7,
        "max_tokens": 64,
        "top_p": 1.0,
        "user": "bench-user-0001",
    }
)
STREAM_BODY = BODY[:-1] + b',"stream":true}'
TRANSPORT_ERRORS = (
    httpx.HTTPError,
    httpx2.HTTPError,
    aiohttp.ClientError,
    OSError,
    asyncio.TimeoutError,
)


@dataclass(frozen=True)
class Sample:
    client: ClientKind
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


async def one_request(client: UpstreamClient, stream: bool) -> None:
    if not stream:
        orjson.loads(await client.complete(BODY))
        return
    async for payload in client.stream(STREAM_BODY):
        if payload != b"[DONE]":
            orjson.loads(payload)


async def load(client: UpstreamClient, stream: bool, concurrency: int, seconds: float) -> Sample:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while (start := time.perf_counter()) < deadline:
            try:
                await one_request(client, stream)
            except TRANSPORT_ERRORS:
                errors += 1
                continue
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return Sample("httpx", len(latencies) / elapsed, q[49] * 1e3, q[98] * 1e3, errors)


async def measure(kind: ClientKind, url: str, stream: bool, conc: int, seconds: float) -> Sample:
    client = make_client(kind, url, conc)
    try:
        await load(client, stream, conc, 0.5)  # warm-up: open the pool
        sample = await load(client, stream, conc, seconds)
    finally:
        await client.aclose()
    return Sample(kind, sample.rps, sample.p50_ms, sample.p99_ms, sample.errors)


def report(title: str, samples: list[Sample]) -> str:
    lines = [
        f"### {title}",
        "",
        "| client | req/s per round | median req/s | vs aiohttp | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    medians = {k: statistics.median(s.rps for s in samples if s.client == k) for k in CLIENT_KINDS}
    for kind in CLIENT_KINDS:
        mine = [s for s in samples if s.client == kind]
        rounds = ", ".join(f"{s.rps:,.0f}" for s in mine)
        p50 = statistics.median(s.p50_ms for s in mine)
        p99 = statistics.median(s.p99_ms for s in mine)
        ratio = medians[kind] / medians["aiohttp"]
        errs = sum(s.errors for s in mine)
        lines.append(
            f"| {kind} | {rounds} | {medians[kind]:,.0f} | {ratio:.2f}x "
            f"| {p50:.2f} | {p99:.2f} | {errs} |"
        )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> str:
    out: list[str] = []
    for mode in args.modes:
        for conc in args.concurrency:
            samples = [
                await measure(kind, args.url, mode == "stream", conc, args.duration)
                for _ in range(args.rounds)
                for kind in CLIENT_KINDS
            ]
            title = f"{mode}, concurrency {conc}, {args.duration:g}s x {args.rounds} rounds"
            out.append(report(title, samples))
            print(out[-1], flush=True)
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--spawn-mock", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument(
        "--modes", nargs="+", choices=["json", "stream"], default=["json", "stream"]
    )
    args = parser.parse_args()
    args.url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
    mock = None
    if args.spawn_mock:
        cmd = [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(args.port)]
        mock = subprocess.Popen(cmd)
        time.sleep(1.0)
    try:
        uvloop.run(run(args))
    finally:
        if mock is not None:
            mock.terminate()
            mock.wait(5)


if __name__ == "__main__":
    main()
