"""`POST /v1/messages/count_tokens`: the prompt's tokens as the model that would answer
it counts them, where Turnout can tell: the tokenizer its first deployment declares
(`tokenizer:`), else that deployment's own (the local samplers'). Elsewhere an estimate
(characters / 4, as the limits estimate), and the `x-turnout-token-count` header says so:
`tokenizer`, `model` or `estimate`. An Anthropic deployment counts the request as the
client sent it itself (`upstream`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import structlog

from policies.errors import ApiError
from policies.rules import estimate_prompt_tokens
from policies.teams import Caller
from providers.errors import UpstreamError
from router.gateway import Gateway
from router.messages.to_chat import chat_request

log = structlog.get_logger("turnout.messages")


async def count_tokens(
    gateway: Gateway, caller: Caller, body: dict[str, Any], headers: Mapping[str, str]
) -> tuple[int, str]:
    """(input tokens, how they were counted) for a Messages request's prompt."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError("model: Field required", param="model")
    if not isinstance(body.get("messages"), list):
        raise ApiError("messages: Field required", param="messages")
    # Routed as a request for it would be: its aliases and `match:` patterns, the team's
    # models (404 outside them) and rules; counted as its first deployment would count it.
    route = gateway.router.route(caller, body, headers)
    deployment = route.plan.targets[0].deployment
    # Counted on the chat form the backend is sent (max_tokens matters not for a count).
    chat, _ = chat_request({"max_tokens": 1, **body}, drop=True)
    if deployment.tokenizer is not None:
        tokenizer = await gateway.dispatcher.declared_tokenizer(deployment.tokenizer)
        # A chat template over a prompt up to `max_body_bytes`: off the event loop.
        ids = await asyncio.to_thread(tokenizer.render_chat, chat["messages"], chat.get("tools"))
        return len(ids), "tokenizer"
    provider = gateway.providers[deployment.provider]
    counted = await provider.count_chat_tokens(chat)
    if counted is not None:
        return counted, "model"
    sent = {**body, "model": deployment.model}
    try:
        counted = await provider.count_message_tokens(sent, headers)
    except UpstreamError as exc:  # masked as any upstream error; the count is estimated
        log.warning("count_tokens_upstream_failed", provider=provider.name, error=exc.summary())
        counted = None
    if counted is not None:
        return counted, "upstream"
    return estimate_prompt_tokens(chat), "estimate"
