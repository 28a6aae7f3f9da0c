"""Running the app under an ASGI server. Both uvicorn (uvloop + httptools) and granian
are supported; bench/README.md has the measurements behind the default.

What each server is trusted with, and what Turnout adds (router/connection_guard.py does
the rest, the same under both):

- Sockets that send nothing, or trickle their headers: `server.header_timeout` bounds the
  wait for each request's headers, from the connection's opening or its previous
  response's end, so idle and slow-header sockets are closed, not held. granian has it
  as hyper's `header_read_timeout`, which starts when the connection opens only in
  HTTP/1-only mode: in its default "auto" mode, the HTTP/1-or-2 detection waits for the
  first byte with no timer, so a socket that sends nothing was held for ever. Turnout
  serves HTTP/1.1 under granian (plain-text HTTP/2 needs a client that knows in advance;
  none of OpenAI's SDKs does), unless `server.http` opts into it, and with it into
  that hold (HTTP/2 multiplexes streams: a client's thousands of streams take one
  descriptor per connection, not one each). uvicorn has no header timeout at all (its
  `timeout_keep_alive` runs only between requests, until the next one's first byte):
  router/header_deadline.py adds one to the httptools protocol it runs.
- How many sockets: granian's `backpressure` counts open connections, not requests;
  past it, new connections wait unanswered in the kernel's backlog. It is sized on the
  process's file descriptors, not on `server.max_connections` (when it was twice that,
  a hundred idle sockets locked every client out). uvicorn has no socket cap; its
  `limit_concurrency` counts sockets too, so it is left unset.

Several workers (`--workers N`, `server.workers`): both servers fork or spawn N worker
processes that share the listening socket, each with its own app, event loop and
providers; the limits above are each worker's. A config with local providers gets one
sampler host beside them (router/sampler_process.py), so a model is loaded once.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import threading
from typing import Any, Literal

from litestar import Litestar

from policies.config import ServerSettings
from policies.loading import load_config
from policies.redaction import Redactor
from router.app import create_app
from router.connection_guard import ConnectionGuard
from router.exposure import Listener
from router.header_deadline import header_deadline_protocol
from router.logging import configure_logging
from router.orphan_guard import PARENT_ENV, watch_parent
from router.sampler_process import SamplerHostProcess
from router.workers import in_process_providers

ServerName = Literal["granian", "uvicorn"]
SERVERS: tuple[ServerName, ...] = ("granian", "uvicorn")
_CONFIG_ENV = "TURNOUT_CONFIG"
_LOG_LEVEL_ENV = "TURNOUT_LOG_LEVEL"
_RELOAD_ENV = "TURNOUT_CONFIG_RELOAD"  # "0": serve the file as loaded, never reload it
# Where the server listens and whether --allow-open was given: every config the worker
# builds a gateway from, its reloads included, is checked against them (router.exposure).
_HOST_ENV = "TURNOUT_LISTEN_HOST"
_ALLOW_OPEN_ENV = "TURNOUT_ALLOW_OPEN"
# How many workers serve (the rule for several is checked on each reload too), and the
# socket of the sampler host serving them their local models, if one runs.
_WORKERS_ENV = "TURNOUT_WORKERS"
_SAMPLERS_ENV = "TURNOUT_SAMPLER_HOST"
# uvicorn's spawned workers take their HTTP protocol by import path (its config is pickled
# to them, and a class made at run time cannot be): this one's header timeout is read here.
_HEADER_TIMEOUT_ENV = "TURNOUT_HEADER_TIMEOUT"
# granian's sockets never exceed half the open-file limit (the other half is for the
# upstreams' connections) nor this, whatever the limit (it may be unlimited).
_MAX_SOCKETS = 1 << 20


def run(
    config_path: str,
    *,
    listener: Listener,
    port: int,
    server: ServerName,
    log_level: str,
    reload: bool = True,
) -> None:
    """Serve until stopped, with `listener.workers` worker processes."""
    raise_open_file_limit()
    workers = listener.workers
    os.environ[_CONFIG_ENV] = str(config_path)
    os.environ[_LOG_LEVEL_ENV] = log_level
    os.environ[_RELOAD_ENV] = "1" if reload else "0"
    os.environ[_HOST_ENV] = listener.host
    os.environ[_ALLOW_OPEN_ENV] = "1" if listener.allow_open else "0"
    os.environ[_WORKERS_ENV] = str(workers)
    config = load_config(config_path)
    if server == "granian" or workers > 1:
        os.environ[PARENT_ENV] = str(os.getpid())  # its workers end when it is gone
    # Only a host this process started is ever used: one named by an inherited
    # environment would turn local providers into remote ones pointed at its socket.
    os.environ.pop(_SAMPLERS_ENV, None)
    samplers = None
    if workers > 1 and in_process_providers(config):
        configure_logging(log_level, with_pid=True).use(Redactor.from_config(config))
        samplers = SamplerHostProcess(str(config_path), log_level)
    try:
        if samplers is not None:
            # Inside the `try`: a Ctrl-C while the host loads still stops it.
            samplers.start()
            os.environ[_SAMPLERS_ENV] = samplers.socket
        if server == "granian":
            _run_granian(listener.host, port, config.server, workers, forward_sighup=reload)
        else:
            _run_uvicorn(listener.host, port, config.server, workers, forward_sighup=reload)
    finally:
        if samplers is not None:
            samplers.stop()


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
    workers = int(os.environ.get(_WORKERS_ENV, "1"))
    scrubber = configure_logging(os.environ.get(_LOG_LEVEL_ENV, "info"), with_pid=workers > 1)
    watch_parent()
    path = os.environ[_CONFIG_ENV]
    reload = os.environ.get(_RELOAD_ENV, "1") != "0"
    if reload and threading.current_thread() is threading.main_thread():
        # A SIGHUP before the app's lifespan installs the reload handler would end the
        # process (the default action); until then it is ignored.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    host = os.environ.get(_HOST_ENV)
    listener = None
    if host is not None:
        allow_open = os.environ.get(_ALLOW_OPEN_ENV) == "1"
        listener = Listener(host, allow_open, workers, os.environ.get(_SAMPLERS_ENV))
    return create_app(
        load_config(path),
        config_path=path if reload else None,
        listener=listener,
        log_scrubber=scrubber,
    )


def guarded_app_from_environment() -> ConnectionGuard:
    """The app behind router.connection_guard, under both servers: the body deadline of
    the config it serves now (reloads included), and `server.max_connections` requests in
    flight, as read at start-up. Neither server's own limit is used: both count sockets,
    not requests (see the module's docstring), and granian's queues instead of refusing."""
    app = app_from_environment()

    def body_timeout() -> float:
        return float(app.state.gateway.config.server.body_timeout)

    def send_timeout() -> float:
        return float(app.state.gateway.config.server.send_timeout)

    def upload_rate() -> float:
        return float(app.state.gateway.config.server.upload_min_rate)

    server = app.state.gateway.config.server
    return ConnectionGuard(
        app,
        body_timeout,
        server.max_connections,
        server.per_key_connections,
        send_timeout,
        upload_rate,
    )


def _run_granian(
    host: str, port: int, settings: ServerSettings, workers: int, *, forward_sighup: bool
) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings, HTTP2Settings

    server = Granian(
        "router.server:guarded_app_from_environment",
        factory=True,
        # HTTP/1 only unless `server.http` says otherwise: in "auto" and "2" modes no
        # header timeout runs until the first byte (README, "Security").
        http=HTTPModes(str(settings.http)),
        http1_settings=HTTP1Settings(header_read_timeout=_milliseconds(settings.header_timeout)),
        # An HTTP/2 connection whose client stops answering pings is closed: the nearest
        # to a header timeout that HTTP/2 has once its preface is in.
        http2_settings=HTTP2Settings(
            keep_alive_interval=_milliseconds(settings.header_timeout),
            keep_alive_timeout=math.ceil(settings.header_timeout),
        ),
        backpressure=_granian_socket_cap(settings.max_connections),
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=workers,
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


def _granian_socket_cap(max_requests: int) -> int:
    """granian's `backpressure`: the connections it holds open at once. Half the open-file
    limit (as raised by `raise_open_file_limit`), since each request in flight may hold an
    upstream connection too; never under twice `server.max_connections`, so that with
    every request slot taken there is room for keep-alive sockets and for the next
    requests to reach the guard and be answered 503."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    descriptors = _MAX_SOCKETS * 2 if soft == resource.RLIM_INFINITY else soft
    return max(2 * max_requests, min(descriptors // 2, _MAX_SOCKETS))


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _run_uvicorn(
    host: str, port: int, settings: ServerSettings, workers: int, *, forward_sighup: bool
) -> None:
    if workers > 1:
        _run_uvicorn_workers(host, port, settings, workers, forward_sighup=forward_sighup)
        return
    import uvicorn

    uvicorn.run(
        guarded_app_from_environment(),
        **_uvicorn_options(host, port, settings),
        http=header_deadline_protocol(settings.header_timeout),
    )


def _uvicorn_options(host: str, port: int, settings: ServerSettings) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "loop": "uvloop",
        # Between requests the header deadline rules; uvicorn's own idle timer is set no
        # shorter, so that an idle keep-alive socket is closed at the same time as under
        # granian (hyper's header timeout covers that wait too).
        "timeout_keep_alive": math.ceil(settings.header_timeout),
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        "proxy_headers": False,  # Turnout is the edge; client addresses are not used
        "timeout_graceful_shutdown": 10,
    }


def _run_uvicorn_workers(
    host: str, port: int, settings: ServerSettings, workers: int, *, forward_sighup: bool
) -> None:
    """uvicorn's own supervisor, as `uvicorn.run` starts it for `workers`, with SIGHUP
    passed on to the workers (it would respawn them instead: see `_forward_sighup_to_workers`)."""
    from uvicorn import Config
    from uvicorn.supervisors.multiprocess import Multiprocess

    class ForwardingMultiprocess(Multiprocess):
        def handle_hup(self) -> None:
            if not forward_sighup:
                return
            for process in self.processes:
                if process.pid:
                    os.kill(process.pid, signal.SIGHUP)

    os.environ[_HEADER_TIMEOUT_ENV] = repr(settings.header_timeout)
    config = Config(
        "router.server:guarded_app_from_environment",
        factory=True,
        workers=workers,
        **_uvicorn_options(host, port, settings),
        http="router.server:WorkerHeaderDeadline",
    )
    ForwardingMultiprocess(config, sockets=[config.bind_socket()]).run()


# In a uvicorn worker, imported by path (see `_HEADER_TIMEOUT_ENV`); elsewhere unused.
WorkerHeaderDeadline = header_deadline_protocol(float(os.environ.get(_HEADER_TIMEOUT_ENV, "10")))
