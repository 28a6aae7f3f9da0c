"""OpenAI-shaped response bodies and stream chunks for the local samplers.

Plain dict builders for `/v1/completions` and `/v1/chat/completions`, whole and streamed,
exactly as the wire reference describes them. The stream writers (`CompletionStream`,
`ChatStream`) hold the per-response rules: one id and `created` for every chunk, the
assistant role first on each chat choice, exactly one `finish_reason` per choice, and a
`choices: []` usage chunk (with `usage: null` everywhere else) only when the client asked
for `stream_options.include_usage`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
Json = dict[str, Any]


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def chat_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> Json:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# Whole responses


def completion_choice(
    index: int, text: str, finish_reason: FinishReason | None, logprobs: Json | None = None
) -> Json:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def completion_response(
    id: str, created: int, model: str, choices: Sequence[Json], usage: Json
) -> Json:
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": list(choices),
        "usage": usage,
    }


def chat_message(content: str | None, tool_calls: Sequence[Json] | None = None) -> Json:
    message: Json = {"role": "assistant", "content": content, "refusal": None}
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    return message


def chat_choice(
    index: int,
    content: str | None,
    finish_reason: FinishReason | None,
    logprobs: Json | None = None,
    tool_calls: Sequence[Json] | None = None,
) -> Json:
    return {
        "index": index,
        "message": chat_message(content, tool_calls),
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def chat_response(id: str, created: int, model: str, choices: Sequence[Json], usage: Json) -> Json:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": list(choices),
        "usage": usage,
    }


# Streams


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """What every chunk of one streamed response shares."""

    id: str
    created: int
    model: str
    include_usage: bool = False

    def chunk(self, object: str, choices: list[Json]) -> Json:
        body: Json = {
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self, object: str, usage: Json) -> Json:
        return {**self.chunk(object, []), "usage": usage}


@dataclass(slots=True)
class _ChoiceStates:
    """Which choice indexes have started and which have finished."""

    started: set[int] = field(default_factory=set)
    finished: set[int] = field(default_factory=set)

    def check_open(self, index: int) -> None:
        if index in self.finished:
            raise ValueError(f"choice {index} already has its finish_reason")


class CompletionStream:
    """Chunks of a streamed `/v1/completions` response: whole `text_completion` objects
    whose `text` is the delta."""

    __slots__ = ("_states", "header")
    OBJECT = "text_completion"

    def __init__(self, header: StreamHeader) -> None:
        self.header = header
        self._states = _ChoiceStates()

    def _chunk(
        self, index: int, text: str, finish_reason: FinishReason | None, logprobs: Json | None
    ) -> Json:
        choice = completion_choice(index, text, finish_reason, logprobs)
        return self.header.chunk(self.OBJECT, [choice])

    def delta(self, index: int, text: str, logprobs: Json | None = None) -> list[Json]:
        """A chunk for new text (none if there is neither text nor logprobs)."""
        self._states.check_open(index)
        if not text and not logprobs:
            return []
        return [self._chunk(index, text, None, logprobs)]

    def finish(
        self,
        index: int,
        finish_reason: FinishReason,
        text: str = "",
        logprobs: Json | None = None,
    ) -> list[Json]:
        """The choice's last chunk, carrying its only `finish_reason`."""
        self._states.check_open(index)
        self._states.finished.add(index)
        return [self._chunk(index, text, finish_reason, logprobs)]

    def usage(self, usage: Json) -> list[Json]:
        """The usage chunk (`choices: []`) if the client asked for it, else nothing."""
        if not self.header.include_usage:
            return []
        return [self.header.usage_chunk(self.OBJECT, usage)]


class ChatStream:
    """Chunks of a streamed `/v1/chat/completions` response (`chat.completion.chunk`)."""

    __slots__ = ("_states", "header")
    OBJECT = "chat.completion.chunk"

    def __init__(self, header: StreamHeader) -> None:
        self.header = header
        self._states = _ChoiceStates()

    def _chunk(
        self,
        index: int,
        delta: Json,
        finish_reason: FinishReason | None = None,
        logprobs: Json | None = None,
    ) -> Json:
        choice = {
            "index": index,
            "delta": delta,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }
        return self.header.chunk(self.OBJECT, [choice])

    def start(self, index: int) -> list[Json]:
        """The role chunk, if this choice has not had it yet (sent before any content)."""
        self._states.check_open(index)
        if index in self._states.started:
            return []
        self._states.started.add(index)
        return [self._chunk(index, {"role": "assistant", "content": ""})]

    def delta(self, index: int, content: str, logprobs: Json | None = None) -> list[Json]:
        """Chunks for new content: the role chunk first if needed, then the content."""
        chunks = self.start(index)
        if content or logprobs:
            chunks.append(self._chunk(index, {"content": content}, None, logprobs))
        return chunks

    def tool_call_delta(self, index: int, tool_calls: Sequence[Json]) -> list[Json]:
        """Chunks for tool-call fragments (each with `index`; `id`/`type`/`name` once)."""
        chunks = self.start(index)
        chunks.append(self._chunk(index, {"tool_calls": list(tool_calls)}))
        return chunks

    def finish(
        self,
        index: int,
        finish_reason: FinishReason,
        content: str = "",
        logprobs: Json | None = None,
    ) -> list[Json]:
        """The choice's last chunk, carrying its only `finish_reason` (and any last text)."""
        chunks = self.start(index)
        delta: Json = {"content": content} if content else {}
        chunks.append(self._chunk(index, delta, finish_reason, logprobs))
        self._states.finished.add(index)
        return chunks

    def usage(self, usage: Json) -> list[Json]:
        """The usage chunk (`choices: []`) if the client asked for it, else nothing."""
        if not self.header.include_usage:
            return []
        return [self.header.usage_chunk(self.OBJECT, usage)]
