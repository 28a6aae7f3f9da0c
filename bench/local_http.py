"""End to end for local_bench.py: one `turnout serve` (the embedded default config) in a
subprocess, driven by the async openai SDK with streaming chat requests (temperature 0,
max_tokens N, EOS banned with logit_bias, tokens counted from the usage chunk), interleaved
with `generate()` and the bare engine so the HTTP path's cost is read against them in the
same minutes. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import asyncio
import gc
import http.client
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine_runs import progress, run_record, stream_record

ROOT = Path(__file__).resolve().parent.parent
HTTP_STREAMS = (1, 16)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    """Until /health/ready answers 200 (the local models load in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"turnout serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"turnout on port {port} not ready after {timeout:.0f} s")


@contextmanager
def turnout_server(port: int) -> Iterator[subprocess.Popen[bytes]]:
    """`turnout serve` with its embedded default config, logs to a temporary file."""
    with tempfile.TemporaryFile("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "router", "serve", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_ready(port, proc)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


async def http_run(
    client: Any,
    model: str,
    messages: list[dict[str, str]],
    streams: int,
    tokens: int,
    ban: dict[str, int],
) -> dict[str, Any]:
    async def one(start: float) -> dict[str, Any]:
        first: float | None = None
        counted = 0
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=tokens,
            temperature=0,
            logit_bias=ban,  # EOS banned: every stream makes exactly N tokens
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.usage is not None:
                counted = chunk.usage.completion_tokens
        end = time.perf_counter()
        if counted != tokens:
            raise RuntimeError(f"an HTTP stream made {counted} tokens, not {tokens}")
        return stream_record(counted, start, first, end)

    gc.collect()
    start = time.perf_counter()
    records = await asyncio.gather(*(one(start) for _ in range(streams)))
    end = max(start + r["seconds"] for r in records)
    return run_record(list(records), end - start)


def http_phase(bench: Any, tokens: int, rounds: int) -> dict[str, list[dict[str, Any]]]:
    """Interleaved, `rounds` times: generate(), bare engine and HTTP at 1 and 16 streams."""
    from openai import AsyncOpenAI

    port = free_port()
    ban = {str(token): -100 for token in sorted(bench.adapter.eos_ids)}
    runs: dict[str, list[dict[str, Any]]] = {}
    print(f"starting turnout serve on 127.0.0.1:{port} ...", flush=True)
    with turnout_server(port), asyncio.Runner() as loop:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")

        def over_http(streams: int) -> dict[str, Any]:
            return loop.run(http_run(client, bench.model, bench.messages, streams, tokens, ban))

        over_http(1)  # warm-up: connection, first request
        over_http(4)
        steps: list[tuple[str, Any]] = [("generate", bench.generate)]
        for streams in HTTP_STREAMS:
            steps.append((f"engine_x{streams}", lambda n=streams: bench.engine_run("engine", n)))
            steps.append((f"http_x{streams}", lambda n=streams: over_http(n)))
        for round_index in range(rounds):
            for name, step in steps if round_index % 2 == 0 else reversed(steps):
                result = step()
                runs.setdefault(name, []).append(result)
                progress(f"http round {round_index} {name:>10}", result)
        loop.run(client.close())
    return {name: runs[name] for name, _ in steps}
