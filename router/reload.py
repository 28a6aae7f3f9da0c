"""Config reload, on SIGHUP and when the config file changes.

The file is loaded and validated first; a bad one is rejected (and logged) and the running
config keeps serving. A good one becomes a new `Gateway` built beside the running one: it
takes over the providers whose settings did not change and starts only the new ones, and
only once it is ready is it swapped into `app.state.gateway`, in one assignment. A request
reads that attribute once when it starts, so requests in flight finish on the gateway they
began with; providers the new gateway dropped are closed once those requests have ended.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from litestar import Litestar
from watchfiles import Change, awatch

from policies.config import ServerSettings, TurnoutConfig
from policies.loading import ConfigError, load_config
from policies.storage.factory import shared
from providers.base import Provider
from router.exposure import Listener
from router.gateway import Gateway
from router.metrics import Metrics
from router.status.reloads import ReloadLog
from router.task_stop import cancel_until_done

log = structlog.get_logger("turnout.reload")

STOP_WAIT_S = 5.0  # the longest `aclose` waits for the reloader's tasks (router/task_stop.py)
DRAIN_GRACE_S = 5.0  # past the old config's total deadline, a request cannot still be running


class ReloadRejected(Exception):
    """The new config cannot serve; the message says why (file, key path, provider)."""


class Reloader:
    """Reloads one app's config from `path`. `start` installs the triggers (file watcher,
    SIGHUP) for the app's lifespan; `aclose` removes them."""

    def __init__(
        self,
        app: Litestar,
        path: str | Path,
        metrics: Metrics | None = None,
        startup: asyncio.Task[None] | None = None,
        debounce_ms: int = 300,
        listener: Listener | None = None,
    ) -> None:
        """`startup`: the first gateway's start-up, if it may still be running.
        `listener`: where the server listens; a config it refuses is never served."""
        self.path = Path(path)
        self._listener = listener
        self._startup = startup
        self._app = app
        self._metrics = metrics
        self._debounce_ms = debounce_ms
        self._lock = asyncio.Lock()  # one reload at a time, in the order triggered
        self._tasks: set[asyncio.Task[Any]] = set()
        self._retiring: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sighup = False
        self.history = ReloadLog()  # the last reloads, for the status page

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the reloader has not started")
        return self._loop

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._spawn(self.watch())
        self._sighup = install_sighup(self._loop, lambda: self.trigger("sighup"))

    def trigger(self, reason: str) -> None:
        """Reload in the background (a signal handler cannot wait for it)."""
        self._spawn(self.reload(reason))

    async def reload(self, reason: str) -> bool:
        """Load the file and serve it if it is valid and its providers start; otherwise
        keep serving the running config. True when the new config is (or already was) live."""
        async with self._lock:
            old: Gateway = self._app.state.gateway
            if self._startup is not None:
                # A reload during start-up waits for it: providers can be reused only
                # once started, and a local model should not load twice at once.
                await asyncio.wait([self._startup])
            try:
                config = await asyncio.to_thread(load_config, self.path)
                self._check_exposure(config)
                if config == old.config and old.ready:  # a failed start-up is retried
                    log.info("config_unchanged", path=str(self.path), trigger=reason)
                    self._count("unchanged")
                    self.history.record(old.clock(), "unchanged", reason)
                    return True
                new = await _ready_gateway(config, old, self.path, self._metrics)
            except (ConfigError, ReloadRejected) as exc:
                log.error(
                    "config_reload_rejected", path=str(self.path), trigger=reason, error=str(exc)
                )
                self._count("rejected")
                self.history.record(old.clock(), "rejected", reason, old.redactor.for_log(str(exc)))
                return False
            self._app.state.gateway = new
            self._app.state.log_scrubber.use(new.redactor)  # the log masks what it serves
            log.info("config_reloaded", path=str(self.path), trigger=reason, **changes(old, new))
            if waiting := needs_restart(old.config, config):
                # The listener and the connection guard were built from them at start-up.
                log.warning("config_reload_needs_restart", path=str(self.path), keys=waiting)
            self._count("ok")
            self.history.record(old.clock(), "accepted", reason)
            self._retire(old, new)
            return True

    async def watch(self) -> None:
        """Reload whenever the file changes. The directory is watched, not the file:
        editors save by renaming a new file over the old one, and Kubernetes swaps a
        `..data` symlink beside a mounted config."""
        # watchfiles logs each batch of changes as plain text; Turnout's log is JSON lines.
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        resolved = self.path.resolve()
        names = {self.path.name, resolved.name}

        def relevant(_: Change, changed: str) -> bool:
            name = Path(changed).name
            return name in names or name.startswith("..")

        folders = sorted({str(self.path.parent), str(resolved.parent)})
        try:
            async for _ in awatch(
                *folders,
                watch_filter=relevant,
                debounce=self._debounce_ms,
                step=50,
                recursive=False,
            ):
                await self.reload("file_changed")
        except OSError as exc:  # the folder went away: SIGHUP still reloads
            log.error("config_watch_stopped", path=str(self.path), error=str(exc))

    async def aclose(self) -> None:
        if self._sighup and self._loop is not None:
            remove_sighup(self._loop)
            self._sighup = False
        await cancel_until_done(list(self._tasks), "reloader", STOP_WAIT_S)

    def _check_exposure(self, config: TurnoutConfig) -> None:
        """The rules `turnout serve` enforced at start-up hold for every reload: a config
        that would leave a non-loopback listener open (no keys, no --allow-open) is
        refused, and so is one that several workers cannot share (router/workers.py)."""
        listener = self._listener
        refusal = listener.reload_refusal(config) if listener is not None else None
        if refusal:
            raise ReloadRejected(f"{self.path}: {refusal}")

    def _retire(self, old: Gateway, new: Gateway) -> None:
        """Close what `old` had and `new` does not share, after `old`'s requests (and
        those of any gateway retired before it, which may share the same providers)."""
        kept = {id(p) for p in new.providers.values()}
        unused = [p for p in old.providers.values() if id(p) not in kept]
        close_store = old.store is not new.store
        close_tracing = old.tracing is not new.tracing  # the telemetry section changed
        self._retiring = self._spawn(
            _close_when_drained(old, unused, close_store, self._retiring, close_tracing)
        )

    def _spawn(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.config_reload(result)


async def _ready_gateway(
    config: TurnoutConfig, old: Gateway, path: Path, metrics: Metrics | None
) -> Gateway:
    """A gateway for `config`, its new providers started; on failure nothing it opened is
    left open and nothing `old` serves with is touched."""
    try:
        new = Gateway.from_config(config, previous=old, observer=metrics)
    except Exception as exc:  # e.g. a local model that is not there: any reason rejects it
        log.error("config_reload_build_failed", path=str(path), exc_info=exc)
        raise ReloadRejected(f"{path}: {exc}") from exc
    try:
        await new.begin_start()
    except BaseException:
        await _discard(new, old)
        raise
    if not new.ready:
        await _discard(new, old)
        raise ReloadRejected(f"{path}: {new.startup_error}")
    return new


async def _discard(new: Gateway, old: Gateway) -> None:
    """Close what a gateway that will never serve opened, and nothing it shares with `old`."""
    await new.stop_health_checks()
    await _close(p for name, p in new.providers.items() if name not in new.reused)
    if new.store is not old.store:
        await new.close_store()
    if new.tracing is not old.tracing:
        await new.close_tracing()


async def _close_when_drained(
    old: Gateway,
    unused: list[Provider],
    close_store: bool,
    before: asyncio.Task[None] | None,
    close_tracing: bool = False,
) -> None:
    # At once, not after draining: the new gateway's checks already run, on shared providers.
    await old.stop_health_checks()
    try:
        async with asyncio.timeout(old.config.longest_total + DRAIN_GRACE_S):
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await old.drained()
    except TimeoutError:
        log.warning("gateway_drain_timeout", providers=[p.name for p in unused])
    finally:
        await _close(unused)
        if close_store:
            await old.close_store()
        if close_tracing:  # after its requests' spans have ended
            await old.close_tracing()
        log.info("gateway_retired", closed=[p.name for p in unused])


async def _close(providers: Iterable[Provider]) -> None:
    await asyncio.gather(*(p.aclose() for p in providers))


def changes(old: Gateway, new: Gateway) -> dict[str, list[str]]:
    """What a reload changed, for its log line (names only: config values hold keys)."""
    before, after = old.config, new.config
    return {
        "models_added": sorted(after.models.keys() - before.models.keys()),
        "models_removed": sorted(before.models.keys() - after.models.keys()),
        "models_changed": _changed(before.models, after.models),
        "providers_added": sorted(after.providers.keys() - before.providers.keys()),
        "providers_removed": sorted(before.providers.keys() - after.providers.keys()),
        "providers_rebuilt": sorted(
            name
            for name in after.providers.keys() & before.providers.keys()
            if name not in new.reused
        ),
        "sections_changed": [
            name
            for name in type(after).model_fields
            if getattr(before, name) != getattr(after, name)
        ],
    }


def needs_restart(before: TurnoutConfig, after: TurnoutConfig) -> list[str]:
    """The changed settings a reload cannot apply (the server reads them once, at start;
    files and batches stay in the storage opened at start, and the batch runner keeps
    the number of lines it runs at once)."""
    waiting = [
        f"server.{name}"
        for name in ServerSettings.RESTART_ONLY
        if getattr(before.server, name) != getattr(after.server, name)
    ]
    if before.storage != after.storage or shared(before) != shared(after):
        waiting.append("storage")
    if before.batches.max_in_flight != after.batches.max_in_flight:
        waiting.append("batches.max_in_flight")
    return waiting


def _changed(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(name for name in before.keys() & after.keys() if before[name] != after[name])


def install_sighup(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> bool:
    """Call `callback` on SIGHUP. Only the main thread receives signals, so an app served
    from another thread (as in the tests) gets no handler; False then."""
    sighup = getattr(signal, "SIGHUP", None)
    if sighup is None or threading.current_thread() is not threading.main_thread():
        return False
    loop.add_signal_handler(sighup, callback)
    return True


def remove_sighup(loop: asyncio.AbstractEventLoop) -> None:
    loop.remove_signal_handler(signal.SIGHUP)


@asynccontextmanager
async def reloading(
    app: Litestar,
    path: str | Path | None,
    metrics: Metrics | None,
    startup: asyncio.Task[None] | None = None,
    listener: Listener | None = None,
) -> AsyncIterator[Reloader | None]:
    """The reload triggers for the app's lifespan; none without a config file."""
    if path is None:
        yield None
        return
    reloader = Reloader(app, path, metrics, startup, listener=listener)
    app.state.reloader = reloader
    reloader.start()
    try:
        yield reloader
    finally:
        await reloader.aclose()
