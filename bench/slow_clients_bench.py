"""Slow request bodies against a real `turnout serve`: how many are held, for how long,
and what each costs in memory, with the protection off (the baseline) and on.

Each client sends a keyed POST declaring `Content-Length: 60000`, then one byte every
`--drip` seconds, as the attack in issue 17 does. Three variants, one server each, in
one run so they share the machine's noise:

1. baseline: `body_timeout` 3600 s and `max_connections` 100000 (nothing cuts them,
   as before `server.body_timeout` existed);
2. guarded: the given `--body-timeout`, `max_connections` at its default (1024);
3. capped: the same, with `max_connections` below the number of clients.

Memory per held connection: the server's RSS (the process and its children, granian's
worker included) half a second after every client connected, minus its RSS before, over
the connections still held at that moment. Linux only (/proc).

    .venv/bin/python bench/slow_clients_bench.py --connections 200 --server granian
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

KEY = "sk-bench-slow"


@dataclass
class Outcome:
    """What happened to the clients of one variant."""

    wanted: int
    opened: int = 0
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    closed_at: list[float] = field(default_factory=list)  # seconds after connecting
    statuses: list[int] = field(default_factory=list)
    rss_delta_kib: float = 0.0
    held_at_sample: int = 0  # connections still open when the RSS was sampled


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and all its descendants, KiB."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except FileNotFoundError:
            continue
        total += next(int(ln.split()[1]) for ln in status.splitlines() if ln.startswith("VmRSS"))
        for task in tasks:
            stack += [int(c) for c in (task / "children").read_text().split()]
    return total


@contextmanager
def turnout(server: str, body_timeout: float, max_connections: int) -> Iterator[tuple[int, int]]:
    """A `turnout serve` process, live; yields its port and pid."""
    config = {
        # Never called: no slow body is ever read whole.
        "providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"m": {"deployments": [{"provider": "up", "model": "m"}]}},
        "keys": [{"key": KEY}],
        "server": {"body_timeout": body_timeout, "max_connections": max_connections},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "turnout.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        command = [sys.executable, "-m", "router", "serve", "--config", str(path)]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--server", server, "--log-level", "error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).is_success:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("turnout serve did not start")
                time.sleep(0.1)
            yield port, process.pid
        finally:
            process.terminate()
            process.wait(timeout=15)


async def until_closed(reader: asyncio.StreamReader) -> bytes:
    """All the server sent. A reset counts as a close: a server that closes while the
    client is still sending gets its answer replaced by a reset, at times."""
    received = b""
    try:
        while block := await reader.read(65536):
            received += block
    except ConnectionResetError:
        pass
    return received


async def slow_client(port: int, drip: float, outcome: Outcome, stop: asyncio.Event) -> None:
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        f"authorization: Bearer {KEY}\r\ncontent-type: application/json\r\n"
        "content-length: 60000\r\n\r\n{"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(head)
    outcome.opened += 1
    if outcome.opened == outcome.wanted:
        outcome.all_open.set()

    async def dripping() -> None:
        while not stop.is_set():
            await asyncio.sleep(drip)
            writer.write(b" ")
            await writer.drain()

    task = asyncio.create_task(dripping())
    read = asyncio.create_task(until_closed(reader))
    await asyncio.wait([read, asyncio.create_task(stop.wait())], return_when="FIRST_COMPLETED")
    if read.done() and not read.cancelled():
        answer = read.result()
        outcome.closed_at.append(time.monotonic() - started)
        outcome.statuses.append(int(answer.split(b" ", 2)[1]) if answer else 0)
    read.cancel()
    task.cancel()
    await asyncio.gather(read, task, return_exceptions=True)
    writer.close()


async def attack(port: int, pid: int, clients: int, drip: float, hold: float) -> Outcome:
    outcome = Outcome(clients)
    stop = asyncio.Event()
    before = rss_kib(pid)
    tasks = [asyncio.create_task(slow_client(port, drip, outcome, stop)) for _ in range(clients)]
    await outcome.all_open.wait()
    await asyncio.sleep(0.5)  # every head is in and being served
    outcome.rss_delta_kib = rss_kib(pid) - before
    outcome.held_at_sample = clients - len(outcome.closed_at)
    await asyncio.sleep(hold - 0.5)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return outcome


def run_variant(
    args: argparse.Namespace, name: str, body_timeout: float, cap: int
) -> dict[str, Any]:
    with turnout(args.server, body_timeout, cap) as (port, pid):
        outcome = asyncio.run(attack(port, pid, args.connections, args.drip, args.hold))
    held = args.connections - len(outcome.closed_at)
    answered = list(zip(outcome.closed_at, outcome.statuses, strict=True))
    cut = [t for t, status in answered if status == 408]
    busy = [t for t, status in answered if status == 503]
    return {
        "variant": name,
        "held": f"{held}/{args.connections}",
        "408": len(cut),
        "503": outcome.statuses.count(503),
        "reset": outcome.statuses.count(0),
        "cut p50 s": round(statistics.median(cut), 2) if cut else None,
        "cut max s": round(max(cut), 2) if cut else None,
        "503 max s": round(max(busy), 3) if busy else None,
        "RSS delta MiB": round(outcome.rss_delta_kib / 1024, 1),
        "KiB per held conn": round(outcome.rss_delta_kib / max(1, outcome.held_at_sample), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=["granian", "uvicorn"], default="granian")
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--drip", type=float, default=5.0, help="seconds between body bytes")
    parser.add_argument("--hold", type=float, default=6.0, help="seconds each variant runs")
    parser.add_argument("--body-timeout", type=float, default=2.0)
    args = parser.parse_args()
    rows = [
        run_variant(args, "baseline (no cut)", 3600, 100_000),
        run_variant(args, f"body_timeout={args.body_timeout:g}", args.body_timeout, 1024),
        run_variant(
            args,
            f"+ max_connections={args.connections // 4}",
            args.body_timeout,
            args.connections // 4,
        ),
    ]
    print(
        f"{args.server}, {args.connections} clients, one byte every {args.drip:g}s, "
        f"observed {args.hold:g}s"
    )
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
