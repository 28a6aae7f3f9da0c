"""The one small interface that files and batches are kept behind.

Two halves, each with implementations side by side (as `policies/state/` has for limits):

- `BlobStore`: a file's bytes. `LocalBlobs` (files under `storage.path`) for one replica,
  `S3Blobs` (an S3-compatible bucket, through `obstore`) for several. Bytes always move as
  streams of chunks: an upload is written as it arrives and a download read as it is sent,
  so no file is ever held whole in memory.
- `MetaStore`: the records (files, batches, stored responses) and a batch's line state.
  `SqliteMeta` (WAL, one connection, so one writer) for one replica, `RedisMeta` for
  several, which also coordinates them: a batch is cut into chunks of consecutive lines,
  each *claimed* by one replica under a lease that the replica renews while it works; a
  replica that dies stops renewing, and its chunk goes back to the others once the lease
  runs out.

A line's result is committed as it finishes, first write wins (keyed by the batch and the
line; the custom_id is unique in a batch too), so a chunk redone after a crash never writes
a finished line twice: the runner skips lines already recorded, and a late duplicate is
dropped by the store.

Time is passed in (`now`, wall-clock seconds) rather than read by the store, as in
`policies/state/`. A store that cannot be reached raises `StorageUnavailable`, never its
client library's errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from policies.storage.response_store import ResponseStore


class StorageUnavailable(Exception):
    """The store could not be reached or did not answer in time: an outage, not a bug."""


class TooLarge(Exception):
    """An upload passed its size limit; nothing of it is kept."""


class FileRecord(BaseModel):
    """One stored file: OpenAI's File object plus who owns it and where its bytes are."""

    model_config = ConfigDict(extra="forbid")

    id: str  # "file-..."
    owner: str  # "team:<name>", "key:<key id>" or "anonymous": other owners get a 404
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None
    status: Literal["uploaded", "processed", "error"] = "processed"

    def public(self) -> dict[str, Any]:
        """The File object a client sees. OpenAI's spec types `expires_at` as an integer,
        never null: a file that does not expire has none."""
        expiry = {} if self.expires_at is None else {"expires_at": self.expires_at}
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            **expiry,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
        }


BatchStatus = Literal[
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "expired",
    "cancelling",
    "cancelled",
]
# A batch in one of these still needs a runner's attention.
ACTIVE: frozenset[str] = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


class BatchRecord(BaseModel):
    """One batch: OpenAI's Batch object plus what the runners need to execute it."""

    model_config = ConfigDict(extra="forbid")

    id: str  # "batch_..."
    owner: str  # as FileRecord.owner
    key_id: str  # the creator's key (its digest's prefix): each line runs as that key
    endpoint: str  # "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
    input_file_id: str
    completion_window: str = "24h"
    status: BatchStatus = "validating"
    created_at: int
    expires_at: int
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None  # validation errors: {code, message, param, line}
    metadata: dict[str, str] | None = None
    model: str | None = None  # the first line's `model`, once validated
    usage: dict[str, Any] | None = None  # the answered lines' tokens, once finalized
    output_expires_after: int | None = None  # seconds; None: `batches.output_expires_after`
    total: int = 0  # lines, once validated
    completed: int = 0  # lines answered, as last counted (the store's counts are the truth)
    failed: int = 0
    # Where each chunk of `chunk_lines` lines starts in the input file (byte offsets), with
    # the file's length last: chunk k is bytes [offsets[k], offsets[k + 1]).
    chunk_offsets: list[int] = Field(default_factory=list)
    chunk_lines: int = 16

    @property
    def chunks(self) -> int:
        return max(0, len(self.chunk_offsets) - 1)

    def public(self) -> dict[str, Any]:
        """The Batch object a client sees. OpenAI's spec types its ids, timestamps, `errors`,
        `model` and `usage` as strings, integers and objects, never null: one not set yet is
        left out (`metadata` alone may be null)."""
        batch = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "errors": None if not self.errors else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "model": self.model,
            "usage": self.usage,
        }
        return {
            name: value for name, value in batch.items() if value is not None or name == "metadata"
        }


@dataclass(frozen=True, slots=True)
class LineResult:
    """One finished line: `ok` (its answer goes to the output file) or not (the error
    file); `data` is the whole output line, JSON without the newline."""

    line: int  # 0-based, in input order
    custom_id: str
    ok: bool
    data: bytes


