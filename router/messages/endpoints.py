"""Anthropic's Messages API, a front door over the one pipeline: `POST /v1/messages` (whole
and streamed) and `POST /v1/messages/count_tokens`, for Claude Code
(`ANTHROPIC_BASE_URL`), the official `anthropic` SDKs and what is built on them.

A request is authenticated (`x-api-key` or a Bearer key: the same keys and teams as the
OpenAI side), checked (router/messages/schema.py), mapped to one chat completions request
(router/messages/to_chat.py) and run through `PipelineRun` as any chat is: team rules,
limits, cache, plan, translation per deployment, retries, failover, hedging, continuation
of broken streams, local samplers. A deployment of kind `anthropic` gets the client's own
body instead (pass-through: policies/native.py). The answer comes back in Anthropic's
shapes: whole (router/messages/from_chat.py), as Anthropic's events
(router/messages/events.py), errors in Anthropic's envelope with its statuses.
"""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from litestar import Request, Response, post

from policies.errors import ApiError
from providers.errors import UpstreamError
from providers.types import Endpoint
from router.auth import authenticate_api_key
from router.body import read_json_object, validate
from router.endpoints import stream_answer, unless_disconnected
from router.gateway import Gateway, PolicyObserver
from router.messages.count import count_tokens
from router.messages.schema import MessagesRequest, require_version
from router.messages.turn import MessageTurn, anthropic_error
from router.pipeline import PipelineRun
from router.schemas.chat import ChatCompletionRequest

AnyRequest = Request[Any, Any, Any]
log = structlog.get_logger("turnout.messages")
# Beta names are a few dozen characters; Claude Code sends about ten of them.
MAX_BETA_CHARS = 4096


@post("/v1/messages", status_code=200)
async def create_message(request: AnyRequest) -> Response[Any]:
    gateway: Gateway = request.app.state.gateway
    observer: PolicyObserver = request.app.state.metrics
    run = PipelineRun.begin(
        gateway, observer, Endpoint.CHAT, request.headers.get("x-request-id"), label="messages"
    )
    # Anthropic's SDKs read the id from `request-id` (`exc.request_id`, `._request_id`).
    run.record.extra_headers["request-id"] = run.record.request_id
    try:
        require_version(request.headers)
        await run.admit(authenticate_api_key(request, gateway))
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        validate(MessagesRequest, body)
        turn = MessageTurn.begin(gateway, run, body, _beta_joined(request))
        forward = await run.prepare(
            ChatCompletionRequest,
            turn.chat,
            request.headers,
            native=turn.native,
            chat_refusal=turn.chat_refusal(),
        )
        turn.check_routable(gateway, run)
        if body.get("stream") is True:
            response = await stream_answer(
                request, gateway, run.record, Endpoint.CHAT, forward, run, turn.framer()
            )
            run.streaming = True
            return response
        content, headers = await run.answer(
            forward, turn.cache_options(), lambda work: unless_disconnected(request, work)
        )
        answer = turn.whole(orjson.loads(content))
    except (ApiError, UpstreamError) as exc:
        failure = await run.fail(exc)
        return anthropic_error(failure.status, failure.body, failure.headers)
    except Exception as exc:  # a bug: logged; answered in Anthropic's envelope
        run.crashed(exc)
        return anthropic_error(500, b"", {})
    finally:
        await run.end()
    return Response(orjson.dumps(answer), media_type="application/json", headers=headers)


@post("/v1/messages/count_tokens", status_code=200)
async def count_message_tokens(request: AnyRequest) -> Response[Any]:
    """`{"input_tokens": N}`: counted with the model's tokenizer where Turnout has one,
    else estimated (the `x-turnout-token-count` header says which)."""
    gateway: Gateway = request.app.state.gateway
    request_id = gateway.new_request_id()
    ids = {"request-id": request_id, "x-request-id": request_id}
    try:
        require_version(request.headers)
        caller = authenticate_api_key(request, gateway)
        body = await read_json_object(request, gateway.config.server.max_body_bytes)
        counted, how = await count_tokens(gateway, caller, body, _beta_joined(request))
    except ApiError as exc:
        error = orjson.dumps({"error": {"message": exc.message, "type": exc.type}})
        return anthropic_error(exc.status, error, {**exc.headers, **ids})
    except Exception as exc:  # a bug: logged; answered in Anthropic's envelope
        log.error("count_tokens_failed", request_id=request_id, exc_info=exc)
        return anthropic_error(500, b"", ids)
    return Response(
        orjson.dumps({"input_tokens": counted}),
        media_type="application/json",
        headers={"x-turnout-token-count": how, **ids},
    )


ROUTES = [create_message, count_message_tokens]


def _beta_joined(request: AnyRequest) -> dict[str, str]:
    """The request's headers, several `anthropic-beta` lines joined into one (as one
    header's comma-separated values), for an Anthropic deployment to get them all. Their
    length is bounded (`MAX_BETA_CHARS`): they are sent on with every call."""
    headers = dict(request.headers)
    betas = request.headers.getall("anthropic-beta", [])
    if betas:
        joined = headers["anthropic-beta"] = ", ".join(betas)
        if len(joined) > MAX_BETA_CHARS:
            raise ApiError(
                f"anthropic-beta: at most {MAX_BETA_CHARS} characters of beta names "
                f"(got {len(joined)})",
                param="anthropic-beta",
            )
    return headers
