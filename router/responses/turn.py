"""One Responses request's turn, whichever door it came by (`POST /v1/responses`, a batch
line): its chat form and, for deployments declaring `responses`, its native form; how its
answer is mapped back (whole, or as events) and kept for the conversation's next turn.

`prepare_turn` is the part every door shares: the conversation's earlier turns read, the
chat and native forms made, and `PipelineRun.prepare` called with both.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import structlog

from policies.errors import ApiError
from policies.native import NativeRequest
from policies.storage.base import StorageUnavailable
from policies.storage.factory import Storage
from policies.teams import Caller
from policies.translation import Refusal
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import DROPPED
from router.endpoints import Framer
from router.errors import envelope, stream_error_payload
from router.gateway import Gateway
from router.header_values import header_list
from router.pipeline import PipelineRun
from router.responses.conversation import earlier_items, store_turn
from router.responses.events import ResponseEvents, sse
from router.responses.from_chat import response_object
from router.responses.ids import new_id
from router.responses.native import (
    NativeEvents,
    chunk_chars,
    chunk_usage,
    is_response_event,
    native_request,
    own_response,
)
from router.responses.to_chat import chat_request, input_items
from router.routing_options import ROUTING_FIELDS, drops_what_chat_lacks
from router.schemas.chat import ChatCompletionRequest
from router.sse import StreamEnd
from router.stored import owner_of, unavailable

log = structlog.get_logger("turnout.responses")


async def prepare_turn(
    run: PipelineRun,
    storage: Storage,
    caller: Caller,
    body: dict[str, Any],
    headers: Mapping[str, str],
) -> tuple[Turn, dict[str, Any]]:
    """The turn of a checked Responses `body`, and the chat body the pipeline forwards."""
    gateway = run.gateway
    turn = await Turn.begin(gateway, storage, caller, body)
    if turn.dropped:  # said as chat's own drops are (x-turnout-dropped)
        run.record.extra_headers[DROPPED] = header_list(turn.dropped)
    forward = await run.prepare(
        ChatCompletionRequest,
        turn.chat,
        headers,
        native=NativeRequest.of(Endpoint.RESPONSES, turn.native),
        chat_refusal=turn.chat_refusal(),
    )
    turn.check_routable(gateway, run)
    return turn, forward


class Turn:
    """One request's turn: its chat request, and how its answer is mapped and kept."""

    def __init__(
        self,
        request: dict[str, Any],
        chat: dict[str, Any],
        items: list[dict[str, Any]],
        keep: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
    ) -> None:
        self.request = request
        self.chat = chat
        self.items = items
        self.keep = keep
        self.previous: str | None = request.get("previous_response_id")
        self.dropped: list[str] = []  # Responses fields chat could not take (drop mode)
        # For deployments declaring `responses` (policies/native.py): the request as sent.
        self.native: dict[str, Any] = {}
        # Why `chat` falls short of the request (it had to drop what chat has no form for):
        # only a native deployment may answer it.
        self.refusal: ApiError | None = None
        self.id = new_id("resp")
        self.created_at = int(time.time())
        # The turn's own fields of a Response, whoever answered (`own_response`).
        self.own = {
            "id": self.id,
            "created_at": self.created_at,
            "previous_response_id": self.previous,
            "store": request.get("store") is not False,
        }

    @classmethod
    async def begin(
        cls, gateway: Gateway, storage: Storage, caller: Caller, body: dict[str, Any]
    ) -> Turn:
        if body.get("background") is True:
            raise ApiError("Background responses are not supported.", param="background")
        settings = gateway.config.responses
        owner = owner_of(caller)
        history = await earlier_items(storage, owner, body.get("previous_response_id"), settings)
        drop, refusal = drops_what_chat_lacks(gateway.config, caller, body), None
        try:
            chat, dropped = chat_request(body, history, drop=drop)
        except ApiError as exc:
            if drop:
                raise
            # What chat has no form for (a built-in tool ...) a native deployment takes: the
            # chat form drops it, and every deployment without `responses` refuses it.
            (chat, _), dropped, refusal = chat_request(body, history, drop=True), [], exc
        chat.update({k: body[k] for k in ROUTING_FIELDS if k in body})
        items = input_items(body)

        async def keep(response: Mapping[str, Any]) -> None:
            await store_turn(storage, owner, response, items, settings)

        turn = cls(body, chat, items, keep if body.get("store", True) is not False else None)
        turn.dropped, turn.refusal = dropped, refusal
        turn.native = native_request(body, history, items)
        return turn

    def chat_refusal(self) -> Refusal | None:
        """What a deployment without `responses` is skipped with (None: it takes `chat`)."""
        if self.refusal is None:
            return None
        return Refusal(self.refusal.param or "input", self.refusal.message)

    def check_routable(self, gateway: Gateway, run: PipelineRun) -> None:
        """Raises the chat form's refusal when no deployment of the plan is native: the
        request is then refused as any chat-only model refuses it (before any call)."""
        route = run.record.route
        if self.refusal is not None and (
            route is None or not gateway.dispatcher.answers_natively(route.plan)
        ):
            raise self.refusal

    def cache_options(self) -> Any:
        """A continued conversation is not answered from the cache (its turns are its own);
        nor is a request whose chat form falls short of it (the key is the chat form)."""
        if self.previous is not None or self.refusal is not None:
            return {"no_cache": True}
        return self.request.get("cache")

    async def whole(self, upstream: JSONObject) -> dict[str, Any]:
        """The Response: a native deployment's own (made the turn's), or the chat answer's."""
        if upstream.get("object") == "response":
            answer = own_response(upstream, self.own)
        else:
            answer = response_object(
                self.id,
                self.request,
                upstream,
                created_at=self.created_at,
                previous_response_id=self.previous,
                completed_at=int(time.time()),
            )
        if self.keep is not None:
            await self.keep(answer)
        return answer

    def framer(self) -> Framer:
        chat = ResponseEvents(
            self.id, self.request, created_at=self.created_at, previous_response_id=self.previous
        )
        native = NativeEvents(chat.response, self.own)
        return lambda chunks, on_end, _usage: _frames((chat, native), chunks, on_end, self.keep)


