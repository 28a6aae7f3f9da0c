"""`create_app(config)`: the Litestar app, assembled from a validated config."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.datastructures import State

from policies.config import TurnoutConfig
from router import catalog, endpoints
from router.errors import EXCEPTION_HANDLERS
from router.gateway import Gateway


def create_app(config: TurnoutConfig) -> Litestar:
    gateway = Gateway.from_config(config)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        try:
            gateway.begin_start()
            yield
        finally:
            await gateway.aclose()

    return Litestar(
        route_handlers=[*endpoints.ROUTES, *catalog.ROUTES],
        lifespan=[lifespan],
        state=State({"gateway": gateway}),
        exception_handlers=dict(EXCEPTION_HANDLERS),
        request_max_body_size=None,  # router.body enforces the configured limit itself
        openapi_config=None,
        debug=False,
    )
