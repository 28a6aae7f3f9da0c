"""Scripted behaviours for :class:`tests.fakes.openai_upstream.FakeOpenAIUpstream`.

Each behaviour is an immutable value; the fake consumes one per request (FIFO).
Stream-only misbehaviours (``StallMidStream``, ``CutStream``, ``MalformedEvent``,
``MidStreamError``) also do something analogous on non-streaming requests; see
their docstrings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, Final, TypeAlias

__all__ = [
    "MID_STREAM_ERROR",
    "Behavior",
    "CutStream",
    "EchoHeaders",
    "EchoInChoices",
    "EchoVariants",
    "MalformedEvent",
    "MidStreamError",
    "Ok",
    "Oversized",
    "Reset",
    "Silence",
    "StallMidStream",
    "Status",
    "ToolCall",
    "content_policy_violation",
    "context_length_exceeded",
    "rate_limited",
]


def _no_headers() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class Ok:
    """A normal answer (JSON, or SSE when the request has ``stream: true``).

    ``text`` replaces the default ``"echo: <input>"`` answer; ``delay`` sleeps before
    the response head; ``chunk_delay`` sleeps between SSE events; ``crlf`` uses CRLF
    line endings; ``comments`` puts ``: keep-alive`` comments between events;
    ``split`` writes every event in two TCP writes split mid ``data:`` line;
    ``no_done`` ends the (complete, well-framed) stream without ``data: [DONE]``;
    ``end_after`` ends it cleanly after that many events (no ``[DONE]``, nothing more);
    ``first_delay`` (streams) sends the head at once and the first event that much later,
    a slow first token (``delay`` holds back the head as well);
    ``prefill`` answers only the rest of ``text`` when the request continues a beginning of
    it, as vLLM continues a prefill: chat, a final assistant message with
    ``continue_final_message`` (and ``add_generation_prompt: false``, else a 400 as vLLM
    gives); completions, a prompt that ends with a beginning of ``text``. A prefill that is
    not a beginning of ``text`` is a 400.
    """

    text: str | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    crlf: bool = False
    comments: bool = False
    split: bool = False
    no_done: bool = False
    end_after: int | None = None
    first_delay: float = 0.0
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    prefill: bool = False


@dataclass(frozen=True)
class ToolCall:
    """A chat answer that calls the function tool ``name`` with ``arguments`` (a JSON text),
    ``finish_reason: "tool_calls"``, as OpenAI answers; chat completions only (elsewhere a 400).

    ``call_id`` is the call's ``id`` (default: a fresh ``call_...``); ``text`` is assistant
    content said before the call (default: none, ``content: null``). Streamed as OpenAI
    streams a call: the role chunk, the text's pieces, a ``tool_calls[0]`` delta with the id,
    type, name and empty arguments, the arguments in several fragments, the finish chunk,
    the usage chunk under ``stream_options.include_usage``, ``[DONE]``.
    """

    name: str
    arguments: str
    call_id: str | None = None
    text: str | None = None


_DEFAULT_TYPE: Final = MappingProxyType(
    {401: "invalid_request_error", 403: "permission_error", 429: "requests"}
)
_DEFAULT_CODE: Final = MappingProxyType({401: "invalid_api_key", 429: "rate_limit_exceeded"})
_DEFAULT_MESSAGE: Final = MappingProxyType(
    {
        401: "Incorrect API key provided.",
        429: "Rate limit reached for requests.",
        500: "The server had an error while processing your request. Sorry about that!",
        503: "The engine is currently overloaded, please try again later.",
    }
)


@dataclass(frozen=True)
class Status:
    """Reply with HTTP ``code`` and an OpenAI error envelope (or ``body`` verbatim).

    Defaults derive from the status: 429 → type ``requests`` / code
    ``rate_limit_exceeded``; 5xx → ``server_error``; other 4xx →
    ``invalid_request_error``. ``headers`` are added to the response.
    """

    code: int
    type: str | None = None
    code_str: str | None = None
    message: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    body: bytes | None = None

    def envelope(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` object this status sends (ignores ``body``)."""
        if self.type is not None:
            etype = self.type
        else:
            etype = _DEFAULT_TYPE.get(
                self.code, "server_error" if self.code >= 500 else "invalid_request_error"
            )
        try:
            phrase = HTTPStatus(self.code).phrase
        except ValueError:
            phrase = f"HTTP {self.code}"
        return {
            "error": {
                "message": self.message
                if self.message is not None
                else _DEFAULT_MESSAGE.get(self.code, phrase),
                "type": etype,
                "param": self.param,
                "code": self.code_str
                if self.code_str is not None
                else _DEFAULT_CODE.get(self.code),
            }
        }

    def payload(self) -> bytes:
        """The exact response body bytes."""
        if self.body is not None:
            return self.body
        return json.dumps(self.envelope(), separators=(",", ":")).encode()


