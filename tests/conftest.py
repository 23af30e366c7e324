"""Fixtures shared by every test package (helpers live in ``tests/servers.py``)."""

from tests.servers import postgres_url, redis_url, vectors

__all__ = ["postgres_url", "redis_url", "vectors"]
