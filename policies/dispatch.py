"""Carrying out a `DeploymentPlan`: each target in turn, with retries, under one deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from policies.continuation import Rescue
from policies.errors import ApiError
from policies.fan_out_cost import ONE_CALL, UpstreamCalls, may_fan_out, upstream_calls
from policies.health import Health
from policies.plan import DeploymentPlan, Target
from policies.redaction import Redactor
from policies.retry import CANCELLED, Attempt, Decision, call_with_retries, classify
from policies.state.base import BreakerState, BreakerView
from policies.strategies import Orderer
from policies.translation import Mode, Refusal, Translation, declared_for, translate
from providers.base import Provider
from providers.capabilities import Capabilities
from providers.emulation import DEFAULT_MAX_PARALLEL, EMULABLE, with_emulations
from providers.errors import Failure, UpstreamError
from providers.local.tokenizer_cache import TokenizerCache
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

T = TypeVar("T")


@dataclass(slots=True)
class Trace:
    """What happened to one client request: its deadline, every attempt, who answered."""

    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    target: Target | None = None
    stream_error: str | None = None
    mode: Mode | None = None  # the request's own translation mode, if it chose one
    translation: Translation | None = None  # what was done for the deployment that answered
    refusals: list[tuple[str, Refusal]] = field(default_factory=list)
    open_breakers: list[tuple[str, float]] = field(default_factory=list)  # (label, open until)
    holding: Target | None = None  # a stream's deployment, counted in flight until it ends
    # Before a deployment whose emulation fans out into calls that each read the prompt:
    # makes the request's token reservation cover them, or raises the 429.
    cover: Callable[[UpstreamCalls], Awaitable[None]] | None = None
    # A stream continued after it broke (policies/continuation.py): how many times, how
    # it ended (ok, failed, not_continuable) and why, for the log and metrics.
    continued: int = 0
    continuation: str | None = None
    continuation_note: str | None = None


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A stream whose first chunk has arrived: from here on the client is committed."""

    first: JSONObject
    rest: AsyncGenerator[JSONObject, None]


