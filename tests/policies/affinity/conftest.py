from tests.redis_server import redis_url as redis_url
