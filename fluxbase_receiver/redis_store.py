"""Idempotency stores on Redis, shared by every process and host (AWS Lambda included).

Needs the ``redis`` extra: ``pip install 'fluxbase-receiver[redis]'``. Expiry is Redis's
own (``PX``), so every host agrees on it whatever its clock says.
"""

from __future__ import annotations

from typing import Any

try:
    import redis
    import redis.asyncio
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "fluxbase_receiver.redis_store needs redis: pip install 'fluxbase-receiver[redis]'"
    ) from error

from fluxbase_receiver.idempotency import ClaimState

__all__ = ["AsyncRedisIdempotencyStore", "RedisIdempotencyStore"]

# Returns the current state, or claims the key and returns "new", in one atomic step.
_CLAIM = """
local state = redis.call('GET', KEYS[1])
if state then return state end
redis.call('SET', KEYS[1], 'in_progress', 'PX', ARGV[1])
return 'new'
"""
# Deletes the key only while it is still an in-progress claim (never forgets a done key).
_RELEASE = """
if redis.call('GET', KEYS[1]) == 'in_progress' then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _millis(ttl: float) -> int:
    return max(1, round(ttl * 1000))


def _state(raw: bytes | str) -> ClaimState:
    return ClaimState(raw.decode() if isinstance(raw, bytes) else raw)


class _RedisKeys:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.prefix!r}>"


class RedisIdempotencyStore(_RedisKeys):
    """A blocking store on a ``redis.Redis`` client (or a ``redis://`` URL)."""

    def __init__(self, client: redis.Redis | str, prefix: str = "fluxbase:idempotency:") -> None:
        super().__init__(
            redis.Redis.from_url(client) if isinstance(client, str) else client, prefix
        )

    def claim(self, key: str, ttl: float) -> ClaimState:
        return _state(self._claim(keys=[self.prefix + key], args=[_millis(ttl)]))

    def complete(self, key: str, ttl: float) -> None:
        self.client.set(self.prefix + key, ClaimState.DONE.value, px=_millis(ttl))

    def release(self, key: str) -> None:
        self._release(keys=[self.prefix + key])


class AsyncRedisIdempotencyStore(_RedisKeys):
    """An asyncio store on a ``redis.asyncio.Redis`` client (or a ``redis://`` URL)."""

    def __init__(
        self, client: redis.asyncio.Redis | str, prefix: str = "fluxbase:idempotency:"
    ) -> None:
        if isinstance(client, str):
            client = redis.asyncio.Redis.from_url(client)
        super().__init__(client, prefix)

    async def claim(self, key: str, ttl: float) -> ClaimState:
        return _state(await self._claim(keys=[self.prefix + key], args=[_millis(ttl)]))

    async def complete(self, key: str, ttl: float) -> None:
        await self.client.set(self.prefix + key, ClaimState.DONE.value, px=_millis(ttl))

    async def release(self, key: str) -> None:
        await self._release(keys=[self.prefix + key])
