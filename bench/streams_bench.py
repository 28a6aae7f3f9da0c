"""Thousands of slow streams open at once through one Turnout process: are they all
whole, and what does each open stream cost in memory?

One `turnout serve` (granian, the default server, one worker) per variant, in front of
`streams_upstream.py`, whose streams are held open after their first chunk until every
stream of the variant is open upstream; then the upstream is told to finish them (eight
chunks 50 ms apart). The provider and breaker are at their defaults; only
`server.max_connections` (4,096 by default) is raised to let the streams in, and
`server.http` is auto for the HTTP/2 variants. The clients run in this process, at most
`--ramp` streams waiting for their first chunk at a time, so that connecting does not turn
into a SYN flood: over HTTP/1.1, aiohttp with no pool limit (one connection per stream);
over HTTP/2 (cleartext, prior knowledge), httpx with `--per-connection` streams
multiplexed on each connection (granian allows 200), so Turnout holds one client
descriptor per connection and one upstream descriptor per stream.

Variants, in one run so that they share the machine's noise: the largest count sent to
the upstream directly over HTTP/1.1 (the baseline: the client and the upstream alone, no
Turnout), then each count through Turnout over HTTP/1.1 (`--streams`), then over HTTP/2
(`--http2`). Memory per open stream: Turnout's RSS (its process and
granian's worker) once every stream is open upstream, minus its RSS after a warm-up of
200 quick streams (over the variant's protocol), over the streams open. Linux only
(/proc); raises the soft open-file limit to what it needs, or to the hard one.

    .venv/bin/python bench/streams_bench.py           # HTTP/1.1: 2,000; HTTP/2: 2,000, 10,000
    .venv/bin/python bench/streams_bench.py --streams 2000 10000 --http2 10000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import httpx
import orjson
import yaml
from h2_client import H2Connection, StreamError
from prometheus_client.parser import text_string_to_metric_families
from slow_clients_bench import free_port, rss_kib
from streams_upstream import TEXT

HERE = Path(__file__).resolve().parent
BODY = {"messages": [{"role": "user", "content": "hold the line"}], "stream": True}
WARM_UP = 200
HEADERS = {"content-type": "application/json"}


@dataclass
class Run:
    """One variant's outcome."""

    name: str
    streams: int
    http2: bool = False
    per_connection: int = 1  # streams multiplexed on one client connection
    whole: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    peak_open: int = 0
    all_open_s: float = 0.0
    total_s: float = 0.0
    rss_before_kib: int = 0
    rss_open_kib: int = 0
    descriptors_open: int = 0  # the measured process's, once every stream is open
    attempts: dict[str, float] = field(default_factory=dict)
    breaker_transitions: float = 0.0

    @property
    def kib_per_stream(self) -> float:
        return (self.rss_open_kib - self.rss_before_kib) / max(self.peak_open, 1)

    @property
    def connections(self) -> int:
        return math.ceil(self.streams / self.per_connection)

    def outcome(self, lines: list[str]) -> None:
        """Counts one stream, from its lines as received."""
        parts: list[str] = []
        done = False
        for line in lines:
            if line.startswith("data: [DONE]"):
                done = True
            elif line.startswith("data: "):
                choices = orjson.loads(line[6:]).get("choices") or [{}]
                parts.append(choices[0].get("delta", {}).get("content") or "")
        if done and "".join(parts) == TEXT:
            self.whole += 1
        else:
            self.failures["not whole"] += 1


