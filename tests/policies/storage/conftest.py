"""Storage tests: S3 on a real moto server started once for the session (`tests/s3_server.py`),
Redis on a real redis-server (`tests/redis_server.py`) and on a real Redis Cluster
(`tests/redis_cluster.py`)."""

from __future__ import annotations

from tests.redis_cluster import redis_cluster as redis_cluster
from tests.redis_cluster import redis_cluster_url as redis_cluster_url
from tests.redis_server import redis_url as redis_url
from tests.s3_server import s3_server as s3_server
from tests.s3_server import s3_settings as s3_settings
