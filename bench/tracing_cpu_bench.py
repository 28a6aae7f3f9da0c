"""What tracing adds to one request's CPU on the event loop's thread, in one process.

Two apps (`hot_path_profile.py`'s: the guarded app driven by ASGI calls, the mock
upstream over loopback, the log line rendered to /dev/null) live in one process, one with
tracing off and one with tracing on (every request sampled, spans sent to a real OTLP/HTTP
receiver on loopback: `tracing_bench.py`'s). Requests go to them in alternating blocks of
`--block` (order alternating too), and each block's CPU time on this thread is read.
Separate processes, measured one after the other, differ by ±30 % on this project's
shared cores; blocks of a few hundred requests interleaved in one process see the same
load, and the median of the per-pair differences stands out of it.

After each traced block its spans are flushed (outside the timing): the export thread
sends a batch every `max_export_batch_size` (512) spans, so in a server no more than a few
hundred requests' spans are alive at once, and the garbage collector's work on them is
part of what tracing costs; a block of 250 requests leaves 500 spans alive, about as many.

    python bench/tracing_cpu_bench.py [--pairs 30] [--block 250] [--stream]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gateway_bench import BODY, MOCK, free_port, wait_ready  # noqa: E402
from hot_path_profile import call, lifespan  # noqa: E402

from policies.config import TurnoutConfig  # noqa: E402
from router.app import create_app  # noqa: E402
from router.connection_guard import ConnectionGuard  # noqa: E402
from router.logging import configure_logging  # noqa: E402


async def started(config: dict[str, Any], scrubber: Any) -> tuple[Any, Any, Any, Any]:
    inner = create_app(TurnoutConfig.model_validate(config), log_scrubber=scrubber)
    app = ConnectionGuard(inner, lambda: 30.0, 10_000, None)
    task, inbox = await lifespan(app)
    for _ in range(200):
        if inner.state.gateway.ready:
            break
        await asyncio.sleep(0.01)
    return app, inner.state.gateway, task, inbox


async def block(app: Any, body: bytes, count: int) -> float:
    """CPU µs per request on this thread over `count` requests."""
    cpu = time.thread_time()
    for _ in range(count):
        status, out = await call(app, body)
        assert status == 200, out[:300]
    return (time.thread_time() - cpu) / count * 1e6


async def drive(mock_port: int, sink_port: int, pairs: int, size: int, stream: bool) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)  # the log lines are rendered, to /dev/null
    os.close(devnull)
    scrubber = configure_logging("info")
    plain: dict[str, Any] = {
        "providers": {"mock": {"kind": "openai", "base_url": f"http://127.0.0.1:{mock_port}/v1"}},
        "models": {"mock-model": {"deployments": [{"provider": "mock", "model": "mock-model"}]}},
    }
    traced = {**plain, "telemetry": {"otlp_endpoint": f"http://127.0.0.1:{sink_port}"}}
    off = await started(plain, scrubber)
    on = await started(traced, scrubber)
    tracing = on[1].tracing
    assert tracing is not None
    assert off[1].tracing is None
    body = json.dumps({**BODY, "stream": stream}).encode()
    for app in (off[0], on[0]):  # warm-up
        await block(app, body, 300)
    tracing.force_flush()
    rows: list[tuple[float, float]] = []
    whole: dict[str, list[float]] = {"off": [], "on": []}  # the process's, export included
    for i in range(pairs):
        first_on = i % 2 == 1
        times: dict[str, float] = {}
        for name in ("on", "off") if first_on else ("off", "on"):
            cpu = time.process_time()
            times[name] = await block((on if name == "on" else off)[0], body, size)
            if name == "on":
                tracing.force_flush()
            whole[name].append((time.process_time() - cpu) / size * 1e6)
        rows.append((times["off"], times["on"]))
    diffs = sorted(b - a for a, b in rows)
    offs = sorted(a for a, _ in rows)
    ons = sorted(b for _, b in rows)
    kind = "stream" if stream else "json"
    print(
        f"{kind}: CPU µs per request on the event loop's thread, median of {pairs} pairs of "
        f"{size}-request blocks: off {statistics.median(offs):.1f}, on "
        f"{statistics.median(ons):.1f}, on - off per pair: median "
        f"{statistics.median(diffs):+.1f} (quartiles {diffs[len(diffs) // 4]:+.1f} .. "
        f"{diffs[3 * len(diffs) // 4]:+.1f}); the process's CPU, the export included: off "
        f"{statistics.median(whole['off']):.1f}, on {statistics.median(whole['on']):.1f}",
        flush=True,
    )
    for _app, _gateway, task, inbox in (off, on):
        await inbox.put({"type": "lifespan.shutdown"})
        await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--block", type=int, default=250)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    mock_port, sink_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    procs = [
        subprocess.Popen([sys.executable, str(MOCK), "--port", str(mock_port)]),
        subprocess.Popen(
            [sys.executable, str(HERE / "tracing_bench.py"), "--sink", str(sink_port)], env=env
        ),
    ]
    try:
        wait_ready(mock_port, "/v1/models")
        wait_ready(sink_port, "/count")
        uvloop.run(drive(mock_port, sink_port, args.pairs, args.block, args.stream))
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
