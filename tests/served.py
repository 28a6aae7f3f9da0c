"""Run a real `turnout serve` process for a test: its own process, on a free loopback port
(tests/turnout_server.py runs Turnout inside the test process instead)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVE = [sys.executable, "-m", "router", "serve"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class ServedTurnout:
    process: subprocess.Popen[bytes]
    port: int
    log: Path | None  # where its stderr goes; None: nowhere

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown runs. Under granian the router runs in a worker
        process, so the whole process group is killed (the process was started in a
        session of its own: `served_turnout(..., own_group=True)`)."""
        assert os.getpgid(self.process.pid) == self.process.pid, "needs own_group=True"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=15)


@contextmanager
def served_turnout(
    path: Path,
    config: dict[str, Any] | None = None,
    *,
    server: str | None = None,
    args: Sequence[str] = (),
    log: Path | None = None,
    stdout: int | None = None,
    http2: bool = False,
    ready_timeout: float = 30,
    stop_timeout: float = 15,
    own_group: bool = False,
) -> Iterator[ServedTurnout]:
    """`turnout serve --config path` (`config` written there first, when given), under
    `server` (else the default), once /health/ready answers 200 (asked over HTTP/2 with
    prior knowledge where `http2`); terminated on the way out. Its stderr goes to `log`.
    `own_group`: in a process group of its own, so that `ServedTurnout.kill` reaches its
    workers too."""
    if config is not None:
        path.write_text(yaml.safe_dump(config, allow_unicode=True))
    port = free_port()
    command = [*SERVE, "--config", str(path), "--port", str(port), *args]
    if server is not None:
        command += ["--server", server]
    if log is None:
        process = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.DEVNULL, start_new_session=own_group
        )
    else:
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=stdout, stderr=sink, start_new_session=own_group
            )
    served = ServedTurnout(process, port, log)
    try:
        _wait_ready(served, http2=http2, timeout=ready_timeout)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            # A shutdown that hangs fails the test, and leaves nothing running for the rest
            # of the suite (a worker whose server process is gone ends: router/orphan_guard).
            if own_group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.wait(timeout=stop_timeout)
            raise


def _wait_ready(served: ServedTurnout, *, http2: bool, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(http1=not http2, http2=http2, timeout=1) as probe:
        while True:
            try:
                if probe.get(f"{served.url}/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if served.process.poll() is not None:
                told = f":\n{served.log.read_text(errors='replace')}" if served.log else ""
                raise AssertionError(f"turnout serve exited{told}")
            assert time.monotonic() < deadline, "turnout serve did not become ready"
            time.sleep(0.1)
