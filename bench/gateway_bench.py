"""Turnout's overhead against a fast mock upstream, measured in one interleaved run.

Starts the mock upstream (bench/transport/mock_upstream.py) and one Turnout process, then:
1. sequential non-streaming requests, alternating direct / through Turnout → added p50, p99;
2. sequential streaming requests, alternating → added time to first token (first content
   chunk) and to the end of the stream;
3. wrk at 32 and 128 connections, direct and through Turnout interleaved, non-streaming and
   streaming → sustained requests/s, p50, p99, errors.

    python bench/gateway_bench.py [--sequential 2000] [--duration 8] [--rounds 2]
        [--servers granian,uvicorn,granian+policy,granian*2] [--baseline /tmp/base]

A server name ending in `@base` (e.g. `granian@base`) runs the Turnout of another checkout,
given by `--baseline` (e.g. `git worktree add /tmp/base c68bbc6`), with this venv: its
process starts in that directory with PYTHONPATH pointing there, and the bench checks that
it imports `router` from there. Old and new then share one run, so their ratio is fair on
noisy shared cores.

A server name with `*N` (e.g. `granian*2`, `uvicorn+policy*4`) runs Turnout with
`--workers N`; its config adds `state: {per_worker: true}` (no Redis: each worker keeps its
own counts, which the bench's limits never reach).

A server name ending in `+policy` runs Turnout with the policy layer in use: a team key,
rpm/tpm limits per key and per team (never reached), `least-latency` over two deployments
of the mock, breakers, metrics. Every request carries the team's bearer key (the mock and
the open Turnouts ignore it).

Only 127.0.0.1 is ever contacted; every phase is bounded in count or time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MOCK = HERE / "transport" / "mock_upstream.py"
LUA = {False: HERE / "transport" / "post.lua", True: HERE / "transport" / "post_stream.lua"}
BENCH_KEY = "sk-bench-team"
BODY = json.loads(re.search(r"wrk.body = '(.*)'", LUA[False].read_text()).group(1))  # type: ignore[union-attr]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing ready on port {port}")


@contextmanager
def processes(
    mock_port: int, turnouts: dict[str, int], baseline: Path | None = None
) -> Iterator[None]:
    """The mock upstream and one Turnout process per ASGI server named in `turnouts`."""
    base_url = f"http://127.0.0.1:{mock_port}/v1"
    plain = {
        "providers": {"mock": {"kind": "openai", "base_url": base_url}},
        "models": {"mock-model": {"deployments": [{"provider": "mock", "model": "mock-model"}]}},
    }
    policy = {
        "providers": {
            "mock": {"kind": "openai", "base_url": base_url},
            "mock2": {"kind": "openai", "base_url": base_url},
        },
        "models": {
            "mock-model": {
                "strategy": "least-latency",
                "deployments": [
                    {"provider": "mock", "model": "mock-model"},
                    {"provider": "mock2", "model": "mock-model"},
                ],
            }
        },
        "teams": {
            "bench": {
                "keys": [BENCH_KEY],
                "models": ["mock-model"],
                "limits": {"rpm": 100_000_000, "tpm": 10_000_000_000},
                "key_limits": {"rpm": 100_000_000},
            }
        },
    }
    files: dict[tuple[bool, bool], str] = {}
    for with_policy, config in ((False, plain), (True, policy)):
        for several in (False, True):
            shape = {**config, "state": {"per_worker": True}} if several else config
            with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
                json.dump(shape, f)  # JSON is YAML
                files[with_policy, several] = f.name
    procs = [subprocess.Popen([sys.executable, str(MOCK), "--port", str(mock_port)])]
    for name, port in turnouts.items():
        name, _, checkout = name.partition("@")
        name, _, workers = name.partition("*")
        server, _, variant = name.partition("+")
        path = files[variant == "policy", int(workers or 1) > 1]
        command = ["-m", "router", "serve", "--config", path, "--port", str(port)]
        if workers:
            command += ["--workers", workers]
        root, env = ROOT, None
        if checkout:
            if baseline is None:
                raise SystemExit(f"{name}@{checkout} needs --baseline")
            root, env = baseline, {**os.environ, "PYTHONPATH": str(baseline)}
            check_imports_from(root, env)
        procs.append(
            subprocess.Popen(
                [sys.executable, *command, "--server", server],
                cwd=root,
                env=env,
                stderr=subprocess.DEVNULL,  # the per-request JSON log line is still rendered
            )
        )
    try:
        wait_ready(mock_port, "/v1/models")
        for port in turnouts.values():
            wait_ready(port, "/health/ready")
        yield
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)
        for path in files.values():
            os.unlink(path)


def check_imports_from(root: Path, env: dict[str, str]) -> None:
    """The baseline's packages, not the installed ones, are what its process imports."""
    code = "import router, policies, providers as p; print(router.__file__, policies.__file__)"
    code += "; print(p.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    if not all(Path(f).resolve().is_relative_to(root.resolve()) for f in out):
        raise SystemExit(f"baseline imports from elsewhere: {out}")


