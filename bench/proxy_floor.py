"""The floor under Turnout's overhead: a bare ASGI proxy (bench/transport/bare_proxy.py:
read, POST upstream with aiohttp, answer) under granian and uvicorn against the bench's
mock upstream, measured as gateway_bench.py measures Turnout: sequential non-streaming
requests interleaved with direct ones (added p50), then wrk at 32 connections.

    python bench/proxy_floor.py [--sequential 2000] [--duration 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from gateway_bench import MOCK, ROOT, free_port, sequential, wait_ready, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    ports = {"direct": free_port(), "granian": free_port(), "uvicorn": free_port()}
    env = {**os.environ, "BARE_PROXY_UPSTREAM": f"http://127.0.0.1:{ports['direct']}"}
    app = "bench.transport.bare_proxy:app"
    servers = {
        "granian": ["-m", "granian", "--interface", "asgi", "--loop", "uvloop", "--no-ws"],
        "uvicorn": ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log"],
    }
    procs = [subprocess.Popen([sys.executable, str(MOCK), "--port", str(ports["direct"])])]
    for name, command in servers.items():
        procs.append(
            subprocess.Popen(
                [sys.executable, *command, "--port", str(ports[name]), app],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        wait_ready(ports["direct"], "/v1/models")
        for name in servers:
            wait_ready(ports[name], "/v1/models")
        seq = sequential(ports, args.sequential, stream=False)
        direct = seq["direct"]["p50_ms"]
        for name in servers:
            added = seq[name]["p50_ms"] - direct
            print(f"{name}: sequential p50 {seq[name]['p50_ms']:.3f} ms (added {added:+.3f})")
        print(f"direct: sequential p50 {direct:.3f} ms")
        for name, port in ports.items():
            print(f"{name}: wrk json c32 {wrk(port, 32, args.duration, False)['rps']:.0f} req/s")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
