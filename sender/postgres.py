"""The sender's PostgreSQL store: psycopg 3 (async) with a connection pool.

Needs the ``postgres`` extra (``pip install "fluxbase-receiver[postgres]"``). The store
owns the tables of one schema (``fluxbase_sender`` by default), brought up to date by
versioned migrations when it opens, under a transaction-scoped advisory lock so that
processes starting together apply each migration once.

Capture: ``watch(table, schema=...)`` installs a row trigger that turns the change into
``to_jsonb(NEW)`` / ``to_jsonb(OLD)`` and fans it out to the matching enabled webhooks
inside the writer's transaction (rolled back: nothing is sent). ``add_event`` with the
caller's own psycopg connection does the same through the same SQL function (outbox).
Both end with ``NOTIFY`` on a channel named after the schema.

Workers lease due deliveries with ``FOR UPDATE SKIP LOCKED``: a leased delivery's
``next_attempt_at`` is its lease's expiry, so it leaves the due index until then and a
dead worker's work comes back by itself. Claims and attempts are each one call of a
server-side function per batch. Every per-delivery statement goes through an index.

The workers' own bookkeeping (leases, attempts) commits without waiting for its WAL
flush (``synchronous_commit = off`` for those transactions only): a database crash can
forget its last moments, so a few deliveries are sent again. Captured changes commit
with the application's transaction and its settings: they are never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

try:
    import psycopg
    from psycopg import sql
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "fluxbase_receiver.sender.postgres needs psycopg and psycopg-pool: "
        "pip install 'fluxbase-receiver[postgres]'"
    ) from error

from fluxbase_receiver.sender.backend import (
    AttemptRecord,
    ClaimedDelivery,
    Ordering,
    claimed_from_row,
    delivery_from_row,
    unix_datetime,
    webhook_changes,
)
from fluxbase_receiver.sender.capture import CapturedEvent, check_identifier
from fluxbase_receiver.sender.delivery import MAX_STORED_BODY
from fluxbase_receiver.sender.models import (
    AttemptOutcome,
    Delivery,
    DeliveryAttempt,
    Webhook,
    WebhookSpec,
)

__all__ = ["MIGRATIONS", "PostgresStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_UNFINISHED = "status IN ('pending', 'retrying')"

MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE {s}.webhooks (
    id text PRIMARY KEY,
    name text NOT NULL,
    description text,
    url text NOT NULL,
    secret text NOT NULL,
    enabled boolean NOT NULL,
    events jsonb NOT NULL,
    max_retries integer NOT NULL,
    timeout_seconds double precision NOT NULL,
    retry_backoff_seconds double precision NOT NULL,
    headers jsonb NOT NULL,
    scope text NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    failing_since double precision,
    disabled_reason text
);
CREATE TABLE {s}.subscriptions (
    webhook_id text NOT NULL REFERENCES {s}.webhooks ON DELETE CASCADE,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL,
    PRIMARY KEY (webhook_id, schema_name, table_name, operation)
);
CREATE TABLE {s}.events (
    id text PRIMARY KEY,
    event text NOT NULL,
    schema_name text NOT NULL,
    table_name text NOT NULL,
    record jsonb,
    old_record jsonb,
    occurred_at double precision NOT NULL
);
CREATE TABLE {s}.deliveries (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    webhook_id text NOT NULL REFERENCES {s}.webhooks ON DELETE CASCADE,
    event_id text NOT NULL REFERENCES {s}.events,
    row_key text,
    blocked boolean NOT NULL DEFAULT false,
    paused boolean NOT NULL DEFAULT false,
    status text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    in_progress_answers integer NOT NULL DEFAULT 0,
    max_attempts integer,
    response_status integer,
    response_body text,
    error text,
    created_at double precision NOT NULL,
    delivered_at double precision,
    next_attempt_at double precision,
    lease_owner text
);
CREATE INDEX deliveries_due ON {s}.deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying') AND NOT blocked AND NOT paused;
CREATE INDEX deliveries_row ON {s}.deliveries (webhook_id, row_key, seq)
    WHERE status IN ('pending', 'retrying') AND row_key IS NOT NULL;
CREATE INDEX deliveries_webhook ON {s}.deliveries (webhook_id, seq);
CREATE INDEX deliveries_event ON {s}.deliveries (event_id);
CREATE INDEX deliveries_failed ON {s}.deliveries (created_at) WHERE status = 'failed';
CREATE TABLE {s}.attempts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id text NOT NULL REFERENCES {s}.deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    response_status integer,
    response_body text,
    error text,
    duration_ms double precision NOT NULL,
    started_at double precision NOT NULL
);
CREATE INDEX attempts_delivery ON {s}.attempts (delivery_id, id);

CREATE FUNCTION {s}.capture(
    operation text, schema_name text, table_name text, new_record jsonb, old_record jsonb,
    key_columns text[], event_id text DEFAULT NULL, occurred_at double precision DEFAULT NULL
) RETURNS text[] LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    hooks text[] COLLATE "default";
    ids text[];
    ordering_key text COLLATE "default";
    occurred double precision := coalesce(occurred_at, extract(epoch FROM clock_timestamp()));
BEGIN
    SELECT array_agg(w.id ORDER BY w.created_at, w.id) INTO hooks
    FROM {s}.webhooks AS w
    WHERE w.enabled AND EXISTS (
        SELECT 1 FROM {s}.subscriptions AS s
        WHERE s.webhook_id = w.id AND s.operation = capture.operation
          AND s.schema_name IN ('*', capture.schema_name)
          AND s.table_name IN ('*', capture.table_name));
    IF hooks IS NULL THEN
        RETURN ARRAY[]::text[];
    END IF;
    IF key_columns IS NOT NULL THEN
        ordering_key := quote_ident(capture.schema_name) || '.' || quote_ident(capture.table_name)
            || coalesce((
                SELECT jsonb_agg(coalesce(new_record, old_record) -> c.name ORDER BY c.n)
                FROM unnest(key_columns) WITH ORDINALITY AS c(name, n)
                HAVING count(coalesce(new_record, old_record) -> c.name) > 0)::text, '');
    END IF;
    event_id := coalesce(event_id, replace(gen_random_uuid()::text, '-', ''));
    INSERT INTO {s}.events (id, event, schema_name, table_name, record, old_record, occurred_at)
    VALUES (event_id, operation, capture.schema_name, capture.table_name, new_record,
            capture.old_record, occurred);
    WITH created AS (
        INSERT INTO {s}.deliveries
            (id, webhook_id, event_id, row_key, blocked, status, created_at, next_attempt_at)
        SELECT gen_random_uuid()::text, hook.id, capture.event_id, ordering_key,
               ordering_key IS NOT NULL AND EXISTS (
                   SELECT 1 FROM {s}.deliveries AS p
                   WHERE p.webhook_id = hook.id AND p.row_key = ordering_key
                     AND p.status IN ('pending', 'retrying')),
               'pending', occurred, occurred
        FROM unnest(hooks) WITH ORDINALITY AS hook(id, n)
        ORDER BY hook.n
        RETURNING id)
    SELECT array_agg(created.id) INTO ids FROM created;
    PERFORM pg_notify({channel}, '');
    RETURN ids;
END
$$;

CREATE FUNCTION {s}.capture_row() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    new_record jsonb;
    old_record jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        new_record := to_jsonb(OLD);
        old_record := new_record;
    ELSE
        new_record := to_jsonb(NEW);
        IF TG_OP = 'UPDATE' THEN
            old_record := to_jsonb(OLD);
        END IF;
    END IF;
    PERFORM {s}.capture(
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, new_record, old_record,
        CASE WHEN TG_ARGV[0] = 'row' THEN coalesce(TG_ARGV[1:], ARRAY[]::text[]) END);
    RETURN NULL;
END
$$;

CREATE FUNCTION {s}.record_attempts(
    p_ids text[], p_owners text[], p_attempts integer[], p_oks boolean[], p_statuses text[],
    p_next_at float8[], p_counted boolean[], p_refused boolean[], p_response_statuses integer[],
    p_bodies text[], p_errors text[], p_durations float8[], p_started float8[],
    p_hooks text[], p_resets boolean[], p_failing_since float8[], p_reasons text[]
) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    succeeded text[];
    disabled text[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- see the module's notes
    WITH r AS (
        SELECT * FROM unnest(p_ids, p_owners, p_attempts, p_oks, p_statuses, p_next_at,
                             p_counted, p_refused, p_response_statuses, p_bodies, p_errors,
                             p_durations, p_started)
            AS r(id, owner, attempt, ok, status, next_at, counted, refused, response_status,
                 response_body, error, duration_ms, started_at)
    ),
    won AS (
        UPDATE {s}.deliveries AS d SET status = 'success',
            attempts = greatest(d.attempts, r.attempt), response_status = r.response_status,
            response_body = r.response_body, error = NULL, delivered_at = r.started_at,
            next_attempt_at = NULL, lease_owner = NULL
        FROM r WHERE r.ok AND d.id = r.id AND d.status <> 'success'
        RETURNING d.id
    ),
    lost AS (
        UPDATE {s}.deliveries AS d SET status = r.status,
            in_progress_answers = d.in_progress_answers + CASE WHEN r.counted THEN 0 ELSE 1 END,
            response_status = r.response_status, response_body = r.response_body,
            error = r.error, next_attempt_at = r.next_at, lease_owner = NULL
        FROM r WHERE NOT r.ok AND d.id = r.id AND d.status IN ('pending', 'retrying')
          AND d.lease_owner = r.owner
        RETURNING d.id
    ),
    logged AS (
        INSERT INTO {s}.attempts (delivery_id, attempt, outcome, response_status,
            response_body, error, duration_ms, started_at)
        SELECT r.id, r.attempt,
            CASE WHEN r.ok AND won.id IS NULL THEN 'superseded' WHEN r.ok THEN 'success'
                 WHEN r.refused THEN 'refused' ELSE 'failed' END,
            r.response_status, r.response_body, r.error, r.duration_ms, r.started_at
        FROM r LEFT JOIN won ON won.id = r.id
    )
    SELECT array_agg(won.id) INTO succeeded FROM won;

    -- The batch's effect on its webhooks: the run of failures, and disabling (pausing work).
    WITH h AS (
        SELECT * FROM unnest(p_hooks, p_resets, p_failing_since, p_reasons)
            AS h(id, reset, failing_since, reason)
    ),
    changed AS (
        UPDATE {s}.webhooks AS w SET
            failing_since = CASE WHEN h.reset THEN h.failing_since
                                 ELSE least(w.failing_since, h.failing_since) END,
            enabled = w.enabled AND h.reason IS NULL,
            disabled_reason = coalesce(h.reason, w.disabled_reason)
        FROM h WHERE w.id = h.id AND (
            w.failing_since IS DISTINCT FROM CASE WHEN h.reset THEN h.failing_since
                                                  ELSE least(w.failing_since, h.failing_since) END
            OR (h.reason IS NOT NULL AND w.enabled))
        RETURNING w.id, w.enabled
    )
    SELECT array_agg(changed.id) INTO disabled FROM changed WHERE NOT changed.enabled;
    IF disabled IS NOT NULL THEN
        UPDATE {s}.deliveries AS d SET paused = true
        WHERE d.webhook_id = ANY(disabled) AND d.status IN ('pending', 'retrying')
          AND NOT d.paused;
    END IF;

    PERFORM {s}.hand_over(p_ids);
    RETURN coalesce(succeeded, ARRAY[]::text[]);
END
$$;

CREATE FUNCTION {s}.hand_over(p_ids text[]) RETURNS void LANGUAGE plpgsql
-- Planned once per session (PL/pgSQL keeps the plan; an SQL function plans on every
-- call), and never again for the size of p_ids: every step is an index lookup.
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    -- Finished deliveries among p_ids let the next waiting change of their row go.
    WITH finished AS (
        SELECT DISTINCT f.webhook_id, f.row_key FROM {s}.deliveries AS f
        WHERE f.id = ANY(p_ids) AND f.status IN ('success', 'failed') AND f.row_key IS NOT NULL
    )
    UPDATE {s}.deliveries AS d SET blocked = false FROM finished
    WHERE d.seq = (
        SELECT min(b.seq) FROM {s}.deliveries AS b
        WHERE b.webhook_id = finished.webhook_id AND b.row_key = finished.row_key
          AND b.status IN ('pending', 'retrying') AND b.blocked)
      AND NOT EXISTS (
        SELECT 1 FROM {s}.deliveries AS a
        WHERE a.webhook_id = finished.webhook_id AND a.row_key = finished.row_key
          AND a.status IN ('pending', 'retrying') AND NOT a.blocked);
END
$$;

CREATE FUNCTION {s}.claim(
    p_owner text, p_now float8, p_due float8, p_limit integer, p_grace float8
) RETURNS TABLE (
    n integer, id text, attempts integer, in_progress_answers integer, max_attempts integer,
    created_at float8, event_id text, event text, schema_name text, table_name text,
    record text, old_record text, occurred_at float8, webhook_id text, url text, secret text,
    headers jsonb, timeout_seconds float8, retry_backoff_seconds float8, max_retries integer,
    failing_since float8
) LANGUAGE plpgsql
-- The due index, read in order up to the limit: never a bitmap of every due row, sorted.
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
DECLARE
    picked bigint[];
    lost text[];
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);  -- see the module's notes
    picked := ARRAY(
        SELECT d.seq FROM {s}.deliveries AS d
        WHERE d.status IN ('pending', 'retrying') AND NOT d.blocked AND NOT d.paused
          AND d.next_attempt_at <= p_due
        ORDER BY d.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED);

    -- An expired lease: its worker was lost with the attempt it counted. Looked up
    -- first: settling costs more than the look-up even when there is nothing to settle.
    IF EXISTS (SELECT FROM {s}.deliveries AS d
               WHERE d.seq = ANY(picked) AND d.lease_owner IS NOT NULL) THEN
        WITH expired AS (
            SELECT d.seq, d.next_attempt_at AS expired_at,
                   d.attempts - d.in_progress_answers
                       >= coalesce(d.max_attempts, w.max_retries + 1) AS exhausted,
                   'worker lost: ' || d.lease_owner || ' took the lease for attempt '
                       || d.attempts || ' and did not record it before the lease expired' AS why
            FROM {s}.deliveries AS d JOIN {s}.webhooks AS w ON w.id = d.webhook_id
            WHERE d.seq = ANY(picked) AND d.lease_owner IS NOT NULL
        ),
        settled AS (
            UPDATE {s}.deliveries AS d SET error = x.why, response_status = NULL,
                response_body = NULL, lease_owner = NULL,
                status = CASE WHEN x.exhausted THEN 'failed' ELSE d.status END,
                next_attempt_at = CASE WHEN x.exhausted THEN NULL ELSE d.next_attempt_at END
            FROM expired AS x WHERE d.seq = x.seq
            RETURNING d.id, d.attempts, x.why, x.expired_at
        ),
        logged AS (
            INSERT INTO {s}.attempts (delivery_id, attempt, outcome, error, duration_ms, started_at)
            SELECT settled.id, settled.attempts, 'failed', settled.why, 0, settled.expired_at
            FROM settled
        )
        SELECT array_agg(settled.id) INTO lost FROM settled;
        IF lost IS NOT NULL THEN
            PERFORM {s}.hand_over(lost);
        END IF;
    END IF;

    UPDATE {s}.deliveries AS d SET paused = true FROM {s}.webhooks AS w
    WHERE d.seq = ANY(picked) AND w.id = d.webhook_id AND NOT w.enabled;

    RETURN QUERY
    UPDATE {s}.deliveries AS d SET attempts = d.attempts + 1, lease_owner = p_owner,
        next_attempt_at = p_now + w.timeout_seconds + p_grace
    FROM {s}.webhooks AS w, {s}.events AS e
    WHERE d.seq = ANY(picked) AND d.status IN ('pending', 'retrying') AND NOT d.paused
      AND w.id = d.webhook_id AND e.id = d.event_id
    RETURNING array_position(picked, d.seq), d.id, d.attempts, d.in_progress_answers,
        d.max_attempts, d.created_at, e.id, e.event, e.schema_name, e.table_name,
        e.record::text, e.old_record::text, e.occurred_at, w.id, w.url, w.secret, w.headers,
        w.timeout_seconds, w.retry_backoff_seconds, w.max_retries, w.failing_since;
END
$$;
""",
)
"""Schema versions, oldest first: ``{s}`` is the schema, ``{channel}`` its NOTIFY channel."""

