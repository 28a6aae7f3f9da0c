"""An upload (`POST /v1/files`, multipart/form-data) parsed as it arrives: the `file`
part's bytes go straight to the blob store, chunk by chunk, and the small fields
(`purpose`, `expires_after[anchor]`, `expires_after[seconds]`) are collected on the way,
whichever order the client sends them in. Nothing is held whole in memory.

The parsing is `multipart`'s push parser (the library Litestar itself parses forms with);
Litestar's own form handling buffers the whole body, which a 512 MiB file cannot afford.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from litestar import Request
from litestar.types import HTTPReceiveMessage
from multipart import MultipartSegment, ParserError, PushMultipartParser, parse_options_header

from policies.errors import ApiError
from router.body import client_closed

FIELD_LIMIT = 1024  # bytes of a form field other than the file
FORM_BYTES = 64 * 1024  # what a body may hold beyond the file: boundaries, headers, fields
FIELDS = ("purpose", "expires_after[anchor]", "expires_after[seconds]")


@dataclass(slots=True)
class Upload:
    """One upload's parts: `file_chunks()` yields the file's bytes (and reads the rest of
    the form); `fields` and `filename` are complete once it is exhausted."""

    request: Request[Any, Any, Any]
    boundary: str
    max_file_bytes: int  # `storage.max_file_bytes`: the body may be the form's bytes more
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    files: int = 0  # `file` parts seen (exactly one is expected)

    @classmethod
    def of(cls, request: Request[Any, Any, Any], max_file_bytes: int) -> Upload:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_file_bytes + FORM_BYTES:
            raise too_large(max_file_bytes)
        kind, options = parse_options_header(request.headers.get("content-type", ""))
        boundary = options.get("boundary")
        if kind != "multipart/form-data" or not boundary:
            raise ApiError(
                "Uploads must be multipart/form-data with a `file` and a `purpose`.",
                param="file",
            )
        return cls(request, boundary, max_file_bytes)

    async def file_chunks(self) -> AsyncIterator[bytes]:
        parser = PushMultipartParser(self.boundary, max_segment_count=16)
        current: MultipartSegment | None = None
        value = bytearray()
        try:
            async for chunk in self._body():
                for event in parser.parse(chunk):
                    if isinstance(event, MultipartSegment):
                        current, value = event, bytearray()
                        if event.name == "file":
                            self.files += 1
                            self.filename = event.filename or "file"
                    elif event is None:  # the end of a part
                        if current is not None and current.name in FIELDS:
                            self.fields[current.name] = value.decode("utf-8", "replace")
                        current = None
                    elif current is not None and current.name == "file" and self.files == 1:
                        yield bytes(event)
                    elif current is not None and current.name in FIELDS:
                        value += event
                        if len(value) > FIELD_LIMIT:
                            raise ApiError(f"`{current.name}` is too long.", param=current.name)
            parser.close()
        except ParserError as exc:
            raise ApiError(f"The multipart body is malformed: {exc}", param="file") from None

    async def _body(self) -> AsyncIterator[bytes]:
        """The body's chunks from the ASGI messages (a client that goes away: 499). The
        whole body counts, not only the file's part: what the parser drops (parts other
        than the file, a second file, a preamble) would otherwise be read for as long as
        the client sends it, which a body without a Content-Length may do for ever."""
        more, received = True, 0
        while more:
            message = cast("HTTPReceiveMessage", await self.request.receive())
            if message["type"] == "http.disconnect":
                raise client_closed()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_file_bytes + FORM_BYTES:
                raise too_large(self.max_file_bytes)
            if chunk:
                yield chunk
            more = message.get("more_body", False)
        yield b""  # the end of input, for the parser


def too_large(limit: int) -> ApiError:
    return ApiError(
        f"The file is larger than this server accepts ({limit} bytes).",
        status=413,
        param="file",
        code="file_too_large",
        headers={"connection": "close"},
    )
