"""`storage:` and `batches:` in the config: where files and batches are kept, and how
batches run."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import platformdirs
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

MIB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Strict):
    """Files' bytes in an S3-compatible bucket, which every replica reads and writes."""

    bucket: str = Field(min_length=1)
    endpoint: str | None = None  # absent: AWS's own for `region`
    prefix: str = "turnout/"
    region: str = "us-east-1"
    key_id: str | None = None  # absent: the environment's credentials (AWS_ACCESS_KEY_ID...)
    secret: str | None = None
    # Only for a test server on loopback: plain http:// endpoints are refused otherwise.
    allow_http: bool = False


class StorageSettings(_Strict):
    # Files (their bytes, unless `s3` is set) and the SQLite database of records. Absent:
    # $TURNOUT_DATA_DIR, else the user's data directory (~/.local/share/turnout on Linux).
    path: str | None = None
    max_file_bytes: int = Field(512 * MIB, ge=1, description="Larger uploads get 413")
    # What one owner (a team; a key outside teams) may keep in all, uploads and batch
    # outputs together: an upload past it gets 413 `storage_quota_exceeded`. None: no quota.
    max_bytes_per_owner: int | None = Field(10 * 1024 * MIB, ge=1)
    s3: S3Settings | None = None
    # With `state.redis_url` set, Turnout expects several replicas: records and batch
    # coordination go through that Redis, and file bytes must be where every replica sees
    # them (`s3`). A deployment that runs one replica with a shared Redis says so here,
    # and keeps records in SQLite and bytes on local disk.
    single_replica: bool = False

    def directory(self) -> Path:
        if self.path is not None:
            return Path(self.path).expanduser()
        env = os.environ.get("TURNOUT_DATA_DIR")
        if env:
            return Path(env).expanduser()
        return Path(platformdirs.user_data_dir("turnout", appauthor=False))


class BatchSettings(_Strict):
    # Lines in flight at once in one process (all batches together), and in one batch.
    max_in_flight: int = Field(32, ge=1, le=4096)
    max_in_flight_per_batch: int = Field(32, ge=1, le=4096)
    # The share of each rate limit and budget (rpm, tpm, token budgets, concurrency) that
    # batch lines may use: a line is held back (not failed) while live requests leave it
    # less headroom than that. 1.0: batches compete with live traffic as equals.
    limit_share: float = Field(0.5, gt=0, le=1)
    max_lines: int = Field(50_000, ge=1, le=1_000_000)
    # Batches one owner may have not yet ended; past it, creating one gets 429.
    max_active_per_owner: int = Field(16, ge=1)
    # Lines claimed together by one runner (the unit of a lease), and the lease's length:
    # a replica that dies gives its chunk back this many seconds after its last renewal.
    chunk_lines: int = Field(16, ge=1, le=10_000)
    lease_s: float = Field(30.0, gt=0)
    poll_s: float = Field(1.0, gt=0, description="How often runners look for work")
    # Output and error files expire after this many seconds (OpenAI: 30 days).
    output_expires_after: int = Field(30 * 24 * 3600, ge=3600)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(value: object) -> object:
    """A duration: seconds, or a number with a unit (`90s`, `15m`, `12h`, `30d`)."""
    if isinstance(value, str):
        found = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", value)
        if found is None:
            raise ValueError("a duration: seconds, or a number and s, m, h or d (e.g. 30d)")
        return int(found[1]) * _UNITS[found[2]]
    return value


Duration = Annotated[int, BeforeValidator(_seconds), Field(ge=1)]


class ResponsesSettings(_Strict):
    # How long a stored response (and so a conversation continued from it) is kept.
    ttl: Duration = 30 * 86400
    # A conversation rebuilt from `previous_response_id` walks back at most this many
    # responses and takes at most this many items: past either, a 400 (bounded work).
    max_turns: int = Field(1000, ge=1)
    max_items: int = Field(10_000, ge=1)