def context_length_exceeded() -> Status:
    return Status(
        400,
        type="invalid_request_error",
        code_str="context_length_exceeded",
        param="messages",
        message=(
            "This model's maximum context length is 4096 tokens. "
            "However, your messages resulted in 5000 tokens."
        ),
    )


def content_policy_violation() -> Status:
    return Status(
        400,
        type="invalid_request_error",
        code_str="content_policy_violation",
        message="Your request was rejected as a result of our safety system.",
    )


def rate_limited(retry_after: str | None = None, retry_after_ms: str | None = None) -> Status:
    """429 ``rate_limit_exceeded``, optionally with ``retry-after``/``retry-after-ms``."""
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    if retry_after_ms is not None:
        headers["retry-after-ms"] = retry_after_ms
    return Status(429, headers=headers)


@dataclass(frozen=True)
class Reset:
    """Read the request, then abort the TCP connection with RST; no response at all."""


@dataclass(frozen=True)
class Silence:
    """Read the request and say nothing for ``seconds`` (then close; stop() cancels it)."""

    seconds: float = 3600.0


@dataclass(frozen=True)
class StallMidStream:
    """Send ``after_events`` SSE events, go silent for ``seconds``, then finish normally.

    ``text`` replaces the default answer.

    Non-streaming: send the head and the first half of the JSON body, stall, send the rest.
    """

    after_events: int = 2
    seconds: float = 3600.0
    text: str | None = None


@dataclass(frozen=True)
class CutStream:
    """Send ``after_events`` SSE events, then RST the connection (no chunk terminator).

    ``pause`` waits that long after the events are flushed before the RST, so the client
    surely reads them first (a reader that sees data and RST together may drop the data).
    ``text`` replaces the default answer; ``partial`` also sends the first half of the next
    event's bytes (cut inside a character when the text there is multibyte) before the RST.
    Non-streaming: send the head (full Content-Length) and half the body, then RST.
    """

    after_events: int = 2
    pause: float = 0.0
    text: str | None = None
    partial: bool = False


@dataclass(frozen=True)
class MalformedEvent:
    """After ``after_events`` events insert ``data: {this is not json``, then go on to [DONE].

    Non-streaming: a 200 whose body is ``{this is not json``. ``text`` replaces the default
    answer.
    """

    after_events: int = 1
    text: str | None = None


@dataclass(frozen=True)
class MidStreamError:
    """After ``after_events`` events send an ``{"error": ...}`` event and ``[DONE]``.

    Non-streaming: a 200 whose body is that error envelope. ``message`` replaces the
    envelope's (default: the one of :data:`MID_STREAM_ERROR`).
    """

    after_events: int = 1
    message: str | None = None

    def payload(self) -> str:
        if self.message is None:
            return MID_STREAM_ERROR
        error = {"message": self.message, "type": "server_error", "param": None, "code": None}
        return json.dumps({"error": error}, separators=(",", ":"))


@dataclass(frozen=True)
class Oversized:
    """A broken or hostile upstream's answer too large to hold.

    Streaming: ``after_events`` events, then a ``data:`` line of ``size`` bytes that never
    ends (no newline), then the end of the body. Non-streaming: a 200 whose answer is
    ``text`` (default: empty) and ``size`` more bytes. (An error body that large:
    ``Status(500, message="x" * size)``.)
    """

    size: int = 1 << 20
    after_events: int = 1
    text: str | None = None