def raise_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    try:  # root may raise the hard limit too; children (Turnout, upstream) inherit it
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, max(need, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        print(f"open-file limit: {hard} (wanted {need}); expect failures", file=sys.stderr)


def descriptors(pid: int) -> int:
    """Open file descriptors of `pid` and all its descendants."""
    total = 0
    stack = [pid]
    while stack:
        current = stack.pop()
        with contextlib.suppress(FileNotFoundError):
            total += len(os.listdir(f"/proc/{current}/fd"))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
    return total


def wait_live(url: str, process: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url}{path} never answered")


@contextmanager
def process(command: list[str], url: str, ready_path: str) -> Iterator[int]:
    """A child process, once `ready_path` answers 200; yields its pid."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_live(url, child, ready_path)
        yield child.pid
    finally:
        child.terminate()
        child.wait(timeout=30)


@contextmanager
def upstream() -> Iterator[tuple[str, int]]:
    port = free_port()
    command = [sys.executable, str(HERE / "streams_upstream.py"), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with process(command, url, "/state") as pid:
        yield url, pid


@contextmanager
def turnout(upstream_url: str, *, http2: bool) -> Iterator[tuple[str, int]]:
    # `http: auto` rather than 2, so that the readiness probe (HTTP/1.1) gets in too.
    server = {"max_connections": 30_000, "http": "auto" if http2 else 1}
    config = {
        "server": server,
        "providers": {"up": {"kind": "openai", "base_url": f"{upstream_url}/v1"}},
        "models": {
            "held": {"deployments": [{"provider": "up", "model": "held"}]},
            "warm": {"deployments": [{"provider": "up", "model": "warm"}]},
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "turnout.yaml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        command = [sys.executable, "-m", "router", "serve", "--config", str(path)]
        command += ["--port", str(port), "--server", "granian", "--log-level", "error"]
        url = f"http://127.0.0.1:{port}"
        with process(command, url, "/health/ready") as pid:
            yield url, pid


async def http1_stream(
    session: aiohttp.ClientSession, url: str, model: str, ramp: asyncio.Semaphore, run: Run
) -> None:
    body = orjson.dumps({**BODY, "model": model})
    try:
        async with ramp:  # released once the first chunk is in
            response = await session.post(url, data=body, headers=HEADERS)
            if response.status != 200:
                run.failures[f"status {response.status}"] += 1
                response.release()
                return
            first = await response.content.readline()
        async with response:
            lines = [first, *[line async for line in response.content]]
        run.outcome([line.decode() for line in lines])
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        run.failures[type(exc).__name__] += 1


async def http2_stream(
    connection: H2Connection, path: str, model: str, ramp: asyncio.Semaphore, run: Run
) -> None:
    lines = connection.post(path, orjson.dumps({**BODY, "model": model}))
    try:
        async with ramp:  # released once the first chunk is in
            status, _ = await anext(lines)
            if status != 200:
                run.failures[f"status {status}"] += 1
                return
            _, first = await anext(lines, (status, b""))
        rest = [line.decode() async for _, line in lines]
        run.outcome([first.decode(), *rest])
    except (StreamError, StopAsyncIteration, orjson.JSONDecodeError) as exc:
        run.failures[type(exc).__name__] += 1
    finally:
        await lines.aclose()


async def clients(url: str, model: str, count: int, ramp: int, run: Run) -> None:
    gate = asyncio.Semaphore(ramp)
    if not run.http2:
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(
                *(http1_stream(session, url, model, gate, run) for _ in range(count))
            )
        return
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    opening = (H2Connection.open(host, port) for _ in range(math.ceil(count / run.per_connection)))
    connections = await asyncio.gather(*opening)
    try:
        await asyncio.gather(
            *(
                http2_stream(connections[i % len(connections)], parts.path, model, gate, run)
                for i in range(count)
            )
        )
    finally:
        for connection in connections:
            connection.close()


async def held_open(
    upstream_url: str, run: Run, measured_pid: int, streams: asyncio.Task[None]
) -> None:
    """Wait until every stream is open upstream (or the clients ended), sample the
    measured process's RSS and descriptors, then let the upstream finish them."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=upstream_url, timeout=10) as http:
        while not streams.done():
            state = (await http.get("/state")).json()
            run.peak_open = max(run.peak_open, state["open"])
            if state["open"] >= run.streams - sum(run.failures.values()):
                break
            await asyncio.sleep(0.2)
        run.all_open_s = time.monotonic() - started
        run.rss_open_kib = rss_kib(measured_pid)
        run.descriptors_open = descriptors(measured_pid)
        await http.post("/release")


async def variant(run: Run, ramp: int, through_turnout: bool) -> Run:
    with upstream() as (upstream_url, upstream_pid):
        if not through_turnout:
            run.rss_before_kib = rss_kib(upstream_pid)
            await measure(run, upstream_url, upstream_url, upstream_pid, ramp)
            return run
        with turnout(upstream_url, http2=run.http2) as (url, pid):
            warm = Run("warm", 0, run.http2, run.per_connection)
            await clients(f"{url}/v1/chat/completions", "warm", WARM_UP, ramp, warm)
            run.rss_before_kib = rss_kib(pid)
            await measure(run, url, upstream_url, pid, ramp)
            policy_series(url, run)
    return run


async def measure(run: Run, url: str, upstream_url: str, pid: int, ramp: int) -> None:
    started = time.monotonic()
    chat = f"{url}/v1/chat/completions"
    streams = asyncio.create_task(clients(chat, "held", run.streams, ramp, run))
    await held_open(upstream_url, run, pid, streams)
    await streams
    run.total_s = time.monotonic() - started


def policy_series(url: str, run: Run) -> None:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "turnout_attempts_total" and sample.labels["deployment"] == "up/held":
                run.attempts[sample.labels["outcome"]] = sample.value
            if sample.name == "turnout_breaker_transitions_total":
                run.breaker_transitions += sample.value


def header() -> None:
    print(
        "| variant | client HTTP | streams | client connections | whole | failed | open at once "
        "| descriptors all open | all open after s | total s | RSS before MiB "
        "| RSS all open MiB | KiB per open stream | attempts | breaker changes |"
    )
    print("|" + "---|" * 15, flush=True)


def row(r: Run) -> None:
    failed = ", ".join(f"{k}: {v}" for k, v in r.failures.items()) or "0"
    attempts = ", ".join(f"{k} {v:g}" for k, v in r.attempts.items()) or "-"
    print(
        f"| {r.name} | {'2' if r.http2 else '1.1'} | {r.streams:,} | {r.connections:,} "
        f"| {r.whole:,} | {failed} | {r.peak_open:,} | {r.descriptors_open:,} "
        f"| {r.all_open_s:.1f} | {r.total_s:.1f} | {r.rss_before_kib / 1024:.0f} "
        f"| {r.rss_open_kib / 1024:.0f} | {r.kib_per_stream:.1f} | {attempts} "
        f"| {r.breaker_transitions:g} |",
        flush=True,
    )


async def main_async(http1: list[int], http2: list[int], ramp: int, per_connection: int) -> None:
    most = max([*http1, *http2])
    # The bench's process holds a client socket per HTTP/1.1 stream; Turnout, two.
    raise_file_limit(2 * most + 4096)
    header()  # each row as its variant ends
    row(await variant(Run("direct (no Turnout)", most), ramp, through_turnout=False))
    for count in http1:
        row(await variant(Run("through Turnout", count), ramp, through_turnout=True))
    for count in http2:
        run = Run("through Turnout", count, http2=True, per_connection=per_connection)
        row(await variant(run, ramp, through_turnout=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--streams", type=int, nargs="*", default=[2000], help="counts over HTTP/1.1"
    )
    parser.add_argument(
        "--http2", type=int, nargs="*", default=[2000, 10_000], help="counts over HTTP/2"
    )
    parser.add_argument("--ramp", type=int, default=256, help="streams awaiting a first chunk")
    parser.add_argument(
        "--per-connection", type=int, default=100, help="HTTP/2 streams per client connection"
    )
    args = parser.parse_args()
    counts = sorted(args.streams), sorted(args.http2)
    asyncio.run(main_async(*counts, args.ramp, args.per_connection))


if __name__ == "__main__":
    main()
