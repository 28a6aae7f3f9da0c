"""Relaying a committed stream: once its first chunk is out, the rest chunk by chunk under
the request's deadline. A failure is told to the deployment's breaker; it then ends the
stream in-band, or, with the stream's request to rebuild it from, is continued where it
can be (policies/continuation.py) on a stream the dispatcher opens anew."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from policies.continuation import Rescue, can_continue
from policies.errors import ApiError
from policies.health import Health
from policies.plan import DeploymentPlan, Target
from policies.redaction import Redactor
from policies.trace import OpenStream, Trace
from policies.walk_errors import public_label
from providers.capabilities import Capabilities
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject

# `Dispatcher.open_stream`: fails over until some deployment yields a first chunk.
Reopen = Callable[[DeploymentPlan, Endpoint, Mapping[str, Any], Trace], Awaitable[OpenStream]]


class StreamRelay:
    """Committed streams to the client: each relayed, failed over by continuing it."""

    def __init__(
        self,
        reopen: Reopen,
        capabilities: Callable[[Target], Capabilities],
        health: Health | None,
        redactor: Redactor,
    ) -> None:
        """`reopen` opens a continuation's stream; `capabilities`: a deployment's, config
        overrides applied; `health` hears of a stream's failure and end (none: nothing
        does); `redactor` masks what the client must not see of an upstream error."""
        self._reopen = reopen
        self._capabilities = capabilities
        self._health = health
        self._redactor = redactor

    async def relay(
        self,
        opened: OpenStream,
        trace: Trace,
        request: tuple[DeploymentPlan, Endpoint, Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[JSONObject]:
        """The committed stream, chunk by chunk, still under the request's deadline.
        Closing this iterator (the client went away) closes the upstream call at once.
        With its `request` (plan, endpoint, body), a stream that fails is continued where
        it can be (policies/continuation.py); else the failure ends it in-band."""
        rescue: Rescue | None = None
        # A native stream (policies/native.py: Responses, Anthropic Messages) has no chat
        # to continue; any other's continuation is a chat request, which no deployment
        # gets natively.
        native, trace.native = trace.native_answer, None
        if request is not None and not native and self._can_continue(*request[:2]):
            rescue = Rescue(*request, self._capabilities)
        # Without a deployment able to continue it, the stream keeps no seam bookkeeping:
        # a failure ends it in-band (and is said to be not continuable).
        trace.continuable = (request is None and not native) or rescue is not None
        stream: OpenStream | None = opened
        try:
            while stream is not None:
                try:
                    chunk: JSONObject | None = stream.first
                    while chunk is not None:
                        out = chunk if rescue is None else rescue.relayed(chunk)
                        if out is not None:
                            yield out
                        if rescue is not None and rescue.leg_stopped:
                            break  # ended at the seam: the backend need not go on
                        async with asyncio.timeout_at(trace.deadline):
                            chunk = await anext(stream.rest, None)
                    if rescue is not None:
                        rescue.ended()
                except UpstreamError as exc:
                    await self._stream_failed(exc, trace, rescue)
                finally:
                    await stream.rest.aclose()
                    await self._release(trace)
                if rescue is None:
                    return
                for out in rescue.drain():
                    yield out
                stream = await self._continuation(rescue, trace)
            if rescue is not None and rescue.continued:
                trace.continuation = "ok"
                yield rescue.closing()
        except TimeoutError:
            trace.stream_error = "deadline exceeded mid-stream"
            raise UpstreamError.timeout("the request's total deadline passed mid-stream") from None

    def _can_continue(self, plan: DeploymentPlan, endpoint: Endpoint) -> bool:
        """Whether some deployment of `plan` could continue a stream on `endpoint`."""
        return any(
            can_continue(endpoint, self._capabilities(t))
            for t in (*plan.targets, *plan.context_window_targets)
        )

    async def _stream_failed(self, exc: UpstreamError, trace: Trace, rescue: Rescue | None) -> None:
        """A committed stream failed: its breaker is told; raises what the client gets,
        unless the stream is to be continued."""
        trace.stream_error = trace.stream_error or self._redactor.for_log(exc.summary())
        if self._health is not None and trace.target is not None:
            await self._health.failed(trace.target, exc)
        # Every upstream error reaching the client is redacted (as `Dispatcher._public`).
        public = self._redactor.public(exc, public_label(trace.target))
        if rescue is None:
            if not trace.continuable:
                trace.continuation = "not_continuable"
                trace.continuation_note = (
                    "a native stream (passed through untranslated) is not continued"
                    if trace.native_answer
                    else "no deployment of the plan can continue it"
                )
            raise public from exc
        why = rescue.broke(exc, public, trace.target, trace.attempts)
        if why is not None:
            trace.continuation = "failed" if rescue.continued else "not_continuable"
            trace.continuation_note = why
            raise rescue.original or public from exc

    async def _continuation(self, rescue: Rescue, trace: Trace) -> OpenStream | None:
        """The next continuation's stream, once it has a first chunk; None: none is left.
        A deployment refusing it never hides the stream's own failure from the client."""
        leg = rescue.next_leg()
        if leg is None:
            return None
        trace.continued = rescue.continued
        refusal: Exception | None = None
        for plan in leg.plans:
            try:
                return await self._reopen(plan, rescue.endpoint, leg.body, trace)
            except (UpstreamError, ApiError) as exc:
                refusal = exc
        trace.continuation, trace.continuation_note = "failed", f"not continued: {refusal}"
        assert rescue.original is not None
        raise rescue.original from refusal

    async def _release(self, trace: Trace) -> None:
        held, trace.holding = trace.holding, None
        if held is not None and self._health is not None:
            await self._health.ended(held)
