"""structlog set-up: one JSON object per line on stderr, every string in it scrubbed of the
serving config's secrets (`LogScrubber`)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson
import structlog
import structlog.tracebacks
from structlog.typing import EventDict

from policies.redaction import Redactor


class LogScrubber:
    """A structlog processor that masks, in every string of every event (a rendered
    exception's included), the secrets of the config being served and the credentials no
    log needs (`Redactor.scrub`). An upstream's words, a config error or an exception's
    text can all carry a key; this is the one place none of them gets past.

    It belongs to one app, which points it at each config's `Redactor` as that config
    starts serving (a reload included): see `router.app.create_app`."""

    def __init__(self) -> None:
        self._redactor = Redactor()

    def use(self, redactor: Redactor) -> None:
        self._redactor = redactor

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        return self._redactor.scrub_fields(event)


def configure_logging(
    level: str = "info", scrubber: LogScrubber | None = None, *, with_pid: bool = False
) -> LogScrubber:
    """Log JSON lines to stderr at `level`, through `scrubber` (a new one if None);
    returns the scrubber, for the app to point at its config's secrets. `with_pid`: each
    line says which process wrote it (`pid`), where several serve (`--workers`)."""
    scrubber = scrubber or LogScrubber()
    pid = [_ProcessId(os.getpid())] if with_pid else []
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=numeric, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *pid,
            # Never log frame locals: they hold request bodies and provider API keys.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            ),
            scrubber,  # after the exception is rendered: its text is scrubbed too
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.BytesLoggerFactory(file=sys.stderr.buffer),
        cache_logger_on_first_use=True,
    )
    return scrubber


class _ProcessId:
    """Adds the process id, read once (logging runs after the worker has forked)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def __call__(self, logger: Any, method: str, event: EventDict) -> EventDict:
        event["pid"] = self._pid
        return event
