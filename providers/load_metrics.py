"""`load_metrics:` on a provider: a background task that scrapes the backend's Prometheus
`/metrics` every `interval` seconds and keeps the last `LoadReport`.

It never runs on the request path: a request reads the last report, which goes stale
(`LoadReport.fresh`) when scrapes fail for 3 intervals; routing then falls back to
Turnout's own in-flight counts. A failed scrape is counted and logged once per run of
failures (not once per interval), with the URL stripped of any credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator

from providers.load_report import LoadFormat, LoadParseError, LoadReport, parse_load
from providers.shown_url import shown_url

log = structlog.get_logger("turnout.load_metrics")

STALE_INTERVALS = 3.0
MAX_METRICS_BYTES = 4 << 20  # an engine's /metrics is tens of KiB; more is not one


class LoadMetricsSettings(BaseModel):
    """Where the backend publishes its load (`url`, often the base URL's host + `/metrics`)
    and in which engine's names (`format`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    format: LoadFormat = LoadFormat.VLLM
    interval: float = Field(1.0, gt=0, le=300)
    # Default: the interval, within 0.5..2 s (a loaded backend answers /metrics late too).
    timeout: float | None = Field(None, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def scrape_timeout(self) -> float:
        return self.timeout if self.timeout is not None else min(max(self.interval, 0.5), 2.0)


class LoadScraper:
    """One provider's scrape loop: `start` in the provider's `start`, `aclose` in its
    `aclose`. `report` is the last good scrape (None before the first); `failures` counts
    the scrapes that failed."""

    def __init__(self, provider: str, settings: LoadMetricsSettings) -> None:
        self.provider = provider
        self.settings = settings
        self.report: LoadReport | None = None
        self.failures = 0
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.scrape_timeout)
            )
            self._task = asyncio.create_task(self._run(), name=f"load-metrics:{self.provider}")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def fresh_report(self) -> LoadReport | None:
        report = self.report
        return report if report is not None and report.fresh else None

    async def _run(self) -> None:
        interval = self.settings.interval
        while True:
            started = time.monotonic()
            try:
                await self.scrape_once()
            except Exception as exc:
                # scrape_once counts the failures it expects; anything else (a parser
                # bug, a value no rule foresaw) is counted too, and the next interval tries
                # again: this task has no one to raise to, and dying would leave the
                # backend's figures stale until a restart.
                self.failures += 1
                log.error("load_metrics_bug", provider=self.provider, error=type(exc).__name__)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def scrape_once(self) -> None:
        """One scrape: the report replaced, or the failure counted (never raised)."""
        session = self._session
        if session is None:
            return
        try:
            text = await self._fetch(session)
            report = parse_load(
                text,
                self.settings.format,
                scraped_at=time.monotonic(),
                max_age=STALE_INTERVALS * self.settings.interval,
            )
        except (aiohttp.ClientError, TimeoutError, LoadParseError, UnicodeDecodeError) as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.warning(
                    "load_metrics_failed",
                    provider=self.provider,
                    url=shown_url(self.settings.url),
                    error=_reason(exc),
                )
            return
        if self._failing:
            self._failing = False
            log.info("load_metrics_recovered", provider=self.provider)
        self.report = report

    async def _fetch(self, session: aiohttp.ClientSession) -> str:
        async with session.get(self.settings.url, allow_redirects=False) as response:
            if response.status != 200:
                raise LoadParseError(f"answered {response.status}")
            # `read(n)` returns what has arrived so far, not n bytes: read to the end.
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_METRICS_BYTES:
                    raise LoadParseError("answer too large")
            return body.decode()


def _reason(exc: BaseException) -> str:
    """The failure's kind, and its words only where they are ours (a client error's text
    may hold the URL, credentials included)."""
    if isinstance(exc, LoadParseError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
