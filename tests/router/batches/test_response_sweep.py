"""The batch runner's sweep also deletes stored responses past their `expires_at` (SQLite;
Redis drops them itself), more than one page of them a sweep, and nothing still live."""

from __future__ import annotations

import time
from pathlib import Path

from policies.storage.factory import Storage
from policies.storage.local_blobs import LocalBlobs
from policies.storage.settings import StorageSettings
from policies.storage.sqlite_meta import SqliteMeta
from router.batches.runner import BatchRunner
from router.gateway import Gateway
from router.metrics import Metrics
from tests.policies.storage.test_response_store import a_response


def _no_gateway() -> Gateway:
    raise AssertionError("the sweep needs no gateway")


async def test_the_sweep_deletes_expired_responses(tmp_path: Path) -> None:
    meta = await SqliteMeta.open(tmp_path / "meta.sqlite3")
    storage = Storage(LocalBlobs(tmp_path), meta, StorageSettings(path=str(tmp_path)), False)
    runner = BatchRunner(storage, _no_gateway, Metrics(process=False))
    try:
        now = time.time()
        for n in range(250):  # past one page of 100
            await meta.put_response(a_response(f"resp_old{n}", now - 7200, expires_in=3600))
        live = a_response("resp_live", now, expires_in=3600)
        await meta.put_response(live)

        await runner._sweep(now)
        assert await meta.expired_responses(now + 7200, 1000) == ["resp_live"]
        assert await meta.get_response("resp_live", now) == live
    finally:
        await meta.aclose()
