"""How soon does the app notice a client that hangs up mid-stream, per ASGI server?

The server side streams an SSE tick every 100 ms, through two apps:
  * ``litestar``: a Litestar ``Stream`` (what Turnout uses); Litestar listens for
    ``http.disconnect`` and cancels the stream, so we log when the generator stops;
  * ``raw``: a bare ASGI app that logs when ``receive()`` yields ``http.disconnect`` and
    when ``send()`` first raises (it gives up after 3 s so nothing leaks).
The client reads 3 ticks, closes the socket, and we read the server's log (wall clock,
same host) to get the delay from close to each event.

    python bench/transport/disconnect_check.py --trials 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get
from litestar.response import Stream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HERE = Path(__file__).resolve().parent
TICK = b"data: tick\n\n"
MAX_TICKS = 30


def log_event(trial: str, event: str) -> None:
    line = json.dumps({"t": time.time(), "trial": trial, "event": event})
    with open(os.environ["DISCONNECT_LOG"], "a") as f:
        f.write(line + "\n")


async def ticks(trial: str) -> AsyncIterator[bytes]:
    try:
        for _ in range(MAX_TICKS):
            yield TICK
            await asyncio.sleep(0.1)
        log_event(trial, "generator ran to the end (never stopped)")
    except BaseException as exc:
        log_event(trial, f"generator stopped ({type(exc).__name__})")
        raise


@get("/sse")
async def sse(request: Request[Any, Any, Any]) -> Stream:
    return Stream(ticks(request.query_params.get("trial", "?")), media_type="text/event-stream")


def create_litestar_app() -> Litestar:
    return Litestar(route_handlers=[sse], openapi_config=None, logging_config=None)


async def raw_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    trial = urllib.parse.parse_qs(scope["query_string"].decode()).get("trial", ["?"])[0]
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass  # the (empty) request body
        log_event(trial, "receive() -> http.disconnect")

    watcher = asyncio.create_task(watch())
    try:
        for _ in range(MAX_TICKS):
            await send({"type": "http.response.body", "body": TICK, "more_body": True})
            await asyncio.sleep(0.1)
        log_event(trial, "send() never raised")
    except Exception as exc:  # what a server raises here is what we are measuring
        log_event(trial, f"send() raised {type(exc).__name__}")
    await asyncio.sleep(0.5)  # let the watcher log before it is cancelled
    watcher.cancel()


def server_cmd(server: str, app: str, port: int) -> list[str]:
    target = (
        "disconnect_check:create_litestar_app" if app == "litestar" else "disconnect_check:raw_app"
    )
    factory = ["--factory"] if app == "litestar" else []
    if server == "uvicorn":
        return [sys.executable, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools",
                "--app-dir", str(HERE), "--port", str(port), "--log-level", "warning",
                "--no-access-log", *factory, target]  # fmt: skip
    granian = str(Path(sys.executable).parent / "granian")
    return [granian, "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
            "--port", str(port), "--log-level", "warning", "--no-access-log",
            "--working-dir", str(HERE), *factory, target]  # fmt: skip


def one_trial(port: int, trial: str) -> float:
    """Read 3 ticks, hang up; return the wall-clock time of the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /sse?trial={trial} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
        seen = b""
        while seen.count(TICK) < 3:
            seen += sock.recv(4096)
        closed_at = time.time()
    return closed_at


def read_events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def wait_for_final_event(log: Path, trial: str, timeout_s: float) -> list[dict[str, Any]]:
    """The trial's events once its stream has ended (generator or send loop), plus 0.6 s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = [ev for ev in read_events(log) if ev["trial"] == trial]
        if any(ev["event"].startswith(("generator", "send()")) for ev in events):
            time.sleep(0.6)
            break
        time.sleep(0.05)
    return [ev for ev in read_events(log) if ev["trial"] == trial]


def check(server: str, app: str, port: int, trials: int) -> list[str]:
    log = Path(tempfile.mkdtemp(prefix="disconnect_")) / "events.jsonl"
    proc = subprocess.Popen(
        server_cmd(server, app, port), env={**os.environ, "DISCONNECT_LOG": str(log)}
    )
    delays: dict[str, list[float]] = {}
    try:
        time.sleep(2.0)
        for i in range(trials):
            trial = f"{app}{i}"
            closed_at = one_trial(port, trial)
            for ev in wait_for_final_event(log, trial, timeout_s=MAX_TICKS * 0.1 + 1.5):
                delays.setdefault(ev["event"], []).append((ev["t"] - closed_at) * 1e3)
    finally:
        proc.terminate()
        proc.wait(10)
    return [
        f"| {server} | {app} | {event} | {len(ds)}/{trials} "
        f"| {statistics.median(ds):.1f} | {max(ds):.1f} |"
        for event, ds in sorted(delays.items())
    ] or [f"| {server} | {app} | (no event logged) | 0/{trials} | - | - |"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--port", type=int, default=9301)
    parser.add_argument(
        "--apps", nargs="+", choices=["litestar", "raw"], default=["litestar", "raw"]
    )
    args = parser.parse_args()
    rows = [
        "| server | app | event | seen | median ms after close | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for server in ("uvicorn", "granian"):
        for app in args.apps:
            rows += check(server, app, args.port, args.trials)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
