"""A granian worker ends when the process that started it is gone.

granian serves the app from a worker process of its own. When the main process dies
without stopping it (SIGKILL, an OOM kill), the worker lives on: it holds the port, so a
restarted Turnout cannot bind it, and it keeps running batch lines beside the restarted
one. Linux's PR_SET_PDEATHSIG would be the kernel's way, but it fires when the *thread*
that forked the worker exits, which in granian need not be the process's end. So the
worker watches its parent id instead, once a second from a daemon thread: reparented, it
asks itself to stop (SIGTERM: the lifespan closes the storage and providers), and ends at
once if that has not happened in `grace_s`.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import structlog

log = structlog.get_logger("turnout.server")
PARENT_ENV = "TURNOUT_SERVER_PID"


def watch_parent(grace_s: float = 10.0, every_s: float = 1.0) -> threading.Thread | None:
    """Start watching, in a worker whose parent set `PARENT_ENV` (None: not a worker)."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None or not parent.isdigit() or int(parent) == os.getpid():
        return None
    watcher = threading.Thread(
        target=_watch, args=(int(parent), grace_s, every_s), name="turnout-orphan-guard"
    )
    watcher.daemon = True
    watcher.start()
    return watcher


def _watch(parent: int, grace_s: float, every_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    log.error("server_process_gone", parent=parent, worker=os.getpid())
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(1)