@dataclass(frozen=True)
class EchoHeaders:
    """A careless upstream whose error text echoes what it received.

    ``code`` with an OpenAI envelope (type/code/param as :class:`Status` derives them, or
    given) whose message is ``Incorrect API key provided: <authorization>`` followed by
    the upstream's own address and every request header; ``text``: a ``text/plain`` body
    dumping the headers instead. ``after_events`` (streams only): send that many events
    first, then the same message as an in-band ``{"error": ...}`` event.
    """

    code: int = 401
    text: bool = False
    after_events: int | None = None
    type: str | None = None
    code_str: str | None = None
    param: str | None = None

    def message(self, headers: Mapping[str, str], address: str) -> str:
        dump = "\n".join(f"{name}: {value}" for name, value in headers.items())
        key = headers.get("authorization") or headers.get("x-api-key") or "none"
        return f"Incorrect API key provided: {key}. Served by {address}; request headers:\n{dump}"

    def reply(self, headers: Mapping[str, str], address: str) -> Status:
        message = self.message(headers, address)
        if self.text:
            dump = f"Internal Server Error at http://{address}/v1\n{message}\n".encode()
            return Status(self.code, body=dump, headers={"content-type": "text/plain"})
        return Status(
            self.code, type=self.type, code_str=self.code_str, message=message, param=self.param
        )


def _bare(headers: Mapping[str, str]) -> str:
    """The key the request carried, without its scheme."""
    sent = headers.get("authorization") or headers.get("x-api-key") or "none"
    return sent.split(" ", 1)[1] if sent.lower().startswith("bearer ") else sent


@dataclass(frozen=True)
class EchoVariants:
    """A careless upstream that echoes the key it was sent (and the value of header
    ``header``) in the spellings its own code happens to use: lower- and upper-case,
    base64 (alone and as ``Basic user:key`` and ``"Bearer " + key`` would encode it),
    lower-case percent escapes, HTML entities, a partial mask in OpenAI's style; and
    puts the key into the error's ``type``, ``code`` and ``param`` as well."""

    code: int = 400
    header: str = "x-org"

    def reply(self, headers: Mapping[str, str]) -> Status:
        key, org = _bare(headers), headers.get(self.header, "none")
        punct = "".join(c if c.isalnum() else f"%{ord(c):02x}" for c in key)
        entity = "".join(c if c.isalnum() else f"&#{ord(c)};" for c in key)

        def b64(raw: str) -> str:
            return base64.b64encode(raw.encode()).decode()

        message = (
            f"lower={key.lower()} upper={key.upper()} b64={b64(key)} basic={b64('u:' + key)}"
            f" bearer={b64('Bearer ' + key)} url={punct} html={entity}"
            f" partial={key[:6]}****{key[-4:]} org-lower={org.lower()} org-b64={b64(org)}"
        )
        return Status(
            self.code,
            type=f"type_{key}",
            code_str=f"code-{org}",
            message=message,
            param=f"p {key.lower()}",
        )


@dataclass(frozen=True)
class EchoInChoices:
    """A 200 whose body breaks OpenAI's schema: ``choices`` is a string echoing the
    ``Authorization`` header (a proxy's debug page gone wrong)."""

    def reply(self, headers: Mapping[str, str]) -> Status:
        sent = headers.get("authorization", "none")
        return Status(200, body=json.dumps({"id": "x", "choices": sent}).encode())


#: The exact ``data:`` payload sent by :class:`MidStreamError`.
MID_STREAM_ERROR: Final = (
    '{"error":{"message":"upstream broke","type":"server_error","param":null,"code":null}}'
)

Behavior: TypeAlias = (
    Ok
    | Status
    | Reset
    | Silence
    | StallMidStream
    | ToolCall
    | CutStream
    | MalformedEvent
    | MidStreamError
    | Oversized
    | EchoHeaders
    | EchoVariants
    | EchoInChoices
)
