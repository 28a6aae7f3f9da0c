"""ASGI server x upstream client comparison for the minimal Litestar proxy, driven by wrk.

Starts the mock upstream and one proxy process per (server, client) combination, each
on its own port, then runs wrk against every target in interleaved rounds: for each
round, for each concurrency, every target in turn (1 s warm-up, then the measured run).
The mock itself is measured too, as the ceiling. Everything shares the machine's cores
(wrk, proxy and mock compete), so read ratios, not absolute numbers.

    python bench/transport/proxy_compare.py --duration 5 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
MOCK_PORT = 9101
PATH = "/v1/chat/completions"
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    cmd: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class WrkResult:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def proxy_targets(clients: list[str], servers: list[str], first_port: int) -> list[Target]:
    upstream = f"http://127.0.0.1:{MOCK_PORT}{PATH}"
    targets: list[Target] = []
    port = first_port
    for server in servers:
        for client in clients:
            if server == "uvicorn":
                cmd = [sys.executable, str(HERE / "minimal_proxy.py"), "--client", client]
                cmd += ["--port", str(port), "--upstream", upstream]
            else:
                cmd = [str(VENV_BIN / "granian"), "--interface", "asgi", "--loop", "uvloop"]
                cmd += ["--workers", "1", "--host", "127.0.0.1", "--port", str(port)]
                cmd += ["--no-access-log", "--log-level", "warning", "--factory"]
                cmd += ["--working-dir", str(HERE), "minimal_proxy:create_app_from_env"]
            env = {"BENCH_CLIENT": client, "BENCH_UPSTREAM": upstream}
            targets.append(Target(f"{server} + {client}", port, cmd, env))
            port += 1
    return targets


def wait_ready(port: int, body: bytes, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=body)
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answered on port {port}")


def _ms(value: str, unit: str) -> float:
    return float(value) * UNIT_MS[unit]


def wrk(port: int, script: Path, conc: int, seconds: float) -> WrkResult:
    cmd = ["wrk", "-t2", f"-c{conc}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}{PATH}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.MULTILINE))
    p50, p99 = (re.fullmatch(r"([\d.]+)(\w+)", lat[k]) for k in ("50", "99"))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    errors += sum(int(x) for x in sock.groups()) if sock else 0
    return WrkResult(rps, _ms(*p50.groups()), _ms(*p99.groups()), errors)  # type: ignore[union-attr]


def report(title: str, names: list[str], results: dict[str, list[WrkResult]]) -> str:
    ref = statistics.median(r.rps for r in results[names[1]])
    lines = [
        f"### {title}",
        "",
        f"| target | req/s per round | median req/s | vs {names[1]} | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names:
        rs = results[name]
        med = statistics.median(r.rps for r in rs)
        lines.append(
            f"| {name} | {', '.join(f'{r.rps:,.0f}' for r in rs)} | {med:,.0f} "
            f"| {med / ref:.2f}x | {statistics.median(r.p50_ms for r in rs):.2f} "
            f"| {statistics.median(r.p99_ms for r in rs):.2f} | {sum(r.errors for r in rs)} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> None:
    script = HERE / ("post_stream.lua" if args.mode == "stream" else "post.lua")
    body = b'{"model":"m","messages":[],"stream":%s}' % (
        b"true" if args.mode == "stream" else b"false"
    )
    mock_cmd = [sys.executable, str(HERE / "mock_upstream.py"), "--port", str(MOCK_PORT)]
    mock = Target("mock upstream (direct)", MOCK_PORT, mock_cmd, {})
    targets = [mock, *proxy_targets(args.clients, args.servers, args.first_port)]
    procs = [subprocess.Popen(t.cmd, env={**os.environ, **t.env}) for t in targets]
    try:
        for target in targets:
            wait_ready(target.port, body)
        for conc in args.concurrency:
            results: dict[str, list[WrkResult]] = {t.name: [] for t in targets}
            for _ in range(args.rounds):
                for target in targets:
                    wrk(target.port, script, conc, 1)  # warm-up: fill pools, wake the server
                    results[target.name].append(wrk(target.port, script, conc, args.duration))
            title = f"{args.mode}, wrk -t2 -c{conc} -d{args.duration:g}s, {args.rounds} rounds"
            print(report(title, [t.name for t in targets], results), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["json", "stream"], default="json")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128])
    parser.add_argument(
        "--servers", nargs="+", choices=["uvicorn", "granian"], default=["uvicorn", "granian"]
    )
    parser.add_argument("--clients", nargs="+", default=["aiohttp", "httpx-aiohttp", "httpx"])
    parser.add_argument("--first-port", type=int, default=9201)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
