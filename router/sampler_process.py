"""The sampler host's life, kept by `turnout serve`'s main process when several workers
serve a config with local providers (router/sampler_host.py is the host itself).

- Its socket is in a fresh directory that only this user can enter (mode 0700, from
  `tempfile.mkdtemp`) and is itself mode 0600: no other local user can call the models.
- It is started before the workers, so that they find it answering as they start.
- When it dies (a crash, the kernel's OOM killer), it is started again, after a pause that
  doubles with each death in a row (1 s up to 30 s, back to 1 s once it has lived a
  minute): meanwhile the workers fail the local deployments' calls at once, as a backend
  that refuses connections (their breakers count them), and once it is back, calls wait
  for its models to load, as at start-up. `turnout serve` itself keeps serving the rest.
- It is stopped after the workers have stopped (their graceful stop may still call it),
  and the directory removed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import structlog

log = structlog.get_logger("turnout.samplers")

FIRST_PAUSE_S = 1.0
LONGEST_PAUSE_S = 30.0
HEALTHY_AFTER_S = 60.0  # a host that lived this long died of something new: pause resets
STOP_WAIT_S = 10.0


class SamplerHostProcess:
    """`start` it, serve with `socket` in the workers' environment, then `stop` it."""

    def __init__(self, config_path: str, log_level: str) -> None:
        self._directory = Path(tempfile.mkdtemp(prefix="turnout-samplers-"))
        self.socket = str(self._directory / "samplers.sock")
        self._command = [
            sys.executable,
            *("-m", "router.sampler_host"),
            *("--config", config_path, "--socket", self.socket, "--log-level", log_level),
        ]
        self._lock = threading.Lock()  # between the keeper thread's restart and `stop`
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._born = 0.0
        self._keeper: threading.Thread | None = None

    def start(self, wait_s: float = 30.0) -> None:
        """Start the host and wait (up to `wait_s`) until its socket is there."""
        self._process = self._spawn()
        self._keeper = threading.Thread(target=self._keep, name="turnout-sampler-host", daemon=True)
        self._keeper.start()
        deadline = time.monotonic() + wait_s
        socket = Path(self.socket)
        while not socket.exists() and time.monotonic() < deadline:
            if self._process.poll() is not None:
                break  # the keeper logs it and starts another
            time.sleep(0.02)

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._keeper is not None:
            self._keeper.join(STOP_WAIT_S)
        shutil.rmtree(self._directory, ignore_errors=True)

    def _keep(self) -> None:
        pause = FIRST_PAUSE_S
        while True:
            process = self._process
            assert process is not None
            code = process.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - self._born >= HEALTHY_AFTER_S:
                pause = FIRST_PAUSE_S
            log.error("sampler_host_exited", host=process.pid, code=code, restart_in_s=pause)
            if self._stopping.wait(pause):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._process = self._spawn()
            log.info("sampler_host_restarted", host=self._process.pid)
            pause = min(pause * 2, LONGEST_PAUSE_S)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._born = time.monotonic()
        return subprocess.Popen(self._command)