_DELIVERY_COLUMNS = """
d.id, d.webhook_id, d.event_id, d.status, d.attempts, d.response_status, d.response_body,
d.error, d.created_at, d.delivered_at, d.next_attempt_at, e.event, e.schema_name, e.table_name,
e.record::text AS record, e.old_record::text AS old_record, e.occurred_at"""

_CLAIMED_COLUMNS = """
d.id, d.attempts, d.in_progress_answers, d.max_attempts, d.created_at, e.id AS event_id,
e.event, e.schema_name, e.table_name, e.record::text AS record,
e.old_record::text AS old_record, e.occurred_at, w.id AS webhook_id, w.url, w.secret,
w.headers, w.timeout_seconds, w.retry_backoff_seconds, w.max_retries, w.failing_since"""

_MAX_SCHEMA_LENGTH = 55
"""Leaves room for the trigger name (``<schema>_capture``) within PostgreSQL's 63."""


class PostgresStore:
    """:class:`~fluxbase_receiver.sender.backend.SenderStore` on PostgreSQL.

    ``schema`` is where the store's tables live; ``pool_size`` caps its pooled
    connections (one more is kept for ``LISTEN``). ``ordering`` applies to the changes
    this store captures (see :mod:`fluxbase_receiver.sender.backend`).
    ``sweep_interval`` is how often a worker looks for a change left waiting behind a
    row's delivery that finished while the change was being committed.
    """

    def __init__(
        self,
        database_url: str,
        *,
        schema: str = "fluxbase_sender",
        ordering: Ordering = "row",
        pool_size: int = 4,
        sweep_interval: float = 30.0,
    ) -> None:
        check_identifier("schema", schema)
        if len(schema) > _MAX_SCHEMA_LENGTH:
            raise ValueError(f"schema must be at most {_MAX_SCHEMA_LENGTH} characters")
        if ordering not in ("row", "none"):
            raise ValueError("ordering must be 'row' or 'none'")
        self.database_url = database_url
        self.schema = schema
        self.ordering: Ordering = ordering
        self.sweep_interval = sweep_interval
        self._s = sql.Identifier(schema)
        self._queries: dict[str, str] = {}
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            database_url,
            min_size=1,
            max_size=pool_size,
            kwargs=self._connection_options(),
            open=False,
        )
        self._listener: asyncio.Task[None] | None = None
        self._woken: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._swept_at = time.monotonic()

    def __repr__(self) -> str:
        return f"<PostgresStore schema={self.schema!r}>"

    def _connection_options(self) -> dict[str, Any]:
        """Autocommit, named ``fluxbase-sender/<schema>`` in ``pg_stat_activity``."""
        return {"autocommit": True, "application_name": f"fluxbase-sender/{self.schema}"}

    def _sql(self, text: str) -> str:
        """``text`` with ``{s}`` (the schema) and ``{channel}`` filled in, made once."""
        query = self._queries.get(text)
        if query is None:
            # The schema is a checked plain identifier: quoting it cannot be escaped.
            query = text.replace("{s}", f'"{self.schema}"').replace("{channel}", f"'{self.schema}'")
            self._queries[text] = query
        return query

    async def _run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``work`` on a pooled connection; on another one when that one was lost.

        Every pooled connection may have been cut at once, hence one try more than the
        pool's size. Work is written so that running it twice is harmless.
        """
        tries = self._pool.max_size + 1
        for attempt in range(1, tries + 1):
            try:
                async with self._pool.connection() as conn:
                    return await work(conn)
            except psycopg.OperationalError as error:
                if attempt == tries:
                    raise
                logger.warning("PostgreSQL store: %s; trying again", type(error).__name__)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    async def _fetch(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(self._sql(query), params)
                # rownumber is None without rows to fetch (cheaper than building description)
                return await cur.fetchall() if cur.rownumber is not None else []

        return await self._run(work)

    # -- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Migrate on a connection of its own (an unreachable database fails here, at
        once), then open the pool."""
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        connection = await psycopg.AsyncConnection.connect(
            self.database_url, connect_timeout=10, **self._connection_options()
        )
        async with connection as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"fluxbase_sender.migrate:{self.schema}",),
            )
            await conn.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            await conn.execute(
                self._sql(
                    "CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            )
            cur = await conn.execute(
                self._sql("SELECT coalesce(max(version), 0) FROM {s}.migrations")
            )
            row = await cur.fetchone()
            current = row[0] if row else 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    await conn.execute(self._sql(script))
                    await conn.execute(
                        self._sql("INSERT INTO {s}.migrations (version) VALUES (%s)"),
                        (version,),
                    )
        await self._pool.open(wait=True)

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    async def drop(self) -> None:
        """Drop the store's schema and everything in it (triggers on watched tables too)."""
        await self._fetch("DROP SCHEMA IF EXISTS {s} CASCADE")

    # -- webhooks -----------------------------------------------------------------

    async def create_webhook(self, spec: WebhookSpec, now: float) -> Webhook:
        webhook_id = str(uuid.uuid4())

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                await conn.execute(
                    self._sql(
                        "INSERT INTO {s}.webhooks (id, name, description, url, secret, enabled,"
                        " events, max_retries, timeout_seconds, retry_backoff_seconds, headers,"
                        " scope, created_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    ),
                    (webhook_id, *_webhook_values(spec), now, now),
                )
                await self._write_subscriptions(conn, webhook_id, spec)

        await self._run(work)
        created = await self.get_webhook(webhook_id)
        assert created is not None
        return created

    async def update_webhook(
        self, webhook_id: str, spec: WebhookSpec, now: float
    ) -> Webhook | None:
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    self._sql(
                        "UPDATE {s}.webhooks SET name = %s, description = %s, url = %s,"
                        " secret = %s, enabled = %s, events = %s, max_retries = %s,"
                        " timeout_seconds = %s, retry_backoff_seconds = %s, headers = %s,"
                        " scope = %s, updated_at = %s,"
                        " disabled_reason = CASE WHEN %s THEN NULL ELSE disabled_reason END,"
                        " failing_since = CASE WHEN %s THEN NULL ELSE failing_since END"
                        " WHERE id = %s"
                    ),
                    (*_webhook_values(spec), now, spec.enabled, spec.enabled, webhook_id),
                )
                if not cur.rowcount:
                    return False
                await self._write_subscriptions(conn, webhook_id, spec)
                await conn.execute(
                    self._sql(
                        f"UPDATE {{s}}.deliveries SET paused = %s WHERE webhook_id = %s"
                        f" AND {_UNFINISHED} AND paused = %s"
                    ),
                    (not spec.enabled, webhook_id, spec.enabled),
                )
                if spec.enabled:
                    await conn.execute(self._sql("SELECT pg_notify({channel}, '')"))
                return True

        return await self.get_webhook(webhook_id) if await self._run(work) else None

    async def _write_subscriptions(
        self, conn: psycopg.AsyncConnection[Any], webhook_id: str, spec: WebhookSpec
    ) -> None:
        await conn.execute(
            self._sql("DELETE FROM {s}.subscriptions WHERE webhook_id = %s"), (webhook_id,)
        )
        rows = sorted(
            {
                (webhook_id, *event_filter.patterns, operation)
                for event_filter in spec.events
                for operation in event_filter.expanded_operations()
            }
        )
        async with conn.cursor() as cur:
            await cur.executemany(
                self._sql("INSERT INTO {s}.subscriptions VALUES (%s, %s, %s, %s)"), rows
            )

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        rows = await self._fetch("SELECT * FROM {s}.webhooks WHERE id = %s", (webhook_id,))
        return _webhook(rows[0]) if rows else None

    async def list_webhooks(self) -> list[Webhook]:
        rows = await self._fetch("SELECT * FROM {s}.webhooks ORDER BY created_at, id")
        return [_webhook(row) for row in rows]

    async def delete_webhook(self, webhook_id: str) -> bool:
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            async with conn.transaction():
                cur = await conn.execute(
                    self._sql(
                        "DELETE FROM {s}.deliveries WHERE webhook_id = %s RETURNING event_id"
                    ),
                    (webhook_id,),
                )
                events = sorted({row[0] for row in await cur.fetchall()})
                await self._drop_orphan_events(conn, events)
                cur = await conn.execute(
                    self._sql("DELETE FROM {s}.webhooks WHERE id = %s"), (webhook_id,)
                )
                return cur.rowcount > 0

        return await self._run(work)

    async def _drop_orphan_events(
        self, conn: psycopg.AsyncConnection[Any], event_ids: list[str]
    ) -> None:
        await conn.execute(
            self._sql(
                "DELETE FROM {s}.events AS e WHERE e.id = ANY(%s) AND NOT EXISTS"
                " (SELECT 1 FROM {s}.deliveries AS d WHERE d.event_id = e.id)"
            ),
            (event_ids,),
        )

    # -- capture ------------------------------------------------------------------

    def _capture_call(self, event: CapturedEvent) -> tuple[str, tuple[Any, ...]]:
        query = self._sql("SELECT {s}.capture(%s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s)")
        key_columns = ["id"] if self.ordering == "row" else None
        return query, (
            event.event,
            event.schema,
            event.table,
            event.record,
            event.old_record,
            key_columns,
            event.id,
            event.occurred_at,
        )

    async def add_event(self, event: CapturedEvent, connection: Any | None = None) -> list[str]:
        """See the protocol; ``connection`` is a psycopg ``AsyncConnection``."""
        query, params = self._capture_call(event)
        if connection is None:

            async def work(conn: psycopg.AsyncConnection[Any]) -> Any:
                return await (await conn.execute(query, params)).fetchone()

            row = await self._run(work)
        elif isinstance(connection, psycopg.AsyncConnection):
            row = await (await connection.execute(query, params)).fetchone()
        else:
            raise TypeError(
                "connection must be a psycopg AsyncConnection (capture() takes a Connection)"
            )
        return list(row[0]) if row and row[0] else []

    def capture(self, event: CapturedEvent, connection: Any) -> list[str]:
        """See the protocol; ``connection`` is a psycopg ``Connection``."""
        if not isinstance(connection, psycopg.Connection):
            raise TypeError(
                "connection must be a psycopg Connection (add_event() takes an AsyncConnection)"
            )
        row = connection.execute(*self._capture_call(event)).fetchone()
        return list(row[0]) if row and row[0] else []

    async def add_test_delivery(
        self, event: CapturedEvent, webhook_id: str, owner: str, now: float, lease_grace: float
    ) -> ClaimedDelivery | None:
        delivery_id = str(uuid.uuid4())

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                await cur.execute(
                    self._sql(
                        "INSERT INTO {s}.events (id, event, schema_name, table_name, record,"
                        " old_record, occurred_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    ),
                    (
                        event.id,
                        event.event,
                        event.schema,
                        event.table,
                        event.record,
                        event.old_record,
                        event.occurred_at,
                    ),
                )
                await cur.execute(
                    self._sql(
                        "WITH d AS (INSERT INTO {s}.deliveries (id, webhook_id, event_id, status,"
                        " attempts, max_attempts, created_at, next_attempt_at, lease_owner)"
                        " SELECT %s, w.id, %s, 'pending', 1, 1, %s, %s + w.timeout_seconds + %s, %s"
                        " FROM {s}.webhooks AS w WHERE w.id = %s RETURNING *)"
                        f" SELECT {_CLAIMED_COLUMNS} FROM d"
                        " JOIN {s}.webhooks AS w ON w.id = d.webhook_id"
                        " JOIN {s}.events AS e ON e.id = d.event_id"
                    ),
                    (delivery_id, event.id, now, now, lease_grace, owner, webhook_id),
                )
                rows = await cur.fetchall()
                if not rows:
                    raise psycopg.Rollback  # no such webhook: keep no event
            return rows

        rows = await self._run(work)
        return (
            claimed_from_row(rows[0], headers=rows[0]["headers"], attempt=rows[0]["attempts"])
            if rows
            else None
        )

    async def watch(self, table: str, schema: str) -> None:
        target = sql.Identifier(
            check_identifier("schema", schema), check_identifier("table", table)
        )

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction():
                cur = await conn.execute("SELECT to_regclass(%s)", (target.as_string(conn),))
                row = await cur.fetchone()
                if row is None or row[0] is None:
                    raise ValueError(f"table {schema}.{table} does not exist")
                cur = await conn.execute(
                    "SELECT a.attname FROM pg_index AS i"
                    " JOIN pg_attribute AS a ON a.attrelid = i.indrelid"
                    " AND a.attnum = ANY(i.indkey)"
                    " WHERE i.indrelid = %s::regclass AND i.indisprimary"
                    " ORDER BY array_position(i.indkey::int2[], a.attnum)",
                    (target.as_string(conn),),
                )
                key_columns = [r[0] for r in await cur.fetchall()]
                arguments = sql.SQL(", ").join(
                    sql.Literal(a) for a in [self.ordering, *key_columns]
                )
                await conn.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(self._trigger(), target)
                )
                await conn.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW"
                        " EXECUTE FUNCTION {}.capture_row({})"
                    ).format(self._trigger(), target, self._s, arguments)
                )

        await self._run(work)

    async def unwatch(self, table: str, schema: str) -> None:
        target = sql.Identifier(
            check_identifier("schema", schema), check_identifier("table", table)
        )
        await self._run(
            lambda conn: conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(self._trigger(), target)
            )
        )

    def _trigger(self) -> sql.Identifier:
        return sql.Identifier(f"{self.schema}_capture")

    # -- delivery -----------------------------------------------------------------

    async def claim(
        self, owner: str, now: float, due_before: float, limit: int, lease_grace: float
    ) -> list[ClaimedDelivery]:
        if time.monotonic() - self._swept_at > self.sweep_interval:
            self._swept_at = time.monotonic()
            await self._release_stranded()
        rows = await self._fetch(
            "SELECT * FROM {s}.claim(%s, %s, %s, %s, %s)",
            (owner, now, due_before, limit, lease_grace),
        )
        rows.sort(key=lambda row: row["n"])
        return [
            claimed_from_row(row, headers=row["headers"], attempt=row["attempts"]) for row in rows
        ]

    async def _release_stranded(self) -> None:
        """Let go a change left waiting with no unfinished change of its row ahead of it.

        A change captured while the delivery ahead of it was finishing can miss that
        delivery's hand-over; this catches it. One worker at a time runs it.
        """
        await self._fetch(
            "WITH lock AS (SELECT pg_try_advisory_xact_lock(hashtextextended(%s, 0)) AS held),"
            " heads AS ("
            "  SELECT DISTINCT ON (b.webhook_id, b.row_key) b.seq, b.webhook_id, b.row_key"
            "  FROM {s}.deliveries AS b, lock"
            f"  WHERE lock.held AND b.blocked AND b.{_UNFINISHED} AND b.row_key IS NOT NULL"
            "  ORDER BY b.webhook_id, b.row_key, b.seq)"
            " UPDATE {s}.deliveries AS d SET blocked = false FROM heads"
            " WHERE d.seq = heads.seq AND NOT EXISTS ("
            "  SELECT 1 FROM {s}.deliveries AS a WHERE a.webhook_id = heads.webhook_id"
            f"  AND a.row_key = heads.row_key AND a.{_UNFINISHED} AND NOT a.blocked)",
            (f"fluxbase_sender.sweep:{self.schema}",),
        )

    async def record_attempts(self, records: Sequence[AttemptRecord]) -> list[AttemptOutcome]:
        if not records:
            return []
        rows = await self._fetch(_RECORD_ATTEMPTS, (_attempt_rows(records), _webhook_rows(records)))
        won = set(rows[0]["won"])
        outcomes: list[AttemptOutcome] = []
        for record in records:
            if record.result.ok:
                outcomes.append("success" if record.delivery_id in won else "superseded")
            else:
                outcomes.append("refused" if record.result.refused else "failed")
        return outcomes

    async def next_due(self) -> float | None:
        rows = await self._fetch(
            f"SELECT min(next_attempt_at) AS due FROM {{s}}.deliveries WHERE {_UNFINISHED}"
            " AND NOT blocked AND NOT paused"
        )
        due: float | None = rows[0]["due"]
        return due

    async def backlog(self) -> int:
        rows = await self._fetch(f"SELECT count(*) AS n FROM {{s}}.deliveries WHERE {_UNFINISHED}")
        count: int = rows[0]["n"]
        return count

    async def wait_for_work(self, timeout: float) -> None:
        if self._woken is None:
            raise RuntimeError("open the store first")
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), timeout)
        self._woken.clear()

    def wake(self) -> None:
        if self._loop is not None and self._woken is not None:
            self._loop.call_soon_threadsafe(self._woken.set)

    async def _listen(self) -> None:
        """Hold a ``LISTEN`` connection, reconnecting when it is lost (polling meanwhile)."""
        assert self._woken is not None
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.database_url, **self._connection_options()
                )
                async with conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.schema)))
                    self._woken.set()  # anything sent while not listening is found now
                    delay = 0.1
                    async for _ in conn.notifies():
                        self._woken.set()
            except psycopg.Error as error:
                logger.warning("sender LISTEN connection lost (%s); reconnecting", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    # -- history ------------------------------------------------------------------

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM {{s}}.deliveries AS d"
            " JOIN {s}.events AS e ON e.id = d.event_id WHERE d.id = %s",
            (delivery_id,),
        )
        return delivery_from_row(rows[0]) if rows else None

    async def list_deliveries(
        self, webhook_id: str | None, limit: int, offset: int
    ) -> list[Delivery]:
        where = "WHERE d.webhook_id = %s" if webhook_id else ""
        params = [webhook_id] if webhook_id else []
        rows = await self._fetch(
            f"SELECT {_DELIVERY_COLUMNS} FROM {{s}}.deliveries AS d"
            f" JOIN {{s}}.events AS e ON e.id = d.event_id {where}"
            " ORDER BY d.seq DESC LIMIT %s OFFSET %s",
            (*params, limit, offset),
        )
        return [delivery_from_row(row) for row in rows]

    async def list_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        rows = await self._fetch(
            "SELECT id, delivery_id, attempt, outcome, response_status, response_body, error,"
            " duration_ms, started_at FROM {s}.attempts WHERE delivery_id = %s ORDER BY id",
            (delivery_id,),
        )
        return [
            DeliveryAttempt.model_validate({**row, "started_at": unix_datetime(row["started_at"])})
            for row in rows
        ]

    async def redeliver(self, delivery_id: str, now: float) -> str | None:
        new_id = str(uuid.uuid4())
        rows = await self._fetch(
            "WITH queued AS (INSERT INTO {s}.deliveries (id, webhook_id, event_id, paused, status,"
            " created_at, next_attempt_at) SELECT %s, d.webhook_id, d.event_id, NOT w.enabled,"
            " 'pending', %s, %s FROM {s}.deliveries AS d JOIN {s}.webhooks AS w"
            " ON w.id = d.webhook_id WHERE d.id = %s RETURNING id)"
            " SELECT id, pg_notify({channel}, '') FROM queued",
            (new_id, now, now, delivery_id),
        )
        return new_id if rows else None

    async def recover(self, since: float, now: float) -> int:
        rows = await self._fetch(
            "WITH recovered AS (UPDATE {s}.deliveries AS d SET status = 'pending',"
            " attempts = 0, in_progress_answers = 0, next_attempt_at = %s, lease_owner = NULL,"
            " blocked = false, paused = NOT w.enabled FROM {s}.webhooks AS w"
            " WHERE w.id = d.webhook_id AND d.status = 'failed' AND d.created_at >= %s"
            " RETURNING d.id)"
            " SELECT count(*) AS n, pg_notify({channel}, '') FROM recovered",
            (now, since),
        )
        count: int = rows[0]["n"]
        return count

    async def prune(self, before: float) -> int:
        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            async with conn.transaction():
                cur = await conn.execute(
                    self._sql(
                        "DELETE FROM {s}.deliveries WHERE status IN ('success', 'failed')"
                        " AND created_at < %s RETURNING event_id"
                    ),
                    (before,),
                )
                pruned = await cur.fetchall()
                await self._drop_orphan_events(conn, sorted({row[0] for row in pruned}))
                return len(pruned)

        return await self._run(work)


