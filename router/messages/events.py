"""A chat completions stream → Anthropic's Messages stream events, in Anthropic's order.

One `MessageEvents` per stream, fed the `chat.completion.chunk` objects in arrival order:

- `start()`: `message_start` (the message with no content; `usage.input_tokens` as
  given, 0 when not known yet: the real count comes in the final `message_delta`);
- text (and a `refusal`) → `content_block_start` of a `text` block the first time in a
  run, then `content_block_delta` (`text_delta`); the first block is followed by a
  `ping`, where Anthropic sends it;
- a tool call starting (a new chat tool-call index) closes the open block
  (`content_block_stop`) and opens a `tool_use` block (`id`, `name`, `input: {}`); its
  argument fragments → `input_json_delta`. A call whose name comes after its id is
  opened once the name is known (Anthropic's block start carries it), its arguments
  held until then. Backends stream tool calls one after another; a fragment of a call
  already closed still reaches `message`, not the client (a closed block takes no
  delta);
- one block per text run and per tool call, indices 0, 1, 2 ... in order;
- `finish()`: closes the open block, then `message_delta` (`stop_reason`,
  `stop_sequence`, cumulative `usage`: `output_tokens`, and the input counts when the
  backend's usage chunk gave them) and `message_stop`. The opening events come first
  if `start()` was never called;
- `fail(error)`: one `error` event, as Anthropic ends a broken stream (blocks left open).

A backend's reasoning deltas are left out (see router/messages/from_chat.py)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from router.chat_chunks import tool_call_key
from router.messages.from_chat import (
    message_skeleton,
    new_tool_use_id,
    stop_reason,
    stream_error,
    text_block,
    tool_input,
    tool_use_block,
    usage,
)

Event = dict[str, Any]


@dataclass(slots=True)
class _Block:
    """A content block being streamed; `index` None until its start went out."""

    block: dict[str, Any]  # as it stands in the message's content
    index: int | None = None
    pieces: list[str] = field(default_factory=list)  # its text, or its JSON arguments

    def sync(self) -> None:
        joined = "".join(self.pieces)
        if self.block["type"] == "text":
            self.block["text"] = joined
        else:
            self.block["input"] = tool_input(joined)


class MessageEvents:
    def __init__(
        self,
        message_id: str,
        *,
        model: str,
        input_tokens: int | None = None,
        stop_sequences: Sequence[str] = (),
    ) -> None:
        """`model`: the name the client asked for; `stop_sequences`: the request's (to
        tell a `stop_sequence` stop, where the backend says which one matched)."""
        start_usage = {**usage(None), "input_tokens": input_tokens or 0}
        self._message = message_skeleton(message_id, model, start_usage)
        self._stop_sequences = tuple(stop_sequences)
        self._blocks: list[_Block] = []  # every block, in content order
        self._open: _Block | None = None
        self._calls: dict[int, _Block] = {}  # chat tool-call index → its block
        self._choice: dict[str, Any] = {}  # finish_reason and vLLM's stop_reason, as seen
        self._usage: Any = None
        self._started = False
        self._pinged = False
        self._ended = False

    @property
    def message(self) -> dict[str, Any]:
        """The message as it stands (final after `finish`)."""
        for state in self._blocks:
            state.sync()
        return copy.deepcopy(self._message)

    def start(self) -> list[Event]:
        if self._started:
            return []
        self._started = True
        return [{"type": "message_start", "message": self.message}]

    def on_chunk(self, chunk: Mapping[str, Any]) -> list[Event]:
        if self._ended:
            return []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:  # Anthropic has no `n`: only the first choice
                continue
            delta = choice.get("delta") or {}
            for text in (delta.get("content"), delta.get("refusal")):
                if isinstance(text, str) and text:
                    events += self._text(text)
            for call in delta.get("tool_calls") or ():
                events += self._call(call)
            for key in ("finish_reason", "stop_reason"):
                if choice.get(key) is not None:
                    self._choice[key] = choice[key]
            if delta.get("refusal"):
                self._choice["refusal"] = True
        return events

    def finish(self) -> list[Event]:
        if self._ended:
            return []
        events = [*self.start(), *self._close()]
        self._ended = True
        for state in self._calls.values():
            if state.index is None:  # a call whose name never came: opened now
                events += self._begin(state)
                events += self._close()
        if not self._pinged:
            events.append({"type": "ping"})
        reason, sequence = stop_reason(self._choice, self._stop_sequences)
        if self._choice.get("refusal"):
            reason = "refusal"
        final = usage(self._usage)
        if self._usage is None:  # nothing said: keep what message_start said
            final["input_tokens"] = self._message["usage"]["input_tokens"]
        self._message.update(stop_reason=reason, stop_sequence=sequence, usage=final)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        delta_usage = final if self._usage is not None else {"output_tokens": 0}
        events.append({"type": "message_delta", "delta": delta, "usage": dict(delta_usage)})
        events.append({"type": "message_stop"})
        return events

    def fail(self, error: Mapping[str, Any]) -> list[Event]:
        """`error`: an OpenAI error envelope, or its `error` object."""
        if self._ended:
            return []
        self._ended = True
        return [stream_error(error)]

    def _text(self, piece: str) -> list[Event]:
        events: list[Event] = []
        state = self._open
        if state is None or state.block["type"] != "text":
            events += self._close()
            state = _Block(text_block(""))
            events += self._begin(state)
        state.pieces.append(piece)
        delta = {"type": "text_delta", "text": piece}
        return [*events, {"type": "content_block_delta", "index": state.index, "delta": delta}]

    def _call(self, call: Mapping[str, Any]) -> list[Event]:
        function = call.get("function") or {}
        key = self._call_key(call)
        events: list[Event] = []
        state = self._calls.get(key)
        if state is None:
            events += self._close()
            call_id = str(call.get("id") or new_tool_use_id())
            state = self._calls[key] = _Block(tool_use_block(call_id, "", {}))
            self._open = state
        if function.get("name") and not state.block["name"]:
            state.block["name"] = str(function["name"])
        arguments = function.get("arguments")
        if arguments:
            state.pieces.append(str(arguments))
        if state.index is None and state.block["name"] and state is self._open:
            events += self._begin(state)  # its held arguments go out with its start
        elif arguments and state.index is not None and state is self._open:
            delta = {"type": "input_json_delta", "partial_json": str(arguments)}
            events.append({"type": "content_block_delta", "index": state.index, "delta": delta})
        return events

    def _call_key(self, call: Mapping[str, Any]) -> int:
        open_key = next((k for k, s in self._calls.items() if s is self._open), None)
        open_id = None if open_key is None else self._calls[open_key].block["id"]
        return tool_call_key(call, open_key, open_id, self._calls)

    def _begin(self, state: _Block) -> list[Event]:
        """The block's `content_block_start` (and the stream's one `ping` after the first),
        with a tool call's arguments held so far as its first delta."""
        state.index = len(self._blocks)
        self._blocks.append(state)
        self._message["content"].append(state.block)
        self._open = state
        start = copy.deepcopy(state.block)
        if start["type"] == "tool_use":
            start["input"] = {}
        events: list[Event] = [
            {"type": "content_block_start", "index": state.index, "content_block": start}
        ]
        if not self._pinged:
            self._pinged = True
            events.append({"type": "ping"})
        if start["type"] == "tool_use" and state.pieces:
            delta = {"type": "input_json_delta", "partial_json": "".join(state.pieces)}
            events.append({"type": "content_block_delta", "index": state.index, "delta": delta})
        return events

    def _close(self) -> list[Event]:
        state = self._open
        self._open = None
        if state is None or state.index is None:
            return []
        state.sync()
        return [{"type": "content_block_stop", "index": state.index}]


def sse(event: Mapping[str, Any]) -> bytes:
    """The SSE frame Anthropic sends for one event (named, no `[DONE]`)."""
    return b"event: " + str(event["type"]).encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
