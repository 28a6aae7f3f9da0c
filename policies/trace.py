"""What dispatch keeps and hands back for one client request: its `Trace` (deadline,
attempts, who answered, what the stream and its continuations did) and an `OpenStream`
(a stream with its first chunk, from which point the client is committed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from policies.fan_out_cost import UpstreamCalls
from policies.native_request import NativeRequest
from policies.plan import Target
from policies.retry import Attempt
from policies.translation import Mode, Refusal, Translation
from providers.call_ledger import CallLedger
from providers.types import JSONObject, ProviderRequest

T = TypeVar("T")


class AttemptSpans(Protocol):
    """A traced request's spans, as dispatch sees them (policies/telemetry/request_spans.py):
    a deployment's turn wrapped so that each of its attempts is a span of its own."""

    def attempts(
        self,
        trace: Trace,
        target: Target,
        request: ProviderRequest,
        call: Callable[[], Awaitable[T]],
    ) -> Callable[[], Awaitable[T]]: ...


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
    # Before a deployment whose emulation fans out into calls that each read the prompt,
    # or a hedge: makes the request's token reservation cover the calls that will run at
    # once (each entry: one deployment's), or raises the 429.
    cover: Callable[[Sequence[UpstreamCalls]], Awaitable[None]] | None = None
    # Every upstream call made, with its cost, so that limits are charged for calls that
    # no answer accounts for (a failure, a client gone, a hedge that lost).
    ledger: CallLedger = field(default_factory=CallLedger)
    # The request's upstream calls in flight at once, over every attempt, hedge and
    # continuation (`emulation.max_parallel`); made by `Dispatcher.start_trace`.
    slots: asyncio.Semaphore | None = None
    hedges: list[str] = field(default_factory=list)  # each hedge's outcome (policies/hedge.py)
    # A stream continued after it broke (policies/continuation.py): how many times, how
    # it ended (ok, failed, not_continuable) and why, for the log and metrics.
    continued: int = 0
    continuation: str | None = None
    continuable: bool = True  # False: no deployment of the plan could continue the stream
    continuation_note: str | None = None
    # A batch line's request: its calls are background work (`ProviderRequest.background`).
    background: bool = False
    # A door's request as the client sent it (policies/native.py: a Responses request, its
    # history expanded into `input`, or an Anthropic Messages request): what a deployment
    # taking that wire shape natively gets instead of the chat body, untranslated.
    # Cleared once a stream is committed: a continuation is a chat request.
    native: NativeRequest | None = None
    # Why the chat body cannot stand for `native` (a Responses tool chat has no form for,
    # in a mode that refuses it): a deployment not taking it natively is skipped with it.
    chat_refusal: Refusal | None = None
    native_answer: bool = False  # the deployment that answered got `native`
    # The request's spans while tracing is on (policies/telemetry/): each attempt's too.
    spans: AttemptSpans | None = None


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A stream whose first chunk has arrived: from here on the client is committed."""

    first: JSONObject
    rest: AsyncGenerator[JSONObject, None]
