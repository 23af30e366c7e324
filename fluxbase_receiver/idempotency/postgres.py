"""Idempotency stores on PostgreSQL, shared by every process and host.

Needs the ``postgres`` extra: ``pip install 'fluxbase-receiver[postgres]'``. A claim is
one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired`` statement, so two hosts never
both see ``NEW`` for the same key; renew, complete and release act only on a row that
still names the caller as its owner. Expiry times are unix seconds from the store's
clock. The table is created under a transaction-scoped advisory lock, so any number of
processes can start at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

try:
    import psycopg
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.idempotency.postgres needs psycopg: "
        "pip install 'fluxbase-receiver[postgres]'"
    ) from error

from fluxbase_receiver.idempotency.base import ClaimState

__all__ = ["AsyncPostgresIdempotencyStore", "PostgresIdempotencyStore"]


class _Statements:
    """The SQL of both stores, for one table."""

    def __init__(self, table: str, clock: Callable[[], float]) -> None:
        if not table.replace(".", "_").isidentifier():
            raise ValueError("table must be a plain SQL identifier, optionally schema-qualified")
        self.clock = clock
        digest = hashlib.sha256(f"fluxbase_receiver:{table}".encode()).digest()
        lock_id = int.from_bytes(digest[:8], "big", signed=True)
        self.lock = f"SELECT pg_advisory_xact_lock({lock_id})"
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {table} (key text PRIMARY KEY, "
            "state text NOT NULL, expires_at double precision NOT NULL, owner text)"
        )
        # A table made before claims had owners gains the column (no lock when it has it).
        self.add_owner = (
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = "
            f"'{table}'::regclass AND attname = 'owner' AND NOT attisdropped) THEN "
            f"ALTER TABLE {table} ADD COLUMN owner text; END IF; END $$"
        )
        # Returns 'new' when this call claimed the key, else the state another holds.
        # No row at all means a concurrent claim of a brand-new key won the race.
        self.claim = (
            f"WITH claimed AS (INSERT INTO {table} AS t (key, state, expires_at, owner) "
            "VALUES (%(key)s, 'in_progress', %(expires)s, %(owner)s) ON CONFLICT (key) DO UPDATE "
            "SET state = 'in_progress', expires_at = excluded.expires_at, owner = excluded.owner "
            "WHERE t.expires_at <= %(now)s RETURNING 'new'::text AS state) "
            "SELECT state FROM claimed UNION ALL "
            f"SELECT state FROM {table} WHERE key = %(key)s AND NOT EXISTS (SELECT 1 FROM claimed)"
        )
        held = (
            "WHERE key = %(key)s AND owner = %(owner)s AND state = 'in_progress' "
            "AND expires_at > %(now)s"
        )
        self.renew = f"UPDATE {table} SET expires_at = %(expires)s {held}"
        self.complete = f"UPDATE {table} SET state = 'done', expires_at = %(expires)s {held}"
        self.release = (
            f"DELETE FROM {table} WHERE key = %(key)s AND owner = %(owner)s "
            "AND state = 'in_progress'"
        )
        self.prune = f"DELETE FROM {table} WHERE expires_at <= %(now)s"

    def params(self, key: str, owner: str, seconds: float) -> dict[str, Any]:
        now = self.clock()
        return {"key": key, "owner": owner, "now": now, "expires": now + seconds}

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
        conn = self._connection()
        with conn.transaction():
            conn.execute(self._sql.lock)
            conn.execute(self._sql.create)
            conn.execute(self._sql.add_owner)

    def __repr__(self) -> str:
        return "<PostgresIdempotencyStore>"

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True)
            self._local.conn = conn
        return conn

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        row = self._connection().execute(self._sql.claim, self._sql.params(key, owner, lease))
        return self._sql.state(row.fetchone())

    def renew(self, key: str, owner: str, lease: float) -> bool:
        params = self._sql.params(key, owner, lease)
        return self._connection().execute(self._sql.renew, params).rowcount == 1

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        params = self._sql.params(key, owner, ttl)
        return self._connection().execute(self._sql.complete, params).rowcount == 1

    def release(self, key: str, owner: str) -> None:
        self._connection().execute(self._sql.release, {"key": key, "owner": owner})

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
    """An asyncio store on one autocommit connection, opened (and the table made) on first use."""

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
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn.transaction():
                    await conn.execute(self._sql.lock)
                    await conn.execute(self._sql.create)
                    await conn.execute(self._sql.add_owner)
                self._conn = conn
            return await self._conn.execute(sql, params)

    async def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        cursor = await self._execute(self._sql.claim, self._sql.params(key, owner, lease))
        return self._sql.state(await cursor.fetchone())

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        cursor = await self._execute(self._sql.renew, self._sql.params(key, owner, lease))
        return cursor.rowcount == 1

    async def complete(self, key: str, owner: str, ttl: float) -> bool:
        cursor = await self._execute(self._sql.complete, self._sql.params(key, owner, ttl))
        return cursor.rowcount == 1

    async def release(self, key: str, owner: str) -> None:
        await self._execute(self._sql.release, {"key": key, "owner": owner})

    async def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.close()
