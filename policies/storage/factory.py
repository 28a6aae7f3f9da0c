"""Choosing the storage from configuration.

One replica (no Redis in `state`, or `storage.single_replica`): records in SQLite and
bytes on local disk under `storage.path`, unless `storage.s3` puts the bytes in a bucket.
Several replicas (a shared Redis, one node or a cluster: `state.redis_url` or
`state.redis_cluster_nodes`): records and batch coordination in that Redis, bytes in
the bucket every replica reads; the config refuses a shared Redis without a bucket
(policies/config.py), since files on one replica's disk would be missing on the others.
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.config import TurnoutConfig
from policies.redis_client import RedisAddress
from policies.storage.base import BlobStore, MetaStore
from policies.storage.local_blobs import LocalBlobs
from policies.storage.redis_meta import RedisMeta
from policies.storage.s3_blobs import S3Blobs
from policies.storage.settings import StorageSettings
from policies.storage.sqlite_meta import SqliteMeta

DATABASE = "turnout.sqlite3"


@dataclass(frozen=True, slots=True)
class Storage:
    blobs: BlobStore
    meta: MetaStore
    settings: StorageSettings
    shared: bool  # records in a shared Redis: several replicas run batches together

    async def ping(self) -> None:
        await self.meta.ping()
        await self.blobs.ping()

    async def aclose(self) -> None:
        await self.meta.aclose()
        await self.blobs.aclose()

    def describe(self) -> str:
        """For the log: where records and bytes are (no credentials)."""
        meta = "redis" if self.shared else str(self.settings.directory() / DATABASE)
        s3 = self.settings.s3
        blobs = f"s3://{s3.bucket}/{s3.prefix}" if s3 is not None else "local files"
        return f"records: {meta}; bytes: {blobs}"


async def open_storage(config: TurnoutConfig) -> Storage:
    settings = config.storage
    is_shared = shared(config)
    directory = settings.directory()
    blobs: BlobStore = (
        S3Blobs.from_settings(settings.s3) if settings.s3 is not None else LocalBlobs(directory)
    )
    meta: MetaStore
    address = RedisAddress.of(config.state)
    if is_shared and address is not None:
        meta = RedisMeta.from_url(
            address,
            prefix=config.state.prefix,
            timeout_s=max(config.state.timeout, 2.0),  # records are larger than limits
        )
    else:
        directory.mkdir(parents=True, exist_ok=True)
        meta = await SqliteMeta.open(directory / DATABASE)
    return Storage(blobs, meta, settings, is_shared)


def shared(config: TurnoutConfig) -> bool:
    """Whether files and batches are kept in the shared Redis, for several replicas."""
    return config.state.shared and not config.storage.single_replica
