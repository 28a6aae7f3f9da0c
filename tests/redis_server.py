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
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pytest

from tests.server_process import LoopbackServer

MISSING = (
    "redis-server is not on PATH; the Redis store tests need a real one. "
    "Run scripts/ensure-redis.sh (or `make test`, which runs it) and try again."
)


class RedisServer(LoopbackServer):
    """`with RedisServer() as server:` gives `server.url`; the server stops on exit.
    `start(port=server.port)` after `stop()` (e.g. to simulate an outage) brings it back,
    empty, where its clients look."""

    name = "redis-server"
    start_timeout_s = 10.0
    poll_s = 0.01

    def __init__(self, executable: str | None = None) -> None:
        super().__init__()
        found = executable or shutil.which("redis-server")
        if found is None:
            raise FileNotFoundError(MISSING)
        self._executable = found
        self._dir = tempfile.TemporaryDirectory(prefix="turnout-redis-")
        self.cwd = Path(self._dir.name)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _command(self, port: int) -> list[str]:
        return [
            self._executable,
            *("--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no"),
            *("--dir", self._dir.name, "--daemonize", "no"),
        ]

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, traceback)
        self._dir.cleanup()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis started once for the session. Fails (never skips) without
    redis-server: a skipped Redis suite would pass CI while testing nothing shared."""
    if shutil.which("redis-server") is None:
        pytest.fail(MISSING, pytrace=False)
    with RedisServer() as server:
        yield server.url