_RECORD_ATTEMPTS = """
SELECT {s}.record_attempts(a.id, a.owner, a.attempt, a.ok, a.status, a.next_at, a.counted,
    a.refused, a.response_status, a.body, a.error, a.duration_ms, a.started_at,
    h.id, h.reset, h.failing_since, h.reason) AS won
FROM (
    SELECT array_agg(id) AS id, array_agg(owner) AS owner, array_agg(attempt) AS attempt,
        array_agg(ok) AS ok, array_agg(status) AS status, array_agg(next_at) AS next_at,
        array_agg(counted) AS counted, array_agg(refused) AS refused,
        array_agg(response_status) AS response_status, array_agg(body) AS body,
        array_agg(error) AS error, array_agg(duration_ms) AS duration_ms,
        array_agg(started_at) AS started_at
    FROM json_to_recordset(%s::json) AS r(id text, owner text, attempt integer, ok boolean,
        status text, next_at float8, counted boolean, refused boolean, response_status integer,
        body text, error text, duration_ms float8, started_at float8)
) AS a, (
    SELECT array_agg(id) AS id, array_agg(reset) AS reset,
        array_agg(failing_since) AS failing_since, array_agg(reason) AS reason
    FROM json_to_recordset(%s::json) AS h(id text, reset boolean, failing_since float8,
        reason text)
) AS h"""
"""One batch of attempts in one round trip: its rows, then its webhooks' changes, each
sent as one JSON text (one ``json.dumps``, much cheaper to make than an array per
column) and turned into the function's arrays, in the batch's order, by the server."""


