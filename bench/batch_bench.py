"""Batch lines per second against a fast mock upstream, and the memory a batch takes.

One `turnout serve` (granian, one worker, SQLite and local files under a temporary
`storage.path`, `batches.poll_s` 0.2, everything else at its defaults: 32 lines in
flight) in front of bench/transport/mock_upstream.py. In one run, so that the variants
share the machine's noise:

1. the baseline: the same chat request sent live by 32 concurrent clients (the batch's
   own concurrency), `--live` requests, requests per second;
2. each batch size in `--lines` (default 1,000 and 10,000): the input uploaded, the batch
   created, and timed from creation until `completed`; lines per second, and the ratio to
   the live rate;
3. memory: Turnout's resident memory (its process and granian's worker) sampled every
   0.1 s while the batch runs; the peak above what it held just before the batch. That
   it does not grow with the batch's size is the point: a runner holds one chunk of lines
   at a time, and the output is written from the store in pieces.

    .venv/bin/python bench/batch_bench.py [--lines 1000 10000] [--live 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from slow_clients_bench import free_port, rss_kib

HERE = Path(__file__).resolve().parent
MOCK = HERE / "transport" / "mock_upstream.py"
CONCURRENCY = 32
BODY = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16}


@contextlib.contextmanager
def servers(data_dir: str, *, anthropic: bool = False) -> Iterator[tuple[int, int]]:
    """The mock upstream and one `turnout serve`; yields Turnout's port and pid. Model `m`
    is the mock as an OpenAI-compatible deployment; with `anthropic`, model `claude` is the
    same mock as an Anthropic one (its `/v1/messages`)."""
    mock_port, port = free_port(), free_port()
    providers: dict[str, Any] = {
        "up": {"kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1"}
    }
    models: dict[str, Any] = {"m": {"deployments": [{"provider": "up", "model": "mock-model"}]}}
    if anthropic:
        providers["claude"] = {"kind": "anthropic", "base_url": f"http://127.0.0.1:{mock_port}"}
        models["claude"] = {"deployments": [{"provider": "claude", "model": "mock-model"}]}
    config = {
        "providers": providers,
        "models": models,
        "storage": {"path": data_dir},
        "batches": {"poll_s": 0.2},
    }
    path = Path(data_dir) / "turnout.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    command = [sys.executable, "-m", "router", "serve", "--config", str(path)]
    procs = [subprocess.Popen([sys.executable, str(MOCK), "--port", str(mock_port)])]
    procs.append(
        subprocess.Popen(
            [*command, "--port", str(port), "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).is_success:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("turnout serve did not become ready")
            time.sleep(0.1)
        yield port, procs[1].pid
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=15)


async def live(port: int, count: int) -> float:
    """Requests per second, `CONCURRENCY` clients sending `count` chat requests in all."""
    return await rate(port, "/v1/chat/completions", BODY, count)


async def rate(port: int, path: str, body: dict[str, Any], count: int) -> float:
    """Requests per second, `CONCURRENCY` clients posting `body` to `path`, `count` in all
    (aiohttp: httpx's own cost per request would be most of what is measured)."""
    left = iter(range(count))
    url = f"http://127.0.0.1:{port}{path}"
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in left:
                async with session.post(url, json=body) as response:
                    response.raise_for_status()
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return count / (time.perf_counter() - started)


def batch(port: int, pid: int, lines: int) -> tuple[float, int, int]:
    """Lines per second, the peak RSS above the start (KiB), and the RSS before (KiB)."""
    data = "".join(
        json.dumps(
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": BODY,
            }
        )
        + "\n"
        for i in range(lines)
    ).encode()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        uploaded = client.post(
            "/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"}
        )
        uploaded.raise_for_status()
        before = rss_kib(pid)
        peak = before
        started = time.perf_counter()
        created = client.post(
            "/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
        )
        created.raise_for_status()
        batch_id = created.json()["id"]
        while True:
            peak = max(peak, rss_kib(pid))
            state = client.get(f"/v1/batches/{batch_id}").json()
            if state["status"] in ("completed", "failed", "cancelled", "expired"):
                break
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        counts = state["request_counts"]
        if state["status"] != "completed" or counts["completed"] != lines:
            raise RuntimeError(f"batch ended {state['status']}: {counts}")
        output = client.get(f"/v1/files/{state['output_file_id']}/content").content
        if output.count(b"\n") != lines:
            raise RuntimeError("the output file does not have one line per request")
    return lines / elapsed, peak - before, before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--live", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, servers(tmp) as (port, pid):
        asyncio.run(live(port, 300))  # warm-up
        rate = asyncio.run(live(port, args.live))
        print(f"live, {CONCURRENCY} clients: {rate:,.0f} requests/s")
        for lines in args.lines:
            per_s, grew, before = batch(port, pid, lines)
            print(
                f"batch of {lines:,} lines: {per_s:,.0f} lines/s ({per_s / rate:.2f}x live); "
                f"RSS {before / 1024:,.1f} MiB before, peak +{grew / 1024:,.1f} MiB while it ran"
            )


if __name__ == "__main__":
    main()
