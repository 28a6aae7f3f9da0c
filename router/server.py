"""Running the app under an ASGI server. Both uvicorn (uvloop + httptools) and granian
are supported; bench/README.md has the measurements behind the default."""

from __future__ import annotations

import os
from typing import Literal

from litestar import Litestar

from policies.loading import load_config
from router.app import create_app
from router.logging import configure_logging

ServerName = Literal["granian", "uvicorn"]
SERVERS: tuple[ServerName, ...] = ("granian", "uvicorn")
_CONFIG_ENV = "TURNOUT_CONFIG"
_LOG_LEVEL_ENV = "TURNOUT_LOG_LEVEL"


def run(config_path: str, *, host: str, port: int, server: ServerName, log_level: str) -> None:
    os.environ[_CONFIG_ENV] = str(config_path)
    os.environ[_LOG_LEVEL_ENV] = log_level
    if server == "granian":
        _run_granian(host, port)
    else:
        _run_uvicorn(host, port)


def app_from_environment() -> Litestar:
    """The app factory a server process calls: config path and log level come from the
    environment, since granian starts the app in a worker process of its own."""
    configure_logging(os.environ.get(_LOG_LEVEL_ENV, "info"))
    return create_app(load_config(os.environ[_CONFIG_ENV]))


def _run_granian(host: str, port: int) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "router.server:app_from_environment",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        workers=1,
        log_enabled=False,
        log_access=False,
    ).serve()


def _run_uvicorn(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(
        app_from_environment(),
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
