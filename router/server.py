"""Running the app under an ASGI server (chosen by measurement: bench/transport/RESULTS.md)."""

from __future__ import annotations

import uvicorn

from policies.config import TurnoutConfig
from router.app import create_app
from router.logging import configure_logging


def run(config: TurnoutConfig, *, host: str, port: int, log_level: str = "info") -> None:
    configure_logging(log_level)
    uvicorn.run(
        create_app(config),
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
