"""`turnout batches list|show ID` reads the storage the config names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from policies.storage.base import BatchRecord
from policies.storage.sqlite_meta import SqliteMeta
from router.cli import main


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "turnout.yaml"
    path.write_text(
        "providers: {up: {kind: openai, base_url: 'http://127.0.0.1:9/v1'}}\n"
        "models: {m: {deployments: [{provider: up, model: m}]}}\n"
        f"storage: {{path: '{tmp_path / 'data'}'}}\n"
    )
    return path


async def _seed(database: Path) -> None:
    meta = await SqliteMeta.open(database)
    for batch_id, status in (("batch_running", "in_progress"), ("batch_done", "completed")):
        await meta.put_batch(
            BatchRecord(
                id=batch_id,
                owner="team:research",
                key_id="0123456789ab",
                endpoint="/v1/chat/completions",
                input_file_id="file-x",
                status=status,
                created_at=1_800_000_000,
                expires_at=1_800_086_400,
                total=10,
                completed=10 if status == "completed" else 0,
            )
        )
    await meta.aclose()


def test_list_shows_running_batches_and_show_any(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    asyncio.run(_seed(tmp_path / "data" / "turnout.sqlite3"))

    assert main(["batches", "list", "--config", str(config)]) == 0
    listed = capsys.readouterr().out
    assert "batch_running" in listed
    assert "in_progress" in listed
    assert "team:research" in listed
    assert "batch_done" not in listed

    assert main(["batches", "show", "batch_done", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert '"status": "completed"' in shown
    assert '"completed": 10' in shown

    assert main(["batches", "show", "batch_nope", "--config", str(config)]) == 1
    assert "no such batch" in capsys.readouterr().err
    assert main(["batches", "show", "--config", str(config)]) == 2
