"""Carrying out a `DeploymentPlan`: each target in turn, with retries, under one deadline."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from policies.affinity.key import with_cache_key
from policies.fan_out_cost import (
    DEFAULT_MAX_CALLS,
    ONE_CALL,
    UpstreamCalls,
    may_fan_out,
    too_many_calls,
    upstream_calls,
)
from policies.health import Health
from policies.hedge import FirstTokenStats, HedgedWalk, Steps, Turn, mark_lost
from policies.native import NativeRequest, native_turn, takes_native
from policies.plan import DeploymentPlan, Target
from policies.policy_config import HedgeSettings
from policies.redaction import Redactor
from policies.relay import StreamRelay
from policies.retry import CANCELLED, Decision, classify
from policies.state.base import BreakerView
from policies.strategies import Orderer
from policies.trace import OpenStream, Trace
from policies.translation import Mode, Refusal, Translation, declared_for, translate
from policies.turn_attempts import TurnAttempts
from policies.turn_calls import covered, metered_call
from policies.walk_errors import breakers_open, exhausted, public_label, refused
from providers.background import InBackground
from providers.base import Provider
from providers.call_ledger import Tally
from providers.capabilities import Capabilities
from providers.emulation import DEFAULT_MAX_PARALLEL, EMULABLE
from providers.errors import UpstreamError
from providers.local.tokenizer import TokenizerAdapter
from providers.local.tokenizer_cache import TokenizerCache
from providers.retimed import Retimed
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

T = TypeVar("T")
# The calls OpenAI-compatible APIs take `prompt_cache_key` on (`affinity.set_prompt_cache_key`).
_CACHE_KEYED = frozenset({Endpoint.CHAT, Endpoint.RESPONSES})


@dataclass(slots=True)
class _Walk(Generic[T]):
    """One request's way through its plan: where it is, and the last failure so far."""

    plan: DeploymentPlan
    trace: Trace
    endpoint: Endpoint
    body: Mapping[str, Any]
    attempt: Callable[[Provider, ProviderRequest], Awaitable[T]]
    queue: list[Target]
    index: int = 0
    rerouted: bool = False  # to the context-window fallbacks, which happens once
    last: UpstreamError | None = None
    live: list[UpstreamCalls] = field(default_factory=list)  # turns running (hedged)


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
        max_calls: int = DEFAULT_MAX_CALLS,
        first_tokens: FirstTokenStats | None = None,
    ) -> None:
        """`capabilities`: each deployment's (by label), config overrides applied; a
        deployment not listed has its provider's declared capabilities. `health` keeps
        breakers and statistics (none: every deployment is always tried); `orderer`
        applies the plan's strategy (none: config order); `redactor` masks what upstream
        errors must not show the client (none: token-shaped strings and addresses only);
        `max_parallel`: upstream calls one request may have in flight at once;
        `max_calls`: upstream calls one request's emulations may make in all (a deployment
        needing more is skipped, as one that cannot honour the request);
        `first_tokens`: streams' times to first token, for hedging (none: hedges wait
        their `cap` when adaptive)."""
        self._providers = providers
        self._capabilities = dict(capabilities or {})
        self._tokenizers = TokenizerCache()  # deployments' declared tokenizers, loaded once
        self._health = health
        self._orderer = orderer
        self._max_parallel = max_parallel
        self._max_calls = max_calls
        self._redactor = redactor or Redactor()
        self._first_tokens = first_tokens
        self._turns = TurnAttempts(health, first_tokens)
        self._streams = StreamRelay(
            self.open_stream, self._target_capabilities, health, self._redactor
        )

    def start_trace(
        self,
        plan: DeploymentPlan,
        *,
        background: bool = False,
        native: NativeRequest | None = None,
        chat_refusal: Refusal | None = None,
    ) -> Trace:
        """`background`: the request is a batch line; every upstream call it makes says so
        (`ProviderRequest.background`), and a local sampler serves it after live requests.
        `native`: a door's request as the client sent it (a Responses or Messages API
        request), which deployments taking it natively (policies/native.py) get instead of
        the chat body (`chat_refusal`: why the chat body falls short of it, which the
        others are then skipped with)."""
        deadline = asyncio.get_running_loop().time() + plan.deadline_s
        slots = asyncio.Semaphore(self._max_parallel)
        return Trace(deadline, slots=slots, background=background, native=native,
                     chat_refusal=chat_refusal)  # fmt: skip

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

        return await self._walk(plan, trace, endpoint, body, attempt, plan.hedge)

    def relay(
        self,
        opened: OpenStream,
        trace: Trace,
        request: tuple[DeploymentPlan, Endpoint, Mapping[str, Any]] | None = None,
    ) -> AsyncIterator[JSONObject]:
        """The committed stream, relayed (and continued where it breaks) by
        `policies/relay.StreamRelay.relay`."""
        return self._streams.relay(opened, trace, request)

    async def _walk(
        self,
        plan: DeploymentPlan,
        trace: Trace,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        attempt: Callable[[Provider, ProviderRequest], Awaitable[T]],
        hedge: HedgeSettings | None = None,
    ) -> T:
        """Each eligible deployment in turn until one answers; `hedge`: a stream's, also
        the next one while the first content is late (policies/hedge.py)."""
        walk = _Walk(plan, trace, endpoint, body, attempt, await self._ordered(plan.targets, plan))
        try:
            async with asyncio.timeout_at(trace.deadline):
                # A plan of one deployment has nothing to hedge with: its streams skip the
                # race (and so record no time to first token: with no statistics a hedge
                # waits the cap, the safe side, should the deployment later have a partner).
                if hedge is not None and len(walk.queue) > 1:
                    won = await HedgedWalk(self._steps(walk, hedge), hedge, trace.hedges).run()
                    if won is not None:
                        return await self._followed(walk, self._answered(trace, *won))
                while (turn := await self._next_turn(walk)) is not None:
                    try:
                        result = await self._turns.run(
                            plan, trace, turn.target, turn.call, turn.probe
                        )
                    except UpstreamError as exc:
                        await self._turn_failed(walk, turn, exc)
                        continue
                    return await self._followed(walk, self._answered(trace, turn, result))
        except TimeoutError:
            for i, cut in enumerate(trace.attempts):  # cut short by the deadline
                if cut.outcome == CANCELLED:
                    trace.attempts[i] = replace(
                        cut, outcome="timeout: request deadline", status=504
                    )
            walk.last = UpstreamError.timeout(
                f"no deployment answered within the request deadline of {plan.deadline_s:g}s"
            )
        if walk.last is None and trace.open_breakers:
            raise breakers_open(trace.open_breakers, self._health)
        if walk.last is None and trace.refusals:
            raise refused(trace.refusals)
        raise exhausted(walk.last, trace.attempts, trace.target, self._redactor)

    async def _next_turn(self, walk: _Walk[T]) -> Turn[T] | None:
        """The next deployment in the plan that can honour the request and whose breaker
        lets it be called, with its call built; None when none is left."""
        plan, trace, endpoint = walk.plan, walk.trace, walk.endpoint
        while walk.index < len(walk.queue):
            target = walk.queue[walk.index]
            walk.index += 1
            provider = self._providers[target.deployment.provider]
            capabilities = self._capabilities_of(target, provider)
            fitted = self._fit_turn(walk, target, provider, capabilities)
            if fitted is None:
                continue  # cannot honour this request: skipped, never called
            called, fit = fitted
            calls = self._calls(trace, endpoint, target, fit, capabilities)
            if calls is None:
                continue  # more upstream calls than `emulation.max_calls`: skipped too
            if not await covered(trace.cover, walk.live, calls):  # before any call starts
                walk.index -= 1  # no room for a hedge beside the running call; a failover
                return None  # may still call this deployment once that one has ended
            timeouts = plan.timeouts_for(target)
            if timeouts is not None:  # the model's own, on every call that reaches it
                provider = Retimed(provider, timeouts)
            if trace.background:  # on the calls emulations build from `request` too
                provider = InBackground(provider)
            body = {**fit.body, "model": target.deployment.model}
            if called in _CACHE_KEYED:  # the APIs with `prompt_cache_key` (not embeddings)
                body = with_cache_key(body, plan.affinity, target.label)  # affinity's, if set
            # A native call carries the client headers its API forwards (policies/native.py).
            native = trace.native if called is not endpoint else None
            headers = native.headers if native is not None else {}
            request = ProviderRequest(called, body, background=trace.background, headers=headers)
            # Nothing between the breaker's leave and `_turns.run`, which owns a granted
            # probe from here: it is used, or given back.
            probe = False
            if self._health is not None:
                view = await self._admitted(target, trace)
                if not view.allowed:
                    continue  # breaker open: skipped without touching it
                probe = view.probe
            if trace.slots is None:  # a trace not made by `start_trace`
                trace.slots = asyncio.Semaphore(self._max_parallel)
            tallies: list[Tally] = []
            turn = (provider, fit, capabilities)
            call = metered_call(
                trace.ledger, trace.slots, turn, walk.attempt, request, tallies, target.label
            )
            if trace.spans is not None:  # traced: a client span per attempt
                call = trace.spans.attempts(trace, target, request, call)
            return Turn(target, fit, call, probe, calls, tallies)
        return None

    def _fit_turn(
        self, walk: _Walk[Any], target: Target, provider: Provider, capabilities: Capabilities
    ) -> tuple[Endpoint, Translation] | None:
        """The endpoint `target` is called on, and the body (policies/native.py: the
        door's request itself, where the deployment takes it natively). None: it cannot
        honour the request (a refusal recorded)."""
        native = native_turn(walk.trace, walk.endpoint, capabilities, provider.endpoints)
        if isinstance(native, Translation):
            assert walk.trace.native is not None  # a native turn is the trace's native request
            return walk.trace.native.endpoint, native
        if native is not None:
            walk.trace.refusals.append((target.label, native))
            return None
        fit = self._translate(walk.plan, walk.trace, walk.endpoint, walk.body, target, provider)
        return None if fit is None else (walk.endpoint, fit)

    async def declared_tokenizer(self, name: str) -> TokenizerAdapter:
        """A deployment's declared `tokenizer:` (loaded once, off the event loop), e.g. to
        count a prompt's tokens as that model would."""
        return await self._tokenizers.get(name)

    def answers_natively(
        self, plan: DeploymentPlan, endpoint: Endpoint = Endpoint.RESPONSES
    ) -> bool:
        """Whether some deployment of `plan` takes a request on native `endpoint` (the
        Responses API unless said) as the client sent it."""
        return any(
            takes_native(self._target_capabilities(t), self._provider(t).endpoints, endpoint)
            for t in (*plan.targets, *plan.context_window_targets)
        )

    def _provider(self, target: Target) -> Provider:
        return self._providers[target.deployment.provider]

    def _calls(
        self,
        trace: Trace,
        endpoint: Endpoint,
        target: Target,
        fit: Translation,
        capabilities: Capabilities,
    ) -> UpstreamCalls | None:
        """The upstream calls `fit` makes at `target`; None (a refusal recorded) when that
        is more than one request may make."""
        calls = upstream_calls(endpoint, fit, capabilities.max_n) if fit.applied else ONE_CALL
        refusal = too_many_calls(fit.body, calls, self._max_calls)
        if refusal is None:
            return calls
        trace.refusals.append((target.label, refusal))
        return None

    async def _turn_failed(self, walk: _Walk[T], turn: Turn[T], error: UpstreamError) -> None:
        """A deployment's turn ended in `error`: raises when that is the client's answer;
        a context-window overflow reroutes the rest of the walk (once)."""
        walk.last, walk.trace.target = error, turn.target  # who gave the answer so far
        decision = classify(error)
        if decision is Decision.FINAL:
            raise self._public(error, turn.target) from error
        if decision is Decision.CONTEXT_WINDOW:
            if walk.rerouted or not walk.plan.context_window_targets:
                raise self._public(error, turn.target) from error
            walk.queue = await self._ordered(walk.plan.context_window_targets, walk.plan)
            walk.index, walk.rerouted = 0, True

    def _answered(self, trace: Trace, turn: Turn[Any], result: T) -> T:
        trace.target, trace.translation = turn.target, turn.fit
        # A native turn's translation is the native request itself (`_fit_turn`).
        trace.native_answer = trace.native is not None and turn.fit.body is trace.native.body
        if turn.tallies:  # the last attempt answered: its usage is the answer's to settle
            turn.tallies[-1].settled = True
        if isinstance(result, OpenStream):
            trace.holding = turn.target  # a hedge that lost may have been the last to set it
        return result

    def _steps(self, walk: _Walk[T], hedge: HedgeSettings) -> Steps[T]:
        async def run(turn: Turn[T]) -> T:
            walk.live.append(turn.calls)  # a hedge's reservation covers it too
            try:
                return await self._turns.run(
                    walk.plan, walk.trace, turn.target, turn.call, turn.probe
                )
            finally:
                walk.live.remove(turn.calls)

        async def lost(turn: Turn[T], result: T | None, seconds: float) -> None:
            if isinstance(result, OpenStream):  # content came just too late: closed
                await result.rest.aclose()
                if self._health is not None:
                    await self._health.ended(turn.target)
                return
            mark_lost(walk.trace.attempts, turn.target.label)
            if self._first_tokens is not None:  # it had no content after `seconds` at least
                await self._first_tokens.observe(turn.target.label, seconds)

        async def delay(turn: Turn[T]) -> float:
            stats = self._first_tokens
            if hedge.after != "auto" or stats is None:
                return hedge.delay(None)
            return hedge.delay(await stats.p95(turn.target.label))

        failed = functools.partial(self._turn_failed, walk)
        return Steps(functools.partial(self._next_turn, walk), run, failed, lost, delay)

    def _public(self, error: UpstreamError, target: Target | None) -> UpstreamError:
        """`error` as the client may see it. Every upstream error leaves the dispatcher
        through here or `exhausted`: an upstream's text may echo our credentials or name
        its internal address, and only the log may keep it (secrets masked)."""
        return self._redactor.public(error, public_label(target))

    async def _ordered(self, targets: tuple[Target, ...], plan: DeploymentPlan) -> list[Target]:
        if self._orderer is None:
            return list(targets)
        return await self._orderer.order(targets, plan.strategy, plan.affinity)

    async def _followed(self, walk: _Walk[T], result: T) -> T:
        """`strategy: affinity`: where another deployment than the one put first answered,
        the prompt's record and the session's pin follow it."""
        target, affinity, queue = walk.trace.target, walk.plan.affinity, walk.queue
        if affinity is None or self._orderer is None or target is None or not queue:
            return result
        if target.label != queue[0].label:
            await self._orderer.served(affinity, target)
        return result

    async def _admitted(self, target: Target, trace: Trace) -> BreakerView:
        assert self._health is not None
        view = await self._health.acquire(target)
        if not view.allowed:
            trace.open_breakers.append((target.label, view.open_until))
        return view

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
        the request: what admission charges for before anything is called. Raises the 400
        when every deployment that could honour it would make more than `max_calls`."""
        if not may_fan_out(body):
            return ONE_CALL
        too_many: list[tuple[str, Refusal]] = []
        for target in plan.targets:
            fit = self.assess(plan, endpoint, body, target)
            if isinstance(fit, Translation):
                provider = self._providers[target.deployment.provider]
                most = self._capabilities_of(target, provider).max_n
                calls = upstream_calls(endpoint, fit, most) if fit.applied else ONE_CALL
                refusal = too_many_calls(fit.body, calls, self._max_calls)
                if refusal is None:
                    return calls
                too_many.append((target.label, refusal))
        if too_many:
            raise refused(too_many)
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
