"""A throwaway server in a child process on a loopback port, for tests: the start, stop and
`with` that tests/redis_server.py and tests/s3_server.py share.

Hand-written because it is this small: start the command on a free port, poll until the
server answers, retry on another port if the first was taken in between, and stop it
(terminate, then kill if it will not go).
"""

from __future__ import annotations

import socket
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LoopbackServer(ABC):
    """A subclass says how to run its server (`_command`) and how to tell that it answers
    (`_answers`); `with Subclass() as server:` gives a started server at `server.port`, stopped
    on exit. `start(port=...)` brings one back where its clients look after a `stop()`."""

    name: ClassVar[str]  # for the error when it never answers
    start_timeout_s: ClassVar[float] = 30.0
    poll_s: ClassVar[float] = 0.05
    cwd: Path | None = None

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @abstractmethod
    def _command(self, port: int) -> list[str]: ...

    @abstractmethod
    def _answers(self) -> bool: ...

    def _ready(self) -> None:  # noqa: B027 (an optional hook, not an abstract one)
        """Runs once the server answers (e.g. to create what every test expects)."""

    def start(self, timeout_s: float | None = None, *, port: int | None = None) -> Self:
        """`port`: this one, else a free one; `timeout_s`: the class's `start_timeout_s`."""
        limit = self.start_timeout_s if timeout_s is None else timeout_s
        # The free port can be taken between probing and binding; a retry gets another.
        for _ in range(3):
            self.port = port or free_port()
            self._process = subprocess.Popen(
                self._command(self.port),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.cwd,
            )
            deadline = time.monotonic() + limit
            while self._process.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    self._ready()
                    return self
                time.sleep(self.poll_s)
            self.stop()
        raise RuntimeError(f"{self.name} did not start answering")

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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
