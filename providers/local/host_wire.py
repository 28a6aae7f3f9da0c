"""The sampler host's private channel: frames, and the provider calls written as JSON.

With several worker processes, the in-process samplers are loaded once, in a sibling
process (`providers.local.host`), and each worker reaches them through
`providers.local.remote.RemoteSampler` over a Unix socket in a private (0700) directory.
Hand-written rather than an RPC library's: a call is one connection, one request frame,
then answer frames until the call ends; closing the connection cancels the call, which is
all the cancellation a client's disconnect needs.

A frame is a 4-byte big-endian length and an orjson object. `ProviderRequest`, the whole
answer, each chunk and `UpstreamError` are JSON already (bodies travel as JSON objects
everywhere in Turnout), so each field is written as it is and read back as it was.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import asdict
from typing import Any

import orjson

from providers.errors import Failure, UpstreamError
from providers.timeouts import TimeoutOverrides
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

_LENGTH = struct.Struct(">I")
# A request frame holds a whole body (a prompt of megabytes at most, as the router bounds
# it); far above any real one, below what would let a bad peer make us allocate gigabytes.
MAX_FRAME_BYTES = 256 * 1024 * 1024


class ChannelClosed(Exception):
    """The peer closed the connection (or sent a frame that cannot be one of ours)."""


async def read_frame(reader: asyncio.StreamReader) -> JSONObject:
    try:
        head = await reader.readexactly(_LENGTH.size)
        (size,) = _LENGTH.unpack(head)
        if size > MAX_FRAME_BYTES:
            raise ChannelClosed(f"a frame of {size} bytes")
        frame = orjson.loads(await reader.readexactly(size))
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise ChannelClosed(str(exc) or "closed") from None
    except orjson.JSONDecodeError as exc:
        raise ChannelClosed(f"not a frame: {exc}") from None
    if not isinstance(frame, dict):
        raise ChannelClosed("not a frame: not an object")
    return frame


def encode_frame(frame: JSONObject) -> bytes:
    data = orjson.dumps(frame)
    return _LENGTH.pack(len(data)) + data


async def write_frame(writer: asyncio.StreamWriter, frame: JSONObject) -> None:
    writer.write(encode_frame(frame))
    await writer.drain()


def request_to_json(request: ProviderRequest) -> JSONObject:
    return {
        "endpoint": request.endpoint.value,
        "body": request.body,
        "timeouts": None if request.timeouts is None else asdict(request.timeouts),
        "background": request.background,
        "headers": dict(request.headers),
    }


def request_from_json(data: JSONObject) -> ProviderRequest:
    timeouts = data.get("timeouts")
    return ProviderRequest(
        Endpoint(data["endpoint"]),
        data["body"],
        timeouts=None if timeouts is None else TimeoutOverrides(**timeouts),
        background=bool(data.get("background")),
        headers=data.get("headers") or {},
    )


def response_to_json(response: ProviderResponse) -> JSONObject:
    return {"body": response.body, "headers": dict(response.headers)}


def response_from_json(data: JSONObject) -> ProviderResponse:
    return ProviderResponse(body=data["body"], headers=data.get("headers") or {})


_ERROR_FIELDS = ("status", "type", "code", "param", "retry_after", "detail")


def error_to_json(error: UpstreamError) -> JSONObject:
    fields: dict[str, Any] = {name: getattr(error, name) for name in _ERROR_FIELDS}
    return {"message": error.message, "failure": error.failure.value, **fields}


def error_from_json(data: JSONObject) -> UpstreamError:
    return UpstreamError(
        str(data["message"]),
        failure=Failure(data["failure"]),
        status=int(data["status"]),
        type=str(data["type"]),
        code=data.get("code"),
        param=data.get("param"),
        retry_after=data.get("retry_after"),
        detail=data.get("detail"),
    )
