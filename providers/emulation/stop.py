"""Stop sequences for a backend that has none, fewer than a request asks for, or refuses
whitespace-only ones (Anthropic).

When the backend cannot take a request's stop strings natively, none are sent upstream and
all are matched on the output with `StopMatcher` / `StopFilter` (the same matching the
local samplers use): whole responses are cut at the earliest match; streams hold back per
choice only text that could still begin a stop string, and once every choice has stopped
the upstream stream is closed, so the backend stops generating.

A stream closed that way never gets the backend's usage chunk, and reading on to it would
let the backend generate up to max_tokens. The usage is then the backend's own if it sent
some on a chunk, else counted with the deployment's declared tokenizer (everything
received, in a worker thread), else left out — never made up; the planner lists
`stream_options.include_usage` in x-turnout-dropped for a client that asked.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.base import Provider
from providers.emulation.stream_usage import add_texts, count_usage
from providers.emulation.wrapper import (
    ProviderWrapper,
    choice_index,
    chunk_choices,
    include_usage,
)
from providers.local.text import StopFilter, StopMatcher
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class StopEmulation(ProviderWrapper):
    """Matches `stop` on the output when the backend cannot take them all natively.
    `whitespace_stop` false: the backend refuses whitespace-only stop strings. `tokenizer`:
    the deployment's declared one, to count the usage of a stream cut short."""

    def __init__(
        self,
        inner: Provider,
        max_native_stop: int,
        *,
        whitespace_stop: bool = True,
        tokenizer: DeclaredTokenizer | None = None,
    ) -> None:
        super().__init__(inner)
        self.max_native_stop = max_native_stop
        self.whitespace_stop = whitespace_stop
        self.tokenizer = tokenizer

    def _emulated(self, request: ProviderRequest) -> tuple[ProviderRequest, StopMatcher] | None:
        stops = _stops(request.body)
        blank = not self.whitespace_stop and any(s and not s.strip() for s in stops)
        if len(stops) <= self.max_native_stop and not blank:
            return None
        body = {k: v for k, v in request.body.items() if k != "stop"}
        return ProviderRequest(request.endpoint, body), StopMatcher(stops)

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        emulated = self._emulated(request)
        if emulated is None:
            return await self.inner.complete(request)
        upstream, matcher = emulated
        response = await self.inner.complete(upstream)
        for choice in chunk_choices(response.body):
            holder, key = _text_slot(choice, request.endpoint)
            text = holder.get(key)
            if isinstance(text, str):
                kept, stopped = matcher.check(text, len(text))
                if stopped:
                    holder[key] = kept
                    choice["finish_reason"] = "stop"
        return response

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        emulated = self._emulated(request)
        if emulated is None:
            return self.inner.stream(request)
        upstream, matcher = emulated
        return self._stopped_stream(request, upstream, matcher)

    async def _stopped_stream(
        self, request: ProviderRequest, upstream: ProviderRequest, matcher: StopMatcher
    ) -> AsyncGenerator[JSONObject, None]:
        state = _StreamStops(matcher, request.endpoint, request.choice_count)
        usage_chunk: JSONObject | None = None
        async with contextlib.aclosing(self.inner.stream(upstream)) as chunks:
            async for chunk in chunks:
                if chunk.get("usage") is not None and not chunk_choices(chunk):
                    usage_chunk = chunk  # sent last, after any text still held back
                    continue
                out = state.filter(chunk)
                if out is not None:
                    yield out
                if state.all_stopped:
                    break  # leaving the block closes the upstream stream
        if usage_chunk is None and state.all_stopped and include_usage(request.body):
            usage_chunk = await self._usage_after_cut(request, state)
        if usage_chunk is not None:
            yield usage_chunk

    async def _usage_after_cut(
        self, request: ProviderRequest, state: _StreamStops
    ) -> JSONObject | None:
        usage = state.reported
        if usage is None and self.tokenizer is not None:
            tokenizer = await self.tokenizer.load()
            usage = await count_usage(tokenizer, request, state.received)
        return None if usage is None else {**state.head, "choices": [], "usage": usage}


class _StreamStops:
    """Per choice index: a `StopFilter`, and whether that choice has finished."""

    def __init__(self, matcher: StopMatcher, endpoint: Endpoint, choices: int) -> None:
        self.matcher = matcher
        self.endpoint = endpoint
        self.choices = choices
        self.filters: dict[int, StopFilter] = {}
        self.finished: set[int] = set()
        self.cut = False  # a choice ended at a stop string: the backend is still generating
        self.received: dict[int, list[str]] = {}  # all text received, per choice index
        self.reported: JSONObject | None = None  # usage the backend put on its chunks
        self.head: JSONObject = {}

    @property
    def all_stopped(self) -> bool:
        """Every choice finished, one at least at a stop: nothing more worth reading."""
        return self.cut and len(self.finished) >= self.choices

    def filter(self, chunk: JSONObject) -> JSONObject | None:
        if not self.head:
            self.head = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # some backends send usage so far on every chunk
            self.reported = usage
        add_texts(self.received, chunk, self.endpoint)
        choices = [c for c in (self._choice(c) for c in chunk_choices(chunk)) if c is not None]
        return {**chunk, "choices": choices} if choices else None

    def _choice(self, choice: JSONObject) -> JSONObject | None:
        index = choice_index(choice)
        if index in self.finished:
            return None  # this choice already ended at a stop string
        stop_filter = self.filters.setdefault(index, StopFilter(self.matcher))
        out = dict(choice)
        if self.endpoint is Endpoint.CHAT:
            out["delta"] = dict(out.get("delta") or {})  # edited below: copy, not mutate
        holder, key = _text_slot(out, self.endpoint)
        text = holder.get(key)
        sent = ""
        if isinstance(text, str) and text:
            sent = stop_filter.push(text)
        if stop_filter.stopped:
            out["finish_reason"] = "stop"
            self.cut = True
        elif out.get("finish_reason"):
            sent += stop_filter.finish()  # the text ended without a stop: release the rest
        if isinstance(text, str) or sent:
            holder[key] = sent
        if out.get("finish_reason"):
            self.finished.add(index)
        return out


def _stops(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str)]
    return []


def _text_slot(choice: JSONObject, endpoint: Endpoint) -> tuple[dict[str, Any], str]:
    """Where a choice (whole or chunk) keeps its text: (the object holding it, its key)."""
    if endpoint is not Endpoint.CHAT:
        return choice, "text"
    for key in ("message", "delta"):
        holder = choice.get(key)
        if isinstance(holder, dict):
            return holder, "content"
    return choice.setdefault("delta", {}), "content"
