"""SSE framing of a relayed stream: every chunk as it comes, then `[DONE]`; a failure
after the first chunk becomes an in-band error event, never a silent truncation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from providers.errors import UpstreamError
from providers.types import JSONObject
from router.errors import stream_error_payload

DONE_FRAME = b"data: [DONE]\n\n"


def frame(payload: JSONObject) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def sse_frames(
    chunks: AsyncIterator[JSONObject], on_end: Callable[[str, Any], None]
) -> AsyncIterator[bytes]:
    """`on_end` gets how the stream ended (ok, error, client_disconnected) and the usage
    the stream reported, if any."""
    outcome = "client_disconnected"
    usage: Any = None
    try:
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = chunk["usage"]
            yield frame(chunk)
        outcome = "ok"
    except UpstreamError as exc:
        outcome = "error"
        yield frame(stream_error_payload(exc))
    finally:
        on_end(outcome, usage)
    yield DONE_FRAME
