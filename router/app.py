"""`create_app(config)`: the Litestar app, assembled from a validated config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from litestar import Litestar
from litestar.datastructures import State

from policies.config import TurnoutConfig
from policies.spend.factory import open_spend_store
from policies.storage.factory import open_storage
from router import catalog, endpoints, explain, metrics, spend
from router.batches import endpoints as batches
from router.batches.runner import BatchRunner
from router.errors import EXCEPTION_HANDLERS
from router.exposure import Listener, OpenAccessRefused
from router.files import endpoints as files
from router.gateway import Gateway
from router.hot_app import TurnoutApp
from router.logging import LogScrubber
from router.messages import endpoints as messages
from router.metrics import Metrics
from router.reload import reloading
from router.responses import endpoints as responses
from router.status import access as status_access
from router.status import routes as status

log = structlog.get_logger("turnout.app")


def create_app(
    config: TurnoutConfig,
    config_path: str | Path | None = None,
    *,
    clock: Callable[[], float] | None = None,
    listener: Listener | None = None,
    log_scrubber: LogScrubber | None = None,
) -> Litestar:
    """`config_path`: the file `config` came from; when given, the app reloads it on
    SIGHUP and whenever it changes (see router.reload). `clock`: wall-clock seconds for
    breakers and limits (tests inject one; reloads reuse it from `app.state.clock`).
    `listener`: where the server listens; `config`, and every config a reload brings, must
    pass its open-access check (None: the caller bound loopback itself, as tests do).
    `log_scrubber`: the log's processor (router.logging), pointed at the secrets of the
    config served, this one and each one a reload brings."""
    # `reload_refusal`: a worker may start on a file edited since `turnout serve` checked
    # it (uvicorn respawns a worker that died), so the sampler host rule holds here too.
    refusal = listener.reload_refusal(config) if listener is not None else None
    if refusal:
        raise OpenAccessRefused(refusal)
    observed = Metrics()  # beside the gateway, not in it: it outlives config reloads
    gateway = Gateway.from_config(
        config,
        clock=clock,
        observer=observed,
        sampler_host=listener.sampler_host if listener is not None else None,
    )
    log_scrubber = log_scrubber or LogScrubber()
    log_scrubber.use(gateway.redactor)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runner: BatchRunner | None = None
        try:
            startup = gateway.begin_start()
            storage = app.state.storage = await open_storage(config)
            log.info("storage_opened", where=storage.describe())
            runner = app.state.batch_runner = BatchRunner(
                storage, lambda: app.state.gateway, observed
            )
            runner.start()
            spend_store = await open_spend_store(config)  # the book outlives reloads
            gateway.spend.start(spend_store)
            log.info("spend_store_opened", where=spend_store.describe())
            async with reloading(app, config_path, observed, startup, listener):
                yield
        finally:
            if runner is not None:
                await runner.aclose()
            if app.state.get("storage") is not None:
                await app.state.storage.aclose()
            # The gateway serving now; the reloader closed any it replaced.
            await app.state.gateway.aclose()
            await gateway.spend.aclose()  # what is left flushed: spend is durable

    return TurnoutApp(
        route_handlers=[
            *endpoints.ROUTES,
            *files.ROUTES,
            *batches.ROUTES,
            *responses.ROUTES,
            *messages.ROUTES,
            *catalog.ROUTES,
            *metrics.ROUTES,
            *explain.ROUTES,
            *spend.ROUTES,
            *status.ROUTES,
        ],
        lifespan=[lifespan],
        state=State(
            {
                "gateway": gateway,
                "metrics": observed,
                "clock": clock,
                "log_scrubber": log_scrubber,
                # Signs the status page's cookie unless `status_page.session_secret` is set.
                status_access.SECRET_STATE: status_access.host_secret(config.storage.directory()),
            }
        ),
        exception_handlers=dict(EXCEPTION_HANDLERS),
        request_max_body_size=None,  # router.body enforces the configured limit itself
        openapi_config=None,
        debug=False,
    )