def one_request(conn: http.client.HTTPConnection, stream: bool) -> tuple[float, float]:
    """(seconds to first content chunk or whole body, seconds to the end)."""
    body = json.dumps({**BODY, "stream": stream}).encode()
    start = time.perf_counter()
    headers = {"content-type": "application/json", "authorization": f"Bearer {BENCH_KEY}"}
    conn.request("POST", "/v1/chat/completions", body, headers)
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:200]!r}")
    if not stream:
        response.read()
        end = time.perf_counter() - start
        return end, end
    first = 0.0
    while line := response.readline():
        if (
            not first
            and line.startswith(b"data:")
            and b'"content":"' in line
            and b'"content":""' not in line
        ):
            first = time.perf_counter() - start
    return first, time.perf_counter() - start


def sequential(ports: dict[str, int], count: int, stream: bool) -> dict[str, dict[str, float]]:
    """`count` requests per target (after 200 of warm-up), interleaved request by request
    in a shuffled order (seeded), never asking one target twice in a row: every target
    takes every place, after every other, about equally often. (This used to alternate the
    order and its reverse, so the first and last targets were asked twice in a row, warm,
    every other time: on this machine the variants in the middle of four read ~0.25 ms
    slower than the same code at an end, measured by swapping them.)"""
    conns = {name: http.client.HTTPConnection("127.0.0.1", port) for name, port in ports.items()}
    names = list(ports)
    shuffler = random.Random(20)
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    last = ""
    for i in range(count + 200):
        order = names[:]
        shuffler.shuffle(order)
        if order[0] == last:
            order.append(order.pop(0))
        last = order[-1]
        for name in order:
            sample = one_request(conns[name], stream)
            if i >= 200:  # warm-up discarded
                samples[name].append(sample)
    return {name: summarize(values) for name, values in samples.items()}


def summarize(values: list[tuple[float, float]]) -> dict[str, float]:
    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000.0

    first = [v[0] for v in values]
    total = [v[1] for v in values]
    return {
        "first_p50_ms": pct(first, 0.5),
        "first_p99_ms": pct(first, 0.99),
        "p50_ms": pct(total, 0.5),
        "p99_ms": pct(total, 0.99),
        "mean_ms": statistics.fmean(total) * 1000.0,
    }


def wrk(port: int, connections: int, duration: int, stream: bool) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(LUA[stream]),
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": to_ms(lat["50"]),
        "p99_ms": to_ms(lat["99"]),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",  # type: ignore[dict-item]
    }


def to_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="granian,uvicorn", help="Turnout under each")
    parser.add_argument("--baseline", type=Path, help="checkout run by servers named NAME@base")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gateway.json")
    args = parser.parse_args()
    turnouts = {name: free_port() for name in args.servers.split(",")}
    ports = {"direct": free_port(), **turnouts}
    results: dict[str, object] = {}
    with processes(ports["direct"], turnouts, args.baseline):
        for stream in (False, True):
            kind = "stream" if stream else "json"
            seq = sequential(ports, args.sequential, stream)
            results[f"sequential_{kind}"] = seq
            report_sequential(kind, seq)
        for stream in (False, True):
            for connections in (32, 128):
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in ports}
                for _ in range(args.rounds):
                    for name, port in ports.items():
                        runs[name].append(wrk(port, connections, args.duration, stream))
                key = f"wrk_{'stream' if stream else 'json'}_c{connections}"
                results[key] = runs
                report_wrk(key, runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nraw results: {args.out}")


def report_sequential(kind: str, seq: dict[str, dict[str, float]]) -> None:
    direct = seq["direct"]
    print(f"\n## sequential, {kind} (ms; added = through Turnout minus direct)")
    for key in ("p50_ms", "p99_ms", "first_p50_ms", "first_p99_ms"):
        cells = [f"direct {direct[key]:7.3f}"]
        for name, t in seq.items():
            if name != "direct":
                cells.append(f"{name} {t[key]:7.3f} (added {t[key] - direct[key]:+7.3f})")
        print(f"{key:>14}: " + "  ".join(cells))


def report_wrk(key: str, runs: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n## {key}")
    for i, direct in enumerate(runs["direct"]):
        cells = [f"direct {direct['rps']:7.0f} rps p99 {direct['p99_ms']:6.2f}"]
        for name, rounds in runs.items():
            if name != "direct":
                t = rounds[i]
                cells.append(
                    f"{name} {t['rps']:6.0f} rps p50 {t['p50_ms']:6.2f} p99 {t['p99_ms']:6.2f} "
                    f"non2xx {t['non_2xx']:.0f} {t['socket_errors']}".rstrip()
                )
        print(f"round {i}: " + " | ".join(cells))


if __name__ == "__main__":
    main()
