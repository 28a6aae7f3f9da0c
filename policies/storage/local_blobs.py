"""`LocalBlobs`: files' bytes on local disk, for a single replica.

Each blob is one file, `<directory>/files/<key>`. An upload is written to a temporary file
beside it as it arrives, flushed to disk (`fsync`) and then renamed over the key in one
step (`os.replace`), so a reader sees the old bytes or the new ones, never a mix or a torn
write, and a finished upload (e.g. a batch's output file) survives a crash. A temporary
file starts with "." (which no key can: `blob_keys`), so it is never mistaken for a blob.

Hand-written on `asyncio.to_thread` rather than a file library: it is four system calls
(open, write, fsync, rename), and the event loop only has to be kept free of them. Writes
are gathered into batches of `WRITE_BATCH` bytes so a stream of small chunks does not cost
a thread hop each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from policies.storage.base import StorageUnavailable, TooLarge
from policies.storage.blob_keys import checked_key, checked_range

READ_CHUNK = 256 * 1024
WRITE_BATCH = 1024 * 1024


class LocalBlobs:
    """The `BlobStore` that keeps each blob as a file under `directory/files/`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._files = self.directory / "files"

    def _path(self, key: str) -> Path:
        return self._files / checked_key(key)

    async def put(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
        target = self._path(key)
        file, temp = await asyncio.to_thread(_open_temp, self._files, key)
        try:
            written = await _write_all(file, chunks, max_bytes)
        except BaseException:
            # Synchronous on purpose: two quick system calls, and they must run even when
            # the task is being cancelled (an await here could be cancelled again).
            _discard(file, temp)
            raise
        # From here the thread owns the file: a cancellation does not stop it (the blob
        # then appears whole all the same), and a failure cleans up in the thread.
        await asyncio.to_thread(_commit, file, temp, target)
        return written

    async def get(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        checked_range(start, end)
        path = self._path(key)
        file = await asyncio.to_thread(open, path, "rb", buffering=0)
        try:
            offset = start
            while end is None or offset < end:
                size = READ_CHUNK if end is None else min(READ_CHUNK, end - offset)
                chunk = await asyncio.to_thread(os.pread, file.fileno(), size, offset)
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        finally:
            file.close()

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    async def ping(self) -> None:
        try:
            await asyncio.to_thread(_probe_writable, self._files)
        except OSError as exc:
            raise StorageUnavailable(
                f"local storage {self._files} is not writable: {exc.strerror or exc}"
            ) from exc

    async def aclose(self) -> None:
        return None


async def _write_all(file: BinaryIO, chunks: AsyncIterator[bytes], max_bytes: int) -> int:
    """Write what `chunks` yields, counting it; `TooLarge` once past `max_bytes`."""
    written = 0
    pending = bytearray()
    async for chunk in chunks:
        written += len(chunk)
        if written > max_bytes:
            raise TooLarge(f"more than {max_bytes} bytes")
        pending += chunk
        if len(pending) >= WRITE_BATCH:
            # A fresh buffer each time: the thread still reads the one it was handed.
            batch, pending = pending, bytearray()
            await asyncio.to_thread(file.write, batch)
    if pending:
        await asyncio.to_thread(file.write, pending)
    return written


def _open_temp(files: Path, key: str) -> tuple[BinaryIO, str]:
    files.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=files, prefix=f".{key}.", suffix=".part")
    return os.fdopen(fd, "wb"), temp


def _discard(file: BinaryIO, temp: str) -> None:
    file.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp)


def _commit(file: BinaryIO, temp: str, target: Path) -> None:
    """Make the temporary file durable, then the blob, atomically."""
    try:
        file.flush()
        os.fsync(file.fileno())
        file.close()
        os.replace(temp, target)
    except BaseException:
        _discard(file, temp)
        raise
    _fsync_directory(target.parent)  # the rename itself must survive a crash too


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _probe_writable(files: Path) -> None:
    files.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(dir=files, prefix=".ping.")
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)
