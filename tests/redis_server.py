"""A throwaway `redis-server` on loopback for tests, and the session fixture that runs one.

A real server rather than a fake: the Redis store's guarantees live in its Lua scripts,
which only a real Redis runs. Nothing is persisted (`--save ''`, no AOF) and the data
directory is a temporary one, so the server leaves nothing behind.

Test packages that need Redis re-export the fixture from their conftest:
`from tests.redis_server import redis_url as redis_url`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

MISSING = (
    "redis-server is not on PATH; the Redis store tests need a real one. "
    "Run scripts/ensure-redis.sh (or `make test`, which runs it) and try again."
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """`with RedisServer() as server:` gives `server.url`; the server stops on exit."""

    def __init__(self, executable: str | None = None) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(MISSING)
        self._executable = found
        self._dir = tempfile.TemporaryDirectory(prefix="turnout-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0, *, port: int | None = None) -> RedisServer:
        """`port`: this one (e.g. the port of a server stopped to simulate an outage, to
        bring it back empty where its clients look); else a free one."""
        # The free port can be taken between probing and binding; a retry gets another.
        for _ in range(3):
            self.port = port or _free_port()
            self._process = subprocess.Popen(
                [
                    self._executable,
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                    *("--dir", self._dir.name, "--daemonize", "no"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=Path(self._dir.name),
            )
            deadline = time.monotonic() + timeout_s
            while self._process.poll() is None and time.monotonic() < deadline:
                if _answers_ping(self.port):
                    return self
                time.sleep(0.01)
            self.stop()
        raise RuntimeError("redis-server did not start answering PING")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        self._dir.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis started once for the session. Fails (never skips) without
    redis-server: a skipped Redis suite would pass CI while testing nothing shared."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING, pytrace=False)
    with RedisServer() as server:
        yield server.url
