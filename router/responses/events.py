"""A chat completions stream → the Responses stream events, in OpenAI's order.

One `ResponseEvents` per stream, fed the `chat.completion.chunk` objects in arrival order:

- `start()`: `response.created`, `response.in_progress`;
- text → `response.output_item.added` (a message) and `response.content_part.added` the
  first time, then `response.output_text.delta`; a refusal likewise with a `refusal` part
  and `response.refusal.delta`;
- a tool call starting (a new chat tool-call index) → `response.output_item.added` (a
  function call), its argument fragments → `response.function_call_arguments.delta`;
- one item is open at a time: starting the next closes the one before
  (`response.output_text.done`, `response.content_part.done`,
  `response.function_call_arguments.done`, `response.output_item.done`, with everything
  the item said); backends stream tool calls one after another, and a fragment of an
  already closed call still reaches the final response;
- `finish()`: closes the open item, then `response.completed`, or `response.incomplete`
  when chat's `finish_reason` was `length` or `content_filter` (a stream that ended with
  no `finish_reason` is complete: broken streams reach `fail`, not `finish`);
- `fail(error)`: `response.failed`, the items left as they were.

Every event has `type` and `sequence_number` (0, 1, 2 ... over the whole stream)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.chat_chunks import tool_call_key
from router.responses.from_chat import (
    delta_logprobs,
    finish_response,
    function_call_item,
    message_item,
    output_logprobs,
    output_text,
    response_error,
    response_skeleton,
    set_usage,
)
from router.responses.ids import new_id, new_item_id

Event = dict[str, Any]


@dataclass(slots=True)
class _Open:
    """An item being streamed; what it says is joined when it is read or closed."""

    index: int  # its output_index
    item: dict[str, Any]  # as it stands in the response's output
    pieces: list[str] = field(default_factory=list)  # the open part's text, or arguments
    part: dict[str, Any] | None = None  # a message's open content part
    logprobs: list[Any] = field(default_factory=list)  # chat logprobs of the open part

    def sync(self) -> None:
        """Write what was streamed so far into the item."""
        joined = "".join(self.pieces)
        if self.item["type"] == "function_call":
            self.item["arguments"] = joined
        elif self.part is not None and self.part["type"] == "output_text":
            self.part["text"] = joined
            self.part["logprobs"] = output_logprobs(self.logprobs)
        elif self.part is not None:
            self.part["refusal"] = joined


class ResponseEvents:
    def __init__(
        self,
        response_id: str,
        request: Mapping[str, Any],
        *,
        created_at: int,
        previous_response_id: str | None = None,
    ) -> None:
        self._response = response_skeleton(
            response_id,
            request,
            created_at=created_at,
            model=str(request.get("model") or ""),
            status="in_progress",
            previous_response_id=previous_response_id,
        )
        self._sequence = 0
        self._open: _Open | None = None
        self._calls: dict[int, _Open] = {}  # chat tool-call index → its item
        self._finish_reason: Any = None
        self._usage: Any = None
        self._model_seen = False
        self._ended = False

    @property
    def response(self) -> dict[str, Any]:
        """The Response as it stands (final after `finish` or `fail`)."""
        if self._open is not None:
            self._open.sync()
        return copy.deepcopy(self._response)

    def start(self) -> list[Event]:
        return [
            self._event("response.created", response=self.response),
            self._event("response.in_progress", response=self.response),
        ]

    def on_chunk(self, chunk: Mapping[str, Any]) -> list[Event]:
        if self._ended:
            return []
        if chunk.get("model") and not self._model_seen:
            self._response["model"], self._model_seen = str(chunk["model"]), True
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:  # Responses has no `n`: only the first choice
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                chat_logprobs = (choice.get("logprobs") or {}).get("content") or ()
                events += self._text("output_text", delta["content"], chat_logprobs)
            if delta.get("refusal"):
                events += self._text("refusal", delta["refusal"], ())
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return events

    def finish(self, *, completed_at: int | None = None) -> list[Event]:
        """`completed_at`: when the stream ended (the response's `created_at` if not given)."""
        if self._ended:
            return []
        self._ended = True
        ended = completed_at or int(self._response["created_at"])
        item_status = finish_response(self._response, self._finish_reason, ended)
        events = self._close(item_status)
        set_usage(self._response, self._usage)
        kind = f"response.{self._response['status']}"  # completed or incomplete
        return [*events, self._event(kind, response=self.response)]

    def fail(self, error: Mapping[str, Any]) -> list[Event]:
        """`error`: an OpenAI error envelope, or its `error` object."""
        if self._ended:
            return []
        self._ended = True
        self._response["status"] = "failed"
        self._response["error"] = response_error(error)
        set_usage(self._response, self._usage)
        return [self._event("response.failed", response=self.response)]

    def _text(self, kind: str, piece: str, chat_logprobs: Any) -> list[Event]:
        events = self._open_message()
        events += self._open_part(kind)
        state = self._open
        assert state is not None  # opened just above
        state.pieces.append(piece)
        item_id, index, content_index = (
            state.item["id"],
            state.index,
            len(state.item["content"]) - 1,
        )
        if kind == "refusal":
            events.append(
                self._event(
                    "response.refusal.delta",
                    item_id=item_id,
                    output_index=index,
                    content_index=content_index,
                    delta=piece,
                )
            )
            return events
        state.logprobs += chat_logprobs
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=item_id,
                output_index=index,
                content_index=content_index,
                delta=piece,
                logprobs=delta_logprobs(chat_logprobs),
            )
        )
        return events

    def _open_message(self) -> list[Event]:
        if self._open is not None and self._open.item["type"] == "message":
            return []
        events = self._close("completed")
        item = message_item(new_item_id("message"), [], "in_progress")
        return events + self._add(item)

    def _open_part(self, kind: str) -> list[Event]:
        state = self._open
        assert state is not None  # a message was opened just before
        if state.part is not None and state.part["type"] == kind:
            return []
        events = self._close_part(state)
        state.part = output_text("", []) if kind == "output_text" else {"type": kind, "refusal": ""}
        state.item["content"].append(state.part)
        added = self._event(
            "response.content_part.added",
            item_id=state.item["id"],
            output_index=state.index,
            content_index=len(state.item["content"]) - 1,
            part=copy.deepcopy(state.part),
        )
        return [*events, added]

    def _call(self, call: Mapping[str, Any]) -> list[Event]:
        function = call.get("function") or {}
        key = self._call_key(call)
        events: list[Event] = []
        state = self._calls.get(key)
        if state is None:
            events += self._close("completed")
            call_id = str(call.get("id") or new_id("call"))
            name = str(function.get("name") or "")
            item = function_call_item(
                new_item_id("function_call"), call_id, name, "", "in_progress"
            )
            events += self._add(item)
            state = self._open
            assert state is not None  # added just above
            self._calls[key] = state
        elif function.get("name") and not state.item["name"]:  # a name sent after the id
            state.item["name"] = str(function["name"])
        arguments = function.get("arguments")
        if not arguments:
            return events
        state.pieces.append(str(arguments))
        if state is not self._open:  # a late fragment of a call already closed
            state.sync()
            return events
        events.append(
            self._event(
                "response.function_call_arguments.delta",
                item_id=state.item["id"],
                output_index=state.index,
                delta=str(arguments),
            )
        )
        return events

    def _call_key(self, call: Mapping[str, Any]) -> int:
        open_key = next((k for k, s in self._calls.items() if s is self._open), None)
        open_id = None if open_key is None else self._calls[open_key].item["call_id"]
        return tool_call_key(call, open_key, open_id, self._calls)

    def _add(self, item: dict[str, Any]) -> list[Event]:
        output: list[dict[str, Any]] = self._response["output"]
        self._open = _Open(index=len(output), item=item)
        output.append(item)
        added = self._event(
            "response.output_item.added", output_index=self._open.index, item=copy.deepcopy(item)
        )
        return [added]

    def _close(self, status: str) -> list[Event]:
        state = self._open
        if state is None:
            return []
        self._open = None
        state.sync()
        item, index = state.item, state.index
        events: list[Event] = []
        if item["type"] == "function_call":
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    name=item["name"],
                    output_index=index,
                    arguments=item["arguments"],
                )
            )
        else:
            events += self._close_part(state)
        item["status"] = status
        done = self._event(
            "response.output_item.done", output_index=index, item=copy.deepcopy(item)
        )
        return [*events, done]

    def _close_part(self, state: _Open) -> list[Event]:
        part = state.part
        if part is None:
            return []
        state.sync()
        where = {
            "item_id": state.item["id"],
            "output_index": state.index,
            "content_index": len(state.item["content"]) - 1,  # the open part is the last
        }
        if part["type"] == "output_text":
            logprobs = delta_logprobs(state.logprobs)
            done = self._event(
                "response.output_text.done", **where, text=part["text"], logprobs=logprobs
            )
        else:
            done = self._event("response.refusal.done", **where, refusal=part["refusal"])
        state.part, state.pieces, state.logprobs = None, [], []
        part_done = self._event("response.content_part.done", **where, part=copy.deepcopy(part))
        return [done, part_done]

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event


def sse(event: Mapping[str, Any]) -> bytes:
    """The SSE frame OpenAI sends for one event."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
