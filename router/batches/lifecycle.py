"""A batch's steps other than running its lines: checking its input (`validating` →
`in_progress` or `failed`), writing its output and error files (→ `completed`,
`cancelled` or `expired`), and marking what an expired batch never ran.

Each step runs under a named lease (policies/storage/base.py), so with several replicas
one does it; a replica that dies midway loses the lease and another does the step again.
Every step can be done again without harm: the output files have ids derived from the
batch's, and a status only moves by compare-and-set.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson
import structlog

from policies.storage.base import BatchRecord, FileRecord
from policies.storage.factory import Storage
from policies.storage.settings import BatchSettings
from router.batches.input_file import InputCheck, split_lines
from router.batches.line import expired_line
from router.batches.usage import BatchUsage

log = structlog.get_logger("turnout.batches")
READ_LINES = 512  # line results read from the store at a time while writing the files
UNLIMITED = 1 << 62


@dataclass(frozen=True, slots=True)
class Lifecycle:
    storage: Storage
    holder: str
    settings: BatchSettings
    max_line_bytes: int
    on_status: Callable[[str], None]  # metrics: a batch entered this status

    async def validate(self, batch: BatchRecord) -> None:
        """Check the input file against the batch; then run it, or fail it with each
        problem's line."""
        source = await self.storage.meta.get_file(batch.input_file_id)
        check = InputCheck(
            self.settings.max_lines,
            self.max_line_bytes,
            batch.chunk_lines,
            endpoint=batch.endpoint,
        )
        try:
            if source is None:
                raise FileNotFoundError(batch.input_file_id)
            await check.check(self.storage.blobs.get(source.id))
        except FileNotFoundError:
            problem = missing_input(batch)
            await self._move(
                batch, ["validating"], status="failed", failed_at=_now(), errors=[problem]
            )
            return
        if not check.ok:
            errors = [p.public() for p in check.problems]
            await self._move(
                batch, ["validating"], status="failed", failed_at=_now(), errors=errors
            )
            return
        await self._move(
            batch,
            ["validating"],
            status="in_progress",
            in_progress_at=_now(),
            total=check.lines,
            chunk_offsets=check.chunk_offsets,
            model=check.model,
        )

    async def _fail(self, batch: BatchRecord, errors: list[dict[str, object]]) -> None:
        await self._move(batch, ["validating"], status="failed", failed_at=_now(), errors=errors)

    async def expire(self, batch: BatchRecord) -> None:
        """The completion window ended: every line not answered is recorded as expired
        (first write wins, so a line that finishes meanwhile keeps its answer)."""
        meta = self.storage.meta
        for chunk in range(batch.chunks):
            start = chunk * batch.chunk_lines
            stop = min(start + batch.chunk_lines, batch.total)
            done = await meta.recorded_lines(batch.id, start, stop)
            if len(done) == stop - start:
                continue
            try:
                raw = await read_chunk(self.storage, batch, chunk)
            except FileNotFoundError:  # its lines' custom_ids are gone with it: not listed
                log.warning("batch_input_missing", batch=batch.id)
                break
            for line, item in enumerate(split_lines(raw), start):
                if line not in done:
                    custom_id = _custom_id(item)
                    await meta.record_line(batch.id, expired_line(line, custom_id, batch.id))
        await self.finalize(batch, "expired", ["in_progress"])

    async def finalize(self, batch: BatchRecord, final: str, expect: list[str]) -> None:
        """Write the output and error files from the recorded lines, then the final status;
        the line state is dropped last, once the files are safely referenced."""
        completed, failed = await self.storage.meta.line_counts(batch.id)
        usage = BatchUsage()
        output = await self._write(batch, True, "output", usage) if completed else None
        errors = await self._write(batch, False, "error") if failed else None
        stamp = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}
        moved = await self._move(
            batch,
            expect,
            status=final,
            completed=completed,
            failed=failed,
            output_file_id=output,
            error_file_id=errors,
            usage=usage.public(),
            # Read only while lines run; kept, they would be read with the record for ever
            # (a 50,000-line batch's are some 30 KB, in every look and every listing).
            chunk_offsets=[],
            **{stamp[final]: _now()},
        )
        if moved:
            await self.storage.meta.drop_batch_lines(batch.id)
            log.info(
                "batch_finished", batch=batch.id, status=final, completed=completed, failed=failed
            )

    async def _write(
        self, batch: BatchRecord, ok: bool, kind: str, usage: BatchUsage | None = None
    ) -> str:
        file_id = _derived_id(batch.id, kind)
        lines = self._lines(batch, ok, usage)
        size = await self.storage.blobs.put(file_id, lines, UNLIMITED)
        now = _now()
        await self.storage.meta.put_file(
            FileRecord(
                id=file_id,
                owner=batch.owner,
                bytes=size,
                created_at=now,
                filename=f"{batch.id}_{kind}.jsonl",
                purpose="batch_output",
                expires_at=now + (batch.output_expires_after or self.settings.output_expires_after),
            )
        )
        return file_id

    async def _lines(
        self, batch: BatchRecord, ok: bool, usage: BatchUsage | None
    ) -> AsyncIterator[bytes]:
        for start in range(0, batch.total, READ_LINES):
            stop = min(start + READ_LINES, batch.total)
            results = [
                r for r in await self.storage.meta.line_results(batch.id, start, stop) if r.ok is ok
            ]
            if usage is not None:
                for result in results:
                    usage.add(result.data)
            block = b"".join(r.data + b"\n" for r in results)
            if block:
                yield block

    async def _move(self, batch: BatchRecord, expect: list[str], **changes: object) -> bool:
        """Compare and set: False when another replica moved the batch first."""
        moved = batch.model_copy(update=changes)
        done = await self.storage.meta.update_batch(moved, expect)
        if done:
            self.on_status(moved.status)
            log.info("batch_status", batch=batch.id, status=moved.status)
        return done


async def read_chunk(storage: Storage, batch: BatchRecord, chunk: int) -> bytes:
    """Chunk `chunk` of the batch's input file: its lines' bytes only."""
    offsets = batch.chunk_offsets
    parts = [
        part
        async for part in storage.blobs.get(batch.input_file_id, offsets[chunk], offsets[chunk + 1])
    ]
    return b"".join(parts)


def missing_input(batch: BatchRecord) -> dict[str, object]:
    """The batch's `errors` entry for an input file that is gone."""
    return {
        "code": "input_file_missing",
        "message": f"The input file {batch.input_file_id} no longer exists.",
        "param": "input_file_id",
        "line": None,
    }


def _custom_id(raw: bytes) -> str:
    value = orjson.loads(raw).get("custom_id")
    return value if isinstance(value, str) else ""


def _derived_id(batch_id: str, kind: str) -> str:
    """The same file id for the same batch's output whoever writes it (a redo replaces)."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


def _now() -> int:
    return int(time.time())
