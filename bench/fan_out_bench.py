"""What an emulated `n` costs Turnout: one chat request with n=16 on a deployment without
native `n` (16 upstream calls of n=1, at most `emulation.max_parallel` at once, merged into
one answer) against the same request with n=1, in process — Turnout's dispatcher and
emulation stack, no client-side HTTP — against the raw mock upstream
(`bench/transport/mock_upstream.py`, its own process, loopback, answers at once).

Per variant: wall time per request (median and p90 over the best round's requests) and the
peak of Python allocations during one request above what was live before it (tracemalloc,
median over requests; measured in a separate pass, as tracing slows everything). Variants
are interleaved round by round so the shared machine's noise hits them alike.

    python bench/fan_out_bench.py [--requests 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.config import TurnoutConfig  # noqa: E402
from providers.types import Endpoint  # noqa: E402
from router.gateway import Gateway  # noqa: E402
from router.logging import configure_logging  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write one short sentence about load balancing."}]


@dataclass(frozen=True)
class Variant:
    name: str
    n: int
    max_parallel: int


VARIANTS = (
    Variant("n=1", 1, 4),
    Variant("n=16 emulated, max_parallel 4", 16, 4),
    Variant("n=16 emulated, max_parallel 16", 16, 16),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mock(port: int) -> subprocess.Popen[bytes]:
    script = ROOT / "bench" / "transport" / "mock_upstream.py"
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the mock upstream did not start")


async def gateway_for(port: int, max_parallel: int) -> Gateway:
    config = TurnoutConfig.model_validate(
        {
            "providers": {
                "mock": {
                    "kind": "openai",
                    "base_url": f"http://127.0.0.1:{port}/v1",
                    "capabilities": {"n": False},
                }
            },
            "models": {"m": {"deployments": [{"provider": "mock", "model": "mock-model"}]}},
            "emulation": {"max_parallel": max_parallel},
        }
    )
    gateway = Gateway.from_config(config)
    await gateway.begin_start()
    assert gateway.ready, gateway.startup_error
    return gateway


async def one_request(gateway: Gateway, n: int) -> None:
    plan = gateway.planner.plan("m")
    trace = gateway.dispatcher.start_trace(plan)
    body: dict[str, Any] = {"messages": MESSAGES, "max_tokens": 16, "n": n}
    answer = await gateway.dispatcher.complete(plan, Endpoint.CHAT, body, trace)
    assert len(answer.body["choices"]) == n


async def timed(gateway: Gateway, n: int, requests: int) -> list[float]:
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        await one_request(gateway, n)
        samples.append(time.perf_counter() - started)
    return samples


async def peak_bytes(gateway: Gateway, n: int, requests: int) -> float:
    peaks = []
    for _ in range(requests):
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        await one_request(gateway, n)
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
    return statistics.median(peaks)


async def run(requests: int, rounds: int) -> None:
    port = free_port()
    mock = start_mock(port)
    gateways = {v: await gateway_for(port, v.max_parallel) for v in VARIANTS}
    try:
        for variant, gateway in gateways.items():  # warm-up: connections, caches
            await timed(gateway, variant.n, 20)
        best: dict[Variant, list[float]] = {}
        for _ in range(rounds):
            for variant, gateway in gateways.items():
                samples = await timed(gateway, variant.n, requests)
                if variant not in best or statistics.median(samples) < statistics.median(
                    best[variant]
                ):
                    best[variant] = samples
        tracemalloc.start()
        memory = {v: await peak_bytes(g, v.n, max(20, requests // 10)) for v, g in gateways.items()}
        tracemalloc.stop()
    finally:
        for gateway in gateways.values():
            await gateway.aclose()
        mock.terminate()
        mock.wait(timeout=10)
    report(best, memory)


def report(best: dict[Variant, list[float]], memory: dict[Variant, float]) -> None:
    base = statistics.median(best[VARIANTS[0]])
    base_memory = memory[VARIANTS[0]]
    print("| variant | median ms | p90 ms | vs n=1 | peak KiB per request | vs n=1 |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        samples = sorted(best[variant])
        median = statistics.median(samples)
        p90 = samples[int(0.9 * (len(samples) - 1))]
        kib = memory[variant] / 1024
        print(
            f"| {variant.name} | {median * 1000:.2f} | {p90 * 1000:.2f} | "
            f"{median / base:.1f} | {kib:.0f} | {memory[variant] / base_memory:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("warning")  # start-up lines only would interleave with the table
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()
