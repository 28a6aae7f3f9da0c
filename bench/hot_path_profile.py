"""Where one request's time goes inside Turnout, without a server or a client in the way.

Starts the bench's mock upstream (bench/transport/mock_upstream.py) on loopback and drives
the app a server would run (router.connection_guard around `create_app`, the JSON log line
rendered to /dev/null) with ASGI calls straight from Python: `count` sequential chat
requests (and, with `--stream`, streamed ones), each answered by the mock over a real
socket. Prints wall µs per request and the CPU µs Turnout's process used per request (the
figure that bounds one process's requests/s, less disturbed by other work on the cores than
wall time), and, with `--profile`, cProfile's top entries timed in CPU time (inflated
roughly 2-3x by the profiler; PROFILE_DUMP=path also writes the stats there).

    python bench/hot_path_profile.py [--count 5000] [--stream] [--profile] [--sort tottime]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from gateway_bench import BODY, MOCK, free_port, wait_ready  # noqa: E402

from policies.loading import load_config  # noqa: E402
from router.app import create_app  # noqa: E402
from router.connection_guard import ConnectionGuard  # noqa: E402
from router.logging import configure_logging  # noqa: E402


async def call(app: Any, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, bytes]:
    """One POST through the ASGI app: (status, whole response body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", b"Bearer sk-bench-team"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    done = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # as the servers do: a disconnect once the response is sent
        return {"type": "http.disconnect"}

    status = 0
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                done.set()

    await app(scope, receive, send)
    return status, b"".join(parts)


async def lifespan(app: Any) -> tuple[asyncio.Task[None], asyncio.Queue[dict[str, Any]]]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.get_running_loop().create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    return task, inbox


async def drive(config_path: str, count: int, stream: bool, profile: bool, sort: str) -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)  # the log line is rendered, to /dev/null
    os.close(devnull)
    scrubber = configure_logging("info")
    inner = create_app(load_config(config_path), log_scrubber=scrubber)
    app = ConnectionGuard(inner, lambda: 30.0, 10_000, None)
    task, inbox = await lifespan(app)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if inner.state.gateway.ready:
            break
    for kind in ["json", "stream"] if stream else ["json"]:
        body = json.dumps({**BODY, "stream": kind == "stream"}).encode()
        for _ in range(300):  # warm-up
            status, out = await call(app, body)
            assert status == 200, out[:300]
        profiler = cProfile.Profile(time.process_time) if profile else None
        start, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
        if profiler:
            profiler.enable()
        for _ in range(count):
            await call(app, body)
        if profiler:
            profiler.disable()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        own = time.thread_time() - own
        print(
            f"{kind}: {elapsed / count * 1e6:.1f} µs per request, of which Turnout's process "
            f"used {cpu / count * 1e6:.1f} µs of CPU, {own / count * 1e6:.1f} µs of it on the "
            f"event loop's thread ({count} requests)"
        )
        if profiler:
            if os.environ.get("PROFILE_DUMP"):
                profiler.dump_stats(f"{os.environ['PROFILE_DUMP']}.{kind}")
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(45)
            print(out.getvalue())
    await inbox.put({"type": "lifespan.shutdown"})
    await task


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--stream", action="store_true", help="streamed requests too")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--sort", default="tottime")
    parser.add_argument(
        "--otlp", metavar="URL", help="tracing on, every request sampled, spans sent to URL"
    )
    args = parser.parse_args()
    port = free_port()
    config = {
        "providers": {"mock": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1"}},
        "models": {"mock-model": {"deployments": [{"provider": "mock", "model": "mock-model"}]}},
    }
    if args.otlp:
        config["telemetry"] = {"otlp_endpoint": args.otlp}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        json.dump(config, f)
    mock = subprocess.Popen([sys.executable, str(MOCK), "--port", str(port)])
    try:
        wait_ready(port, "/v1/models")
        uvloop.run(drive(f.name, args.count, args.stream, args.profile, args.sort))
    finally:
        mock.terminate()
        mock.wait(timeout=10)
        os.unlink(f.name)


if __name__ == "__main__":
    main()
