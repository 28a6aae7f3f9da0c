"""`turnout batches list` (the batches still running) and `turnout batches show ID` (any
batch), read from the storage a config names: the same records the server reads, for an
operator at a shell. Every owner's batches are shown: the shell is the operator's."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

from policies.config import TurnoutConfig
from policies.loading import ConfigError, load_config
from policies.storage.base import ACTIVE, BatchRecord, StorageUnavailable
from policies.storage.factory import Storage, open_storage


def batches_command(config_path: Path, batch_id: str | None) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    try:
        return asyncio.run(_run(config, batch_id))
    except StorageUnavailable as exc:
        print(f"storage unavailable: {exc}", file=sys.stderr)
        return 1


async def _run(config: TurnoutConfig, batch_id: str | None) -> int:
    storage = await open_storage(config)
    try:
        if batch_id is None:
            return await _list(storage)
        record = await storage.meta.get_batch(batch_id)
        if record is None:
            print(f"no such batch: {batch_id}", file=sys.stderr)
            return 1
        record = await _live(storage, record)
        view = {"owner": record.owner, **record.public()}
        print(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode())
        return 0
    finally:
        await storage.aclose()


async def _list(storage: Storage) -> int:
    active = set(await storage.meta.active_batches())
    print(f"{'id':36} {'status':12} {'done':>13} {'created (UTC)':20} owner")
    for batch_id in sorted(active):
        record = await storage.meta.get_batch(batch_id)
        if record is not None:
            _row(await _live(storage, record))
    print(f"({len(active)} active; `turnout batches show ID` for any batch)")
    return 0


def _row(record: BatchRecord) -> None:
    created = datetime.fromtimestamp(record.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    done = f"{record.completed + record.failed}/{record.total}"
    print(f"{record.id:36} {record.status:12} {done:>13} {created:20} {record.owner}")


async def _live(storage: Storage, record: BatchRecord) -> BatchRecord:
    if record.status in ACTIVE and record.total:
        completed, failed = await storage.meta.line_counts(record.id)
        return record.model_copy(update={"completed": completed, "failed": failed})
    return record