def _attempt_rows(records: Sequence[AttemptRecord]) -> str:
    return json.dumps(
        [
            {
                "id": r.delivery_id,
                "owner": r.owner,
                "attempt": r.attempt,
                "ok": r.result.ok,
                "status": r.decision.status,
                "next_at": r.decision.next_attempt_at,
                "counted": r.decision.counted,
                "refused": r.result.refused,
                "response_status": r.result.status,
                "body": None if r.result.body is None else r.result.body[:MAX_STORED_BODY],
                "error": r.result.error,
                "duration_ms": r.result.duration_ms,
                "started_at": r.started_at,
            }
            for r in records
        ],
        ensure_ascii=False,
    )


def _webhook_rows(records: Sequence[AttemptRecord]) -> str:
    return json.dumps(
        [
            {"id": webhook_id, "reset": reset, "failing_since": since, "reason": reason}
            for webhook_id, reset, since, reason in webhook_changes(records)
        ],
        ensure_ascii=False,
    )


def _webhook_values(spec: WebhookSpec) -> tuple[Any, ...]:
    fields = spec.fields()
    return (
        fields["name"],
        fields["description"],
        fields["url"],
        fields["secret"],
        fields["enabled"],
        json.dumps(fields["events"]),
        fields["max_retries"],
        fields["timeout_seconds"],
        fields["retry_backoff_seconds"],
        json.dumps(fields["headers"]),
        fields["scope"],
    )


def _webhook(row: dict[str, Any]) -> Webhook:
    data = dict(row)
    data.pop("failing_since")
    data["created_at"] = unix_datetime(data["created_at"])
    data["updated_at"] = unix_datetime(data["updated_at"])
    return Webhook.model_validate(data)