class Dispatcher:
    def __init__(
        self,
        providers: Mapping[str, Provider],
        capabilities: Mapping[str, Capabilities] | None = None,
        health: Health | None = None,
        orderer: Orderer | None = None,
        redactor: Redactor | None = None,
        *,
        max_parallel: int = DEFAULT_MAX_PARALLEL,
    ) -> None:
        """`capabilities`: each deployment's (by label), config overrides applied; a
        deployment not listed has its provider's declared capabilities. `health` keeps
        breakers and statistics (none: every deployment is always tried); `orderer`
        applies the plan's strategy (none: config order); `redactor` masks what upstream
        errors must not show the client (none: token-shaped strings and addresses only);
        `max_parallel`: upstream calls one request's emulation may run at once."""
        self._providers = providers
        self._capabilities = dict(capabilities or {})
        self._tokenizers = TokenizerCache()  # deployments' declared tokenizers, loaded once
        self._health = health
        self._orderer = orderer
        self._max_parallel = max_parallel
        self._redactor = redactor or Redactor()

    def start_trace(self, plan: DeploymentPlan) -> Trace:
        return Trace(deadline=asyncio.get_running_loop().time() + plan.deadline_s)

    async def complete(
        self, plan: DeploymentPlan, endpoint: Endpoint, body: Mapping[str, Any], trace: Trace
    ) -> ProviderResponse:
        async def attempt(provider: Provider, request: ProviderRequest) -> ProviderResponse:
            return await provider.complete(request)

        return await self._walk(plan, trace, endpoint, body, attempt)

    async def open_stream(
        self, plan: DeploymentPlan, endpoint: Endpoint, body: Mapping[str, Any], trace: Trace
    ) -> OpenStream:
        """Fail over until some deployment yields a first chunk; nothing reached the client
        before that, so every failure up to here is still the plan's to handle."""

        async def attempt(provider: Provider, request: ProviderRequest) -> OpenStream:
            rest = provider.stream(request)
            try:
                first = await anext(rest)
            except StopAsyncIteration:
                raise UpstreamError.stream_broken(f"{provider.name}: empty stream") from None
            except BaseException:
                await rest.aclose()
                raise
            return OpenStream(first, rest)

        return await self._walk(plan, trace, endpoint, body, attempt)

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
        rescue = None if request is None else Rescue(*request, self._target_capabilities)
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

    async def _stream_failed(self, exc: UpstreamError, trace: Trace, rescue: Rescue | None) -> None:
        """A committed stream failed: its breaker is told; raises what the client gets,
        unless the stream is to be continued."""
        trace.stream_error = trace.stream_error or self._redactor.for_log(exc.summary())
        if self._health is not None and trace.target is not None:
            await self._health.failed(trace.target, exc)
        public = self._public(exc, trace.target)
        if rescue is None:
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
                return await self.open_stream(plan, rescue.endpoint, leg.body, trace)
            except (UpstreamError, ApiError) as exc:
                refusal = exc
        trace.continuation, trace.continuation_note = "failed", f"not continued: {refusal}"
        assert rescue.original is not None
        raise rescue.original from refusal

    async def _release(self, trace: Trace) -> None:
        held, trace.holding = trace.holding, None
        if held is not None and self._health is not None:
            await self._health.ended(held)

    async def _walk(
        self,
        plan: DeploymentPlan,
        trace: Trace,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        attempt: Callable[[Provider, ProviderRequest], Awaitable[T]],
    ) -> T:
        queue = await self._ordered(plan.targets, plan)
        rerouted = False
        last: UpstreamError | None = None
        try:
            async with asyncio.timeout_at(trace.deadline):
                index = 0
                while index < len(queue):
                    target = queue[index]
                    index += 1
                    provider = self._providers[target.deployment.provider]
                    fit = self._translate(plan, trace, endpoint, body, target, provider)
                    if fit is None:
                        continue  # cannot honour this request: skipped, never called
                    if fit.applied and trace.cover is not None:
                        most = self._capabilities_of(target, provider).max_n
                        calls = upstream_calls(endpoint, fit, most)
                        if calls.prompt_reads > 1:
                            await trace.cover(calls)  # before any of its calls starts
                    if fit.applied:
                        provider = with_emulations(
                            provider,
                            fit.applied,
                            self._capabilities_of(target, provider),
                            fit.declared,
                            max_parallel=self._max_parallel,
                        )
                    request = ProviderRequest(
                        endpoint, {**fit.body, "model": target.deployment.model}
                    )
                    # Nothing between the breaker's leave and `_attempts`, which owns a
                    # granted probe from here: it is used, or given back.
                    probe = False
                    if self._health is not None:
                        view = await self._admitted(target, trace)
                        if not view.allowed:
                            continue  # breaker open: skipped without touching it
                        probe = view.probe
                    try:
                        result = await self._attempts(
                            plan,
                            trace,
                            target,
                            lambda: attempt(provider, request),  # noqa: B023
                            probe,
                        )
                    except UpstreamError as exc:
                        last, trace.target = exc, target  # who gave the answer so far
                        decision = classify(exc)
                        if decision is Decision.FINAL:
                            raise self._public(exc, target) from exc
                        if decision is Decision.CONTEXT_WINDOW:
                            if rerouted or not plan.context_window_targets:
                                raise self._public(exc, target) from exc
                            queue = await self._ordered(plan.context_window_targets, plan)
                            index, rerouted = 0, True
                        continue
                    trace.target, trace.translation = target, fit
                    return result
        except TimeoutError:
            if trace.attempts and trace.attempts[-1].outcome == CANCELLED:
                cut = trace.attempts[-1]
                trace.attempts[-1] = replace(cut, outcome="timeout: request deadline", status=504)
            last = UpstreamError.timeout(
                f"no deployment answered within the request deadline of {plan.deadline_s:g}s"
            )
        if last is None and trace.open_breakers:
            raise _breakers_open(trace.open_breakers, self._health)
        if last is None and trace.refusals:
            raise _refused(trace.refusals)
        raise _exhausted(last, trace, self._redactor)

    def _public(self, error: UpstreamError, target: Target | None) -> UpstreamError:
        """`error` as the client may see it. Every upstream error leaves the dispatcher
        through here or `_exhausted`: an upstream's text may echo our credentials or name
        its internal address, and only the log may keep it (secrets masked)."""
        return self._redactor.public(error, _label(target))

    async def _ordered(self, targets: tuple[Target, ...], plan: DeploymentPlan) -> list[Target]:
        if self._orderer is None:
            return list(targets)
        return await self._orderer.order(targets, plan.strategy)

    async def _admitted(self, target: Target, trace: Trace) -> BreakerView:
        assert self._health is not None
        view = await self._health.acquire(target)
        if not view.allowed:
            trace.open_breakers.append((target.label, view.open_until))
        return view

    async def _attempts(
        self,
        plan: DeploymentPlan,
        trace: Trace,
        target: Target,
        call: Callable[[], Awaitable[T]],
        probe: bool = False,
    ) -> T:
        """One deployment's turn: its retries, each outcome told to its breaker (which, once
        open, ends the turn), and the call counted in flight while it runs.

        `probe`: the breaker granted this turn its half-open probe, which the first attempt
        is. An attempt that ends with no outcome (cancelled by the client or the deadline,
        or an unexpected error) gives the probe back, so the deployment is not skipped
        until the probe times out."""
        health = self._health
        if health is None:
            return await call_with_retries(
                call,
                label=target.label,
                policy=plan.retry,
                deadline=trace.deadline,
                attempts=trace.attempts,
            )
        tripped = False
        probe_out = probe  # until the probe's outcome is recorded

        async def observed() -> T:
            nonlocal tripped, probe_out
            started = time.perf_counter()
            try:
                result = await call()
            except UpstreamError as exc:
                is_probe, probe_out = probe_out, False
                view = await health.failed(target, exc, probe=is_probe)
                tripped = view is not None and view.state is not BreakerState.CLOSED
                raise
            is_probe, probe_out = probe_out, False
            await health.succeeded(target, time.perf_counter() - started, probe=is_probe)
            return result

        await health.started(target)
        held = False
        try:
            result = await call_with_retries(
                observed,
                label=target.label,
                policy=plan.retry,
                deadline=trace.deadline,
                attempts=trace.attempts,
                give_up=lambda: tripped,
            )
            if isinstance(result, OpenStream):
                trace.holding, held = target, True
            return result
        finally:
            if probe_out:
                await health.release_probe(target)
            if not held:
                await health.ended(target)

    def assess(
        self, plan: DeploymentPlan, endpoint: Endpoint, body: Mapping[str, Any], target: Target
    ) -> Translation | Refusal:
        """How `target` would honour the request, without calling it (for explain)."""
        provider = self._providers[target.deployment.provider]
        return self._fit(plan, endpoint, body, target, provider, plan.mode)

    def first_calls(
        self, plan: DeploymentPlan, endpoint: Endpoint, body: Mapping[str, Any]
    ) -> UpstreamCalls:
        """The upstream calls made by the first deployment (in plan order) that can honour
        the request: what admission charges for before anything is called."""
        if not may_fan_out(body):
            return ONE_CALL
        for target in plan.targets:
            fit = self.assess(plan, endpoint, body, target)
            if isinstance(fit, Translation):
                provider = self._providers[target.deployment.provider]
                most = self._capabilities_of(target, provider).max_n
                return upstream_calls(endpoint, fit, most)
        return ONE_CALL

    @property
    def orderer(self) -> Orderer | None:
        return self._orderer

    def _target_capabilities(self, target: Target) -> Capabilities:
        return self._capabilities_of(target, self._providers[target.deployment.provider])

    def _capabilities_of(self, target: Target, provider: Provider) -> Capabilities:
        return self._capabilities.get(target.label) or provider.capabilities

    def _translate(
        self,
        plan: DeploymentPlan,
        trace: Trace,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        target: Target,
        provider: Provider,
    ) -> Translation | None:
        fit = self._fit(plan, endpoint, body, target, provider, trace.mode or plan.mode)
        if isinstance(fit, Refusal):
            trace.refusals.append((target.label, fit))
            return None
        return fit

    def _fit(
        self,
        plan: DeploymentPlan,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        target: Target,
        provider: Provider,
        mode: Mode,
    ) -> Translation | Refusal:
        """How `target` can honour the request: one judgement for dispatch and explain."""
        capabilities = self._capabilities_of(target, provider)
        declared = declared_for(target.deployment, plan.targets[0].deployment, self._tokenizers)
        return translate(endpoint, body, capabilities, mode, EMULABLE, declared)