async def _frames(
    modes: tuple[ResponseEvents, NativeEvents],
    chunks: AsyncIterator[JSONObject],
    on_end: StreamEnd,
    keep: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
) -> AsyncIterator[bytes]:
    """The stream as Responses events: a chat stream mapped (`ResponseEvents`), a native
    deployment's relayed (`NativeEvents`), as its first chunk says; a failure after the
    first event is `response.failed`, never a truncated `response.completed`. The turn is
    kept before its final event goes out."""
    outcome, usage, streamed = "client_closed", None, 0
    events: ResponseEvents | NativeEvents = modes[0]
    started = False
    try:
        async for chunk in chunks:
            if not started:
                events = modes[1] if is_response_event(chunk) else modes[0]
                started = True
                for event in events.start():
                    yield sse(event)
            usage = chunk_usage(chunk) or usage
            streamed += chunk_chars(chunk)
            for event in events.on_chunk(chunk):
                yield sse(event)
        if not started:
            for event in events.start():
                yield sse(event)
        final = events.finish(completed_at=int(time.time()))
        if keep is not None:
            try:
                await keep(events.response)
            except StorageUnavailable as exc:
                # The answer is whole but not kept (a follow-up could not find it): the
                # stream still ends, with the final event turned into `response.failed`.
                log.warning("responses_turn_not_stored", error=str(exc))
                final = [*final[:-1], _unstored(final[-1])] if final else final
        for event in final:
            yield sse(event)
        ended = final[-1]["type"] if final else f"response.{events.response.get('status')}"
        outcome = "error" if ended == "response.failed" else "ok"
    except UpstreamError as exc:
        outcome = "error"
        for event in await _failed(events, started, stream_error_payload(exc)["error"], keep):
            yield sse(event)
    except Exception as exc:  # a bug mid-stream: the client still gets `response.failed`
        outcome = "error"
        log.error("responses_stream_failed", exc_info=exc)
        error = envelope("The server had an error processing the response.", "server_error")
        for event in await _failed(events, started, error["error"], keep):
            yield sse(event)
    finally:
        on_end(outcome, usage, streamed)


async def _failed(
    events: ResponseEvents | NativeEvents,
    started: bool,
    error: Mapping[str, Any],
    keep: Callable[[Mapping[str, Any]], Awaitable[None]] | None,
) -> list[dict[str, Any]]:
    """`response.failed`, after the opening events if none went out yet. A failed turn is
    kept too (as OpenAI keeps it: readable, status `failed`); a conversation continued
    from it takes its input, not its partial output (router/responses/conversation.py).
    A store that is down then is logged: the client still gets its `response.failed`."""
    failing = [*([] if started else events.start()), *events.fail(error)]
    if keep is not None:
        try:
            await keep(events.response)
        except StorageUnavailable as exc:
            log.warning("responses_failed_turn_not_stored", error=str(exc))
    return failing


def _unstored(final: Mapping[str, Any]) -> dict[str, Any]:
    """A stream's final event for a turn the store could not keep: `response.failed`
    (under the same sequence number); its code one the spec's enum has, its message the
    503's that a whole answer gets."""
    response = dict(final.get("response") or {})
    response.update(
        status="failed",
        error={"code": "server_error", "message": unavailable().message},
        incomplete_details=None,
    )
    return {**final, "type": "response.failed", "response": response}
