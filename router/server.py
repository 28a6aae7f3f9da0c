"""Running the app under an ASGI server. Both uvicorn (uvloop + httptools) and granian
are supported; bench/README.md has the measurements behind the default."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
from typing import Any, Literal

from litestar import Litestar

from policies.loading import load_config
from router.app import create_app
from router.connection_guard import ConnectionGuard
from router.exposure import Listener
from router.logging import configure_logging

ServerName = Literal["granian", "uvicorn"]
SERVERS: tuple[ServerName, ...] = ("granian", "uvicorn")
_CONFIG_ENV = "TURNOUT_CONFIG"
_LOG_LEVEL_ENV = "TURNOUT_LOG_LEVEL"
_RELOAD_ENV = "TURNOUT_CONFIG_RELOAD"  # "0": serve the file as loaded, never reload it
# Where the server listens and whether --allow-open was given: every config the worker
# builds a gateway from, its reloads included, is checked against them (router.exposure).
_HOST_ENV = "TURNOUT_LISTEN_HOST"
_ALLOW_OPEN_ENV = "TURNOUT_ALLOW_OPEN"


def run(
    config_path: str,
    *,
    listener: Listener,
    port: int,
    server: ServerName,
    log_level: str,
    reload: bool = True,
) -> None:
    raise_open_file_limit()
    os.environ[_CONFIG_ENV] = str(config_path)
    os.environ[_LOG_LEVEL_ENV] = log_level
    os.environ[_RELOAD_ENV] = "1" if reload else "0"
    os.environ[_HOST_ENV] = listener.host
    os.environ[_ALLOW_OPEN_ENV] = "1" if listener.allow_open else "0"
    if server == "granian":
        _run_granian(listener.host, port, forward_sighup=reload)
    else:
        _run_uvicorn(listener.host, port)


def raise_open_file_limit() -> None:
    """Every open stream holds two descriptors (the client's connection and the
    upstream's): the soft limit (often 1,024) is raised to the hard one, as Go's runtime
    does, so that it is the hard limit (`ulimit -Hn`) an operator sizes. The server's
    workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def app_from_environment() -> Litestar:
    """The app factory a server process calls: config path and log level come from the
    environment, since granian starts the app in a worker process of its own."""
    configure_logging(os.environ.get(_LOG_LEVEL_ENV, "info"))
    path = os.environ[_CONFIG_ENV]
    reload = os.environ.get(_RELOAD_ENV, "1") != "0"
    if reload and threading.current_thread() is threading.main_thread():
        # A SIGHUP before the app's lifespan installs the reload handler would end the
        # process (the default action); until then it is ignored.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    host = os.environ.get(_HOST_ENV)
    listener = None if host is None else Listener(host, os.environ.get(_ALLOW_OPEN_ENV) == "1")
    return create_app(load_config(path), config_path=path if reload else None, listener=listener)


def guarded_app_from_environment() -> ConnectionGuard:
    """The app behind router.connection_guard, under both servers: the body deadline of
    the config it serves now (reloads included), and `server.max_connections` requests in
    flight, as read at start-up. Neither server's own limit is used: granian's
    backpressure queues requests past it unanswered, and uvicorn's `limit_concurrency`
    counts sockets that never sent a byte (uvicorn has no header timeout), so that many
    idle sockets would lock every client out."""
    app = app_from_environment()

    def body_timeout() -> float:
        return float(app.state.gateway.config.server.body_timeout)

    return ConnectionGuard(app, body_timeout, app.state.gateway.config.server.max_connections)


def _run_granian(host: str, port: int, *, forward_sighup: bool) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    limit = load_config(os.environ[_CONFIG_ENV]).server.max_connections
    server = Granian(
        "router.server:guarded_app_from_environment",
        factory=True,
        # Room above the guard's cap, so the requests past it reach the guard and are
        # answered 503 at once instead of waiting in granian's queue.
        backpressure=2 * limit,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        log_enabled=False,
        log_access=False,
    )
    if forward_sighup:
        _forward_sighup_to_workers(server)
    server.serve()


def _forward_sighup_to_workers(server: Any) -> None:
    """granian answers SIGHUP by respawning its workers, which would load the config
    without validating it first; Turnout's workers reload in place instead (router.reload),
    so granian's main process passes the signal on to them."""

    def forward(*_: object) -> None:
        for worker in list(server.wrks):
            pid = getattr(worker.inner, "pid", None)  # worker processes; threads have none
            if pid:
                os.kill(pid, signal.SIGHUP)

    server.signal_handler_reload = forward  # granian installs it when `serve` starts


def _run_uvicorn(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        guarded_app_from_environment(),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="on",
        proxy_headers=False,  # Turnout is the edge; client addresses are not used
        timeout_graceful_shutdown=10,
    )