def _refused(refusals: list[tuple[str, Refusal]]) -> ApiError:
    """No deployment can honour the request: name the first option that stood in the way."""
    _, first = refusals[0]
    where = "; ".join(f"{label}: {refusal.message}" for label, refusal in refusals)
    if first.param == "model":
        return ApiError(
            f"No deployment of this model serves this endpoint ({where}).",
            param="model",
            code="unsupported_endpoint",
        )
    return ApiError(
        f"`{first.param}` cannot be honoured by any deployment of this model ({where}). "
        'Send {"router": {"translation": "drop"}} to drop what a deployment cannot do.',
        param=first.param,
        code="unsupported_parameter",
    )


def _breakers_open(open_breakers: list[tuple[str, float]], health: Health | None) -> UpstreamError:
    now = health.now() if health is not None else 0.0
    wait = max(0.0, min(until for _, until in open_breakers) - now)
    which = ", ".join(label for label, _ in open_breakers)
    return UpstreamError(
        f"Every deployment that could serve this request is unavailable: circuit breaker "
        f"open ({which}). Retry in {wait:.1f}s.",
        failure=Failure.PROTOCOL,
        status=503,
        type="server_error",
        code="deployments_unavailable",
        retry_after=max(1.0, round(wait, 1)),
    )


def _exhausted(last: UpstreamError | None, trace: Trace, redactor: Redactor) -> UpstreamError:
    """One error that says what every attempt got, with the last failure's status and type;
    each attempt's outcome masked for the client with its own deployment's label."""
    if last is None:  # an empty plan cannot be configured; kept for a clear message anyway
        return UpstreamError(
            "no deployment to try", failure=Failure.PROTOCOL, status=503, type="server_error"
        )
    attempts = trace.attempts
    public = redactor.public(last, _label(trace.target))
    said = "; ".join(f"{a.deployment}: {a.outcome}" for a in attempts) or "none"
    shown = (
        "; ".join(
            f"{a.deployment}: {redactor.for_client(a.outcome, a.deployment)}" for a in attempts
        )
        or "none"
    )
    failed = f"all deployments failed after {len(attempts)} attempt(s)"
    return UpstreamError(
        f"{public.message} ({failed}: {shown})",
        failure=last.failure,
        status=last.status,
        type=public.type,
        code=public.code,
        param=public.param,
        retry_after=last.retry_after,
        detail=redactor.for_log(f"{last.detail or last.message} ({failed}: {said})"),
    )


def _label(target: Target | None) -> str:
    """The public name an internal address is replaced with."""
    return target.label if target is not None else "upstream"
