"""Idempotency stores on PostgreSQL, shared by every process and host.

Needs the ``postgres`` extra: ``pip install 'fluxbase-receiver[postgres]'``. A claim is
one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired`` statement, so two hosts never
both see ``NEW`` for the same key. Expiry times are unix seconds from the store's clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import psycopg
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "fluxbase_receiver.postgres_store needs psycopg: pip install 'fluxbase-receiver[postgres]'"
    ) from error

from fluxbase_receiver.idempotency import ClaimState

__all__ = ["AsyncPostgresIdempotencyStore", "PostgresIdempotencyStore"]


class _Statements:
    """The SQL of both stores, for one table."""

    def __init__(self, table: str, clock: Callable[[], float]) -> None:
        if not table.replace(".", "_").isidentifier():
            raise ValueError("table must be a plain SQL identifier, optionally schema-qualified")
        self.clock = clock
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, "
            "state text NOT NULL, expires_at double precision NOT NULL)"
        )
        # Returns 'new' when this call claimed the key, else the state another holds.
        # No row at all means a concurrent claim of a brand-new key won the race.
        self.claim = (
            f"WITH claimed AS (INSERT INTO {table} AS t (key, state, expires_at) "
            "VALUES (%(key)s, 'in_progress', %(expires)s) ON CONFLICT (key) DO UPDATE "
            "SET state = 'in_progress', expires_at = excluded.expires_at "
            "WHERE t.expires_at <= %(now)s RETURNING 'new'::text AS state) "
            "SELECT state FROM claimed UNION ALL "
            f"SELECT state FROM {table} WHERE key = %(key)s AND NOT EXISTS (SELECT 1 FROM claimed)"
        )
        self.complete = (
            f"INSERT INTO {table} (key, state, expires_at) VALUES (%(key)s, 'done', %(expires)s) "
            "ON CONFLICT (key) DO UPDATE SET state = 'done', expires_at = excluded.expires_at"
        )
        self.release = f"DELETE FROM {table} WHERE key = %(key)s AND state = 'in_progress'"
        self.prune = f"DELETE FROM {table} WHERE expires_at <= %(now)s"

    def claim_params(self, key: str, ttl: float) -> dict[str, Any]:
        now = self.clock()
        return {"key": key, "now": now, "expires": now + ttl}

    def complete_params(self, key: str, ttl: float) -> dict[str, Any]:
        return {"key": key, "expires": self.clock() + ttl}

    @staticmethod
    def state(row: tuple[Any, ...] | None) -> ClaimState:
        return ClaimState.IN_PROGRESS if row is None else ClaimState(row[0])


class PostgresIdempotencyStore:
    """A blocking store; one autocommit connection per thread."""

    def __init__(
        self,
        conninfo: str,
        table: str = "fluxbase_idempotency",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Statements(table, clock)
        self._conninfo = conninfo
        self._local = threading.local()
        self._connection().execute(self._sql.create)

    def __repr__(self) -> str:
        return "<PostgresIdempotencyStore>"

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def claim(self, key: str, ttl: float) -> ClaimState:
        row = self._connection().execute(self._sql.claim, self._sql.claim_params(key, ttl))
        return self._sql.state(row.fetchone())

    def complete(self, key: str, ttl: float) -> None:
        self._connection().execute(self._sql.complete, self._sql.complete_params(key, ttl))

    def release(self, key: str) -> None:
        self._connection().execute(self._sql.release, {"key": key})

    def prune(self) -> int:
        """Delete expired keys; return how many."""
        cursor = self._connection().execute(self._sql.prune, {"now": self._sql.clock()})
        return cursor.rowcount

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()


class AsyncPostgresIdempotencyStore:
    """An asyncio store on one autocommit connection, opened on first use."""

    def __init__(
        self,
        conninfo: str,
        table: str = "fluxbase_idempotency",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sql = _Statements(table, clock)
        self._conninfo = conninfo
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return "<AsyncPostgresIdempotencyStore>"

    async def _execute(self, sql: str, params: dict[str, Any]) -> psycopg.AsyncCursor[Any]:
        async with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                await self._conn.execute(self._sql.create)
            return await self._conn.execute(sql, params)

    async def claim(self, key: str, ttl: float) -> ClaimState:
        cursor = await self._execute(self._sql.claim, self._sql.claim_params(key, ttl))
        return self._sql.state(await cursor.fetchone())

    async def complete(self, key: str, ttl: float) -> None:
        await self._execute(self._sql.complete, self._sql.complete_params(key, ttl))

    async def release(self, key: str) -> None:
        await self._execute(self._sql.release, {"key": key})

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