class BlobStore(Protocol):
    """A file's bytes, by key (the file's id)."""

    async def put(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        """Write the bytes `chunks` yields under `key`, as they come, and return how many
        there were. Past `max_bytes`: raise `TooLarge`, keeping nothing. A key written
        again is replaced whole (never a mix of two writes)."""
        ...

    def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes [start, end) (end None: to the end) in chunks. `FileNotFoundError`
        when there is no such key (raised on the first iteration)."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; nothing when it is not there."""
        ...

    async def ping(self) -> None:
        """Raise `StorageUnavailable` when the store cannot be used (start-up checks it)."""
        ...

    async def aclose(self) -> None: ...


class MetaStore(ResponseStore, Protocol):
    """Records of files and batches, batches' line state, and stored responses (their
    methods are `ResponseStore`'s, policies/storage/response_store.py)."""

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...

    # --- files -------------------------------------------------------------------------
    async def put_file(self, record: FileRecord) -> None:
        """Create or replace the record of file `record.id`."""
        ...

    async def get_file(self, file_id: str) -> FileRecord | None: ...

    async def list_files(
        self,
        owner: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
    ) -> list[FileRecord]:
        """`owner`'s files by `created_at` (then id) in `order`, after the file `after`
        (a cursor: the last id of the previous page), at most `limit`."""
        ...

    async def delete_file(self, file_id: str) -> bool:
        """Remove the record; False when there was none."""
        ...

    async def expired_files(self, now: float, limit: int) -> list[FileRecord]:
        """Files whose `expires_at` has passed (for the sweeper), at most `limit`."""
        ...

    # --- batches -----------------------------------------------------------------------
    async def put_batch(self, record: BatchRecord) -> None:
        """Create the record of a new batch."""
        ...

    async def get_batch(self, batch_id: str) -> BatchRecord | None: ...

    async def list_batches(self, owner: str, *, after: str | None, limit: int) -> list[BatchRecord]:
        """`owner`'s batches, newest first, after the batch `after`, at most `limit`."""
        ...

    async def update_batch(self, record: BatchRecord, expect: Sequence[str]) -> bool:
        """Replace the batch's record with `record` only if its stored status is one of
        `expect` (compare and set): False, with nothing written, when it is not."""
        ...

    async def active_batches(self) -> list[str]:
        """Ids of the batches whose status is in `ACTIVE`, oldest first."""
        ...

    # --- leases: which runner does what --------------------------------------------------
    async def claim_chunk(
        self, batch_id: str, chunks: int, holder: str, now: float, lease_s: float
    ) -> int | None:
        """Claim a chunk of the batch (0 <= k < chunks) that is neither finished nor held
        under a live lease: first any whose lease ran out, else the next never claimed.
        None when there is none to claim now, or the batch has ended (its record's status
        is not in `ACTIVE`: its chunks were dropped with its lines)."""
        ...

    async def renew_chunk(
        self, batch_id: str, chunk: int, holder: str, now: float, lease_s: float
    ) -> bool:
        """Extend `holder`'s lease; False when it no longer holds the chunk."""
        ...

    async def finish_chunk(self, batch_id: str, chunk: int, holder: str) -> None:
        """Mark the chunk finished (every line recorded); it is never claimed again."""
        ...

    async def chunks_finished(self, batch_id: str) -> int:
        """How many chunks of the batch are finished."""
        ...

    async def acquire(self, name: str, holder: str, now: float, lease_s: float) -> bool:
        """A named lease (e.g. validating or finalizing one batch): taken when free, when
        its lease ran out, or when `holder` already holds it (then renewed)."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give the named lease back if `holder` holds it."""
        ...

    # --- line results --------------------------------------------------------------------
    async def record_line(self, batch_id: str, result: LineResult) -> bool:
        """Commit a finished line; first write wins: False (and nothing written) when the
        line, or its custom_id, was recorded already, or the batch has ended (a late line
        would outlive `drop_batch_lines`). Counts are updated in the same step."""
        ...

    async def recorded_lines(self, batch_id: str, start: int, stop: int) -> set[int]:
        """Which of lines [start, stop) are recorded."""
        ...

    async def line_counts(self, batch_id: str) -> tuple[int, int]:
        """(completed, failed) lines recorded so far."""
        ...

    async def line_results(self, batch_id: str, start: int, stop: int) -> list[LineResult]:
        """The recorded lines among [start, stop), in line order."""
        ...

    async def drop_batch_lines(self, batch_id: str) -> None:
        """Forget the batch's line results, leases and chunks (once its files are written)."""
        ...
