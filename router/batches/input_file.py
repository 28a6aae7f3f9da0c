"""A batch's input file (JSONL), checked as it streams: one request a line,
`{"custom_id", "method": "POST", "url", "body"}`, every line the same `url`, one of the
endpoints a batch may call, `custom_id`s unique, no `stream`, at most `batches.max_lines`
lines. The same check runs at upload (purpose `batch`: a 400 naming the line and field)
and when a batch is created (its `errors.data[]`, each with its `line`, 1-based as
OpenAI's).

While checking, it notes where every chunk of `chunk_lines` lines starts, so the runners
can read one chunk of a large file by its byte range instead of the whole file.

Blank lines are not requests: they are skipped here and by `split_lines` alike, so line
numbers and chunk offsets agree everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from providers.types import Endpoint

# What a batch line may call.
BATCH_ENDPOINTS: dict[str, Endpoint] = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
    "/v1/responses": Endpoint.RESPONSES,  # run by the Responses turn (router/batches/line.py)
}
RESPONSES_URL = "/v1/responses"
MAX_ERRORS = 100  # reported per file; checking stops counting problems past this
# A client's words quoted back (a custom_id, a field's name) and the `model` kept on the
# batch are cut to this many characters: a line may be megabytes, and a batch record (its
# errors, its model) is read on every look of every runner and every listing.
QUOTE_CHARS = 256


@dataclass(frozen=True, slots=True)
class LineProblem:
    line: int | None  # 1-based; None: the file as a whole
    code: str
    message: str
    param: str | None = None

    def public(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(slots=True)
class InputCheck:
    """Feed the file's bytes to `feed`, then `finish`; `problems` says what is wrong."""

    max_lines: int
    max_line_bytes: int
    chunk_lines: int = 16
    endpoint: str | None = None  # the batch's: every line must use it (None: the first's)
    model: str | None = None  # the first line's
    lines: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    chunk_offsets: list[int] = field(default_factory=list)
    # Digests of the custom_ids seen, not the ids: they may be as long as a line, and the
    # set would then hold as much as the file.
    _ids: set[bytes] = field(default_factory=set)
    _pending: bytearray = field(default_factory=bytearray)
    _offset: int = 0  # of the first byte of `_pending` in the file

    async def check(self, chunks: AsyncIterator[bytes]) -> InputCheck:
        async for chunk in chunks:
            self.feed(chunk)
            if len(self.problems) >= MAX_ERRORS:
                break
        else:
            self.finish()
        return self

    def feed(self, chunk: bytes) -> None:
        self._pending += chunk
        start = 0
        while (end := self._pending.find(b"\n", start)) >= 0:
            self._line(self._offset + start, bytes(self._pending[start:end]))
            start = end + 1
        del self._pending[:start]
        self._offset += start
        if len(self._pending) > self.max_line_bytes:
            self._problem("line_too_long", f"a line is longer than {self.max_line_bytes} bytes")
            self._pending.clear()

    def finish(self) -> None:
        if self._pending:
            self._line(self._offset, bytes(self._pending))
            self._offset += len(self._pending)
            self._pending.clear()
        if self.lines == 0 and not self.problems:
            self.problems.append(LineProblem(None, "empty_file", "The file has no requests."))
        self.chunk_offsets.append(self._offset)

    @property
    def ok(self) -> bool:
        return not self.problems

    def _problem(self, code: str, message: str, param: str | None = None) -> None:
        if len(self.problems) < MAX_ERRORS:
            self.problems.append(LineProblem(self.lines + 1, code, message, param))

    def _line(self, offset: int, raw: bytes) -> None:
        if not raw.strip():
            return
        if self.lines >= self.max_lines:
            self._problem("too_many_lines", f"A batch may have at most {self.max_lines} requests.")
            return
        if self.lines % self.chunk_lines == 0:
            self.chunk_offsets.append(offset)
        problem = self._line_problem(raw)
        if problem is not None:
            self._problem(*problem)
        self.lines += 1

    def _line_problem(self, raw: bytes) -> tuple[str, str, str | None] | None:
        try:
            item = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "invalid_json_line", "The line is not valid JSON.", None
        if not isinstance(item, dict):
            return "invalid_json_line", "The line is not a JSON object.", None
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return "missing_required_parameter", "`custom_id` must be a string.", "custom_id"
        seen = hashlib.blake2b(custom_id.encode(), digest_size=16).digest()
        if seen in self._ids:
            quoted = _quote(custom_id)
            return "duplicate_custom_id", f"`custom_id` {quoted} is repeated.", "custom_id"
        self._ids.add(seen)
        if item.get("method") != "POST":
            return "invalid_method", "`method` must be POST.", "method"
        url = item.get("url")
        if url not in BATCH_ENDPOINTS:
            allowed = ", ".join(BATCH_ENDPOINTS)
            return "invalid_url", f"`url` must be one of {allowed}.", "url"
        if self.endpoint is None:
            self.endpoint = url
        elif url != self.endpoint:
            return "mismatched_url", f"`url` must be {self.endpoint}, as every line.", "url"
        body = item.get("body")
        if not isinstance(body, dict):
            return "missing_required_parameter", "`body` must be a JSON object.", "body"
        if self.model is None and isinstance(body.get("model"), str):
            self.model = body["model"][:QUOTE_CHARS]
        if body.get("stream") not in (None, False):
            return "invalid_parameter", "Batch requests cannot stream.", "body.stream"
        extra = set(item) - {"custom_id", "method", "url", "body"}
        if extra:
            name = sorted(extra)[0]
            return "invalid_parameter", f"Unknown field {_quote(name)}.", name[:QUOTE_CHARS]
        return None


def _quote(text: str) -> str:
    """`text` as a message quotes it, cut to `QUOTE_CHARS`."""
    return repr(text[:QUOTE_CHARS]) + ("..." if len(text) > QUOTE_CHARS else "")


def split_lines(data: bytes) -> Iterator[bytes]:
    """The requests in a byte range of the file, as `InputCheck` counted them."""
    for raw in data.split(b"\n"):
        if raw.strip():
            yield raw
