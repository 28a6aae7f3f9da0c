"""SSE framing of a relayed stream: every chunk as it comes, then `[DONE]`; a failure
after the first chunk becomes an in-band error event, never a silent truncation.

Turnout asks every upstream stream for its usage (limits and budgets settle on it), so
the usage chunk and the `usage` keys are stripped here from a client that did not ask for
`stream_options.include_usage`: such a client must see no empty-choices chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
import structlog

from policies.rules import CHARS_PER_TOKEN, estimate_prompt_tokens
from providers.errors import UpstreamError
from providers.types import JSONObject
from router.errors import envelope, stream_error_payload

DONE_FRAME = b"data: [DONE]\n\n"

# (how the stream ended, the usage it reported or None, characters of text relayed)
StreamEnd = Callable[[str, Any, int], None]

log = structlog.get_logger("turnout.router")


def frame(payload: JSONObject) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_frames(
    chunks: AsyncIterator[JSONObject],
    on_end: StreamEnd,
    include_usage: bool = True,
    costed: Callable[[Any], Any] | None = None,
) -> AsyncIterator[bytes]:
    """`on_end(outcome, usage, streamed_chars)`: how the stream ended (ok, error,
    client_closed), the usage the stream reported (None if none came), and how many
    characters of generated text were relayed, to estimate with when no usage came.
    `include_usage`: whether the client asked for the usage chunk (false: it is stripped,
    and so are the `usage` keys of the other chunks). `costed(chunk)`: the usage chunk a
    client that asked for usage gets, with the request's cost (router/cost_report.py)."""
    outcome = "client_closed"  # until the stream ends any other way
    usage: Any = None
    streamed = 0
    try:
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = chunk["usage"]
            streamed += generated_chars(chunk)
            if include_usage or "usage" not in chunk:
                if costed is not None and chunk.get("usage"):
                    chunk = costed(chunk)
                yield frame(chunk)
            elif chunk.get("choices"):
                yield frame({k: v for k, v in chunk.items() if k != "usage"})
        outcome = "ok"
    except UpstreamError as exc:
        outcome = "error"
        yield frame(stream_error_payload(exc))
    except Exception as exc:  # a bug mid-stream: the client still gets an error and [DONE]
        outcome = "error"
        log.error("stream_failed", exc_info=exc)
        message = "The server had an error while processing your request."
        yield frame(envelope(message, "server_error", None, None))
    finally:
        on_end(outcome, usage, streamed)
    yield DONE_FRAME


def generated_chars(chunk: Mapping[str, Any]) -> int:
    """Characters of generated text a chunk carries: completions text, chat content and
    refusal, tool-call names and arguments."""
    choices = chunk.get("choices")
    total = 0
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        delta = choice.get("delta")
        pieces: list[Any] = [choice.get("text")]
        if isinstance(delta, Mapping):
            pieces += [delta.get("content"), delta.get("refusal")]
            for call in delta.get("tool_calls") or ():
                function = call.get("function") if isinstance(call, Mapping) else None
                if isinstance(function, Mapping):
                    pieces += [function.get("name"), function.get("arguments")]
        total += sum(len(p) for p in pieces if isinstance(p, str))
    return total


def estimated_usage(
    body: Mapping[str, Any], streamed_chars: int, prompt_reads: int = 1
) -> JSONObject:
    """A stream's usage when none came: the prompt estimated as the limits estimate it
    (once per upstream call that read it), the completion from the text relayed. For
    settling limits, never for billing."""
    prompt = estimate_prompt_tokens(body) * prompt_reads
    completion = (streamed_chars + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def wants_usage(body: Mapping[str, Any]) -> bool:
    """Whether the client asked for the usage chunk (`stream_options.include_usage`)."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True
