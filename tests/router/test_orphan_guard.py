"""A granian worker whose server process is killed (SIGKILL: no shutdown runs) ends too,
so the port is free for the restarted Turnout and no orphan keeps running batch lines."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from tests.served import served_turnout
from tests.turnout_server import simple_config


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_the_worker_ends_when_the_server_process_is_killed(tmp_path: Path) -> None:
    config = simple_config({"up": "http://127.0.0.1:9/v1"})
    with served_turnout(tmp_path / "turnout.yaml", config, own_group=True) as served:
        workers = _children(served.process.pid)
        assert workers, "granian serves from a worker process"
        os.kill(served.process.pid, signal.SIGKILL)  # the main process only
        served.process.wait(timeout=15)

        deadline = time.monotonic() + 30
        while any(_alive(worker) for worker in workers):
            assert time.monotonic() < deadline, "the orphaned worker is still running"
            time.sleep(0.1)
        with socket.socket() as probe:  # the port is free again: no listener holds it
            # As a server binds (granian sets it too): a connection the server closed may
            # leave the port in TIME_WAIT for a minute, which only a listener must not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", served.port))
            probe.listen()
