"""Idempotency stores on Redis, shared by every process and host (AWS Lambda included).

Needs the ``redis`` extra: ``pip install 'fluxbase-receiver[redis]'``. Expiry is Redis's
own (``PX``), so every host agrees on it whatever its clock says. A claim's value names
its owner; renew, complete and release are Lua scripts that act only for that owner.
"""

from __future__ import annotations

from typing import Any

try:
    import redis
    import redis.asyncio
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.idempotency.redis needs redis: pip install 'fluxbase-receiver[redis]'"
    ) from error

from fluxbase_receiver.idempotency.base import ClaimState

__all__ = ["AsyncRedisIdempotencyStore", "RedisIdempotencyStore"]

# KEYS[1] the key; ARGV[1] the owner's claim value ("in_progress:<owner>"); ARGV[2] millis.
# Returns the current state, or claims the key and returns "new", in one atomic step.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held == 'done' then return 'done' end
if held then return 'in_progress' end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 'new'
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_COMPLETE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[2])
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _held(owner: str) -> str:
    return "in_progress:" + owner


def _state(raw: bytes | str) -> ClaimState:
    return ClaimState(raw.decode() if isinstance(raw, bytes) else raw)


class _RedisKeys:
    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._complete = client.register_script(_COMPLETE)
        self._release = client.register_script(_RELEASE)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} prefix={self.prefix!r}>"


class RedisIdempotencyStore(_RedisKeys):
    """A blocking store on a ``redis.Redis`` client (or a ``redis://`` URL)."""

    def __init__(self, client: redis.Redis | str, prefix: str = "fluxbase:idempotency:") -> None:
        super().__init__(
            redis.Redis.from_url(client) if isinstance(client, str) else client, prefix
        )

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        return _state(self._claim(keys=[self.prefix + key], args=[_held(owner), _millis(lease)]))

    def renew(self, key: str, owner: str, lease: float) -> bool:
        return bool(self._renew(keys=[self.prefix + key], args=[_held(owner), _millis(lease)]))

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        return bool(self._complete(keys=[self.prefix + key], args=[_held(owner), _millis(ttl)]))

    def release(self, key: str, owner: str) -> None:
        self._release(keys=[self.prefix + key], args=[_held(owner)])


class AsyncRedisIdempotencyStore(_RedisKeys):
    """An asyncio store on a ``redis.asyncio.Redis`` client (or a ``redis://`` URL)."""

    def __init__(
        self, client: redis.asyncio.Redis | str, prefix: str = "fluxbase:idempotency:"
    ) -> None:
        if isinstance(client, str):
            client = redis.asyncio.Redis.from_url(client)
        super().__init__(client, prefix)

    async def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        args = [_held(owner), _millis(lease)]
        return _state(await self._claim(keys=[self.prefix + key], args=args))

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        args = [_held(owner), _millis(lease)]
        return bool(await self._renew(keys=[self.prefix + key], args=args))

    async def complete(self, key: str, owner: str, ttl: float) -> bool:
        args = [_held(owner), _millis(ttl)]
        return bool(await self._complete(keys=[self.prefix + key], args=args))

    async def release(self, key: str, owner: str) -> None:
        await self._release(keys=[self.prefix + key], args=[_held(owner)])
