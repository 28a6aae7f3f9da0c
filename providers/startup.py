"""Whether a provider's `start` has finished, for the calls that arrive before it has.

The server answers from the moment it listens, while providers start one after the other
in the background (a local model takes seconds to load). A call that arrives meanwhile
waits for its provider's start rather than failing: a loading model is not a failing
backend, and failing it would burn retries and open its breaker. The wait has no timeout
of its own; the request's deadline (the dispatcher's) bounds it. A start that failed, or a
provider closed before or after it started, fails every waiter at once with an error of
kind `OWN_LIMIT`: Turnout's own side cannot make the call, which no breaker counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from providers.errors import UpstreamError

T = TypeVar("T")


class StartGate:
    """One provider's start: not yet settled, started, failed, or closed."""

    def __init__(self, name: str, failed: str = "failed to start") -> None:
        """`failed`: how errors say that the start failed ("the model failed to load")."""
        self._name = name
        self._failed = failed
        # Bound to the running loop at its first wait, not here: providers are built
        # before the server's loop runs.
        self._settled = asyncio.Event()
        self._error: str | None = None

    @property
    def started(self) -> bool:
        return self._settled.is_set() and self._error is None

    async def run(self, start: Awaitable[T]) -> T:
        """Await `start` (the provider's own start-up) and settle the gate with its outcome."""
        try:
            result = await start
        except asyncio.CancelledError:
            self._settle("its start was cancelled")
            raise
        except Exception as exc:
            self._settle(f"{self._failed}: {exc}")
            raise
        self._error = None
        self._settled.set()
        return result

    def close(self) -> None:
        """The provider is closed: waiting and later calls fail at once."""
        self._settle("closed")

    async def wait(self) -> None:
        """Return once started; raise `UpstreamError` (own limit) if it never will be."""
        if not self._settled.is_set():
            await self._settled.wait()
        if self._error is not None:
            raise UpstreamError.own_limit(f"{self._name}: {self._error}")

    def _settle(self, error: str) -> None:
        self._error = error
        self._settled.set()
