"""The sender on the real PostgreSQL: migrations, triggers, the outbox, wake-ups, lost
connections, and worker processes sharing (and taking over) the work.

Every test works in schemas of its own (random names), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest

from fluxbase_receiver.sender.postgres import MIGRATIONS, PostgresStore
from fluxbase_receiver.sender.worker import Worker
from tests.sender.receivers import SECRET, ScriptedReceiver, serving
from tests.sender.stores import change, claim_all, make_hook, postgres_store, unique_schema
from tests.servers import ROOT

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(postgres_url: str) -> AsyncIterator[PostgresStore]:
    async with postgres_store(postgres_url) as opened:
        yield opened


@pytest.fixture
def app_schema(postgres_url: str) -> Iterator[str]:
    """A schema for the application's own tables."""
    name = f"app_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        try:
            yield name
        finally:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


async def payloads(store: PostgresStore) -> list[dict[str, Any]]:
    deliveries = await store.list_deliveries(None, 1000, 0)
    return [d.payload for d in reversed(deliveries) if d.payload is not None]


# -- schema and migrations --------------------------------------------------------------


async def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    schema = unique_schema()
    stores = [PostgresStore(postgres_url, schema=schema) for _ in range(6)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        rows = await stores[0]._fetch("SELECT version FROM {s}.migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
        await stores[1].open()  # and once more, with nothing left to apply
    finally:
        await stores[0].drop()
        for opened in stores:
            await opened.close()


# -- capture by trigger -----------------------------------------------------------------


async def test_watch_captures_rows_inside_the_writers_transaction(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    await make_hook(store)
    table = f"{app_schema}.orders"
    execute(postgres_url, f"CREATE TABLE {table} (id bigint PRIMARY KEY, item text, qty numeric)")
    await store.watch("orders", schema=app_schema)
    execute(
        postgres_url,
        f"INSERT INTO {table} VALUES (1, 'book', 12345678901234567890.000000001)",
        f"UPDATE {table} SET qty = 2 WHERE id = 1",
        f"DELETE FROM {table} WHERE id = 1",
    )
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (2, 'rolled back', 1)")
        conn.rollback()

    first, second, third = await payloads(store)
    assert (first["event"], first["schema"], first["table"]) == ("INSERT", app_schema, "orders")
    assert first["record"] == {"id": 1, "item": "book", "qty": 12345678901234567890.000000001}
    assert first["old_record"] is None
    assert second["event"] == "UPDATE" and second["record"]["qty"] == 2
    assert second["old_record"]["item"] == "book"
    assert third["event"] == "DELETE" and third["record"] == third["old_record"]
    assert third["record"]["id"] == 1

    await store.unwatch("orders", schema=app_schema)
    execute(postgres_url, f"INSERT INTO {table} VALUES (3, 'unwatched', 1)")
    assert len(await payloads(store)) == 3


async def test_each_captured_row_reads_only_its_own_rows_index_entries(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    """The ordering check of a captured change looks up the pending changes of its own row
    alone, so a transaction's ten-thousandth change costs what its first did. (The trigger
    passes ``name`` values, of collation "C": compared under it, the row key could not use
    the index, and each change read every pending delivery.)"""
    await make_hook(store)
    table = f"{app_schema}.orders"
    execute(postgres_url, f"CREATE TABLE {table} (id bigint PRIMARY KEY, item text)")
    await store.watch("orders", schema=app_schema)
    rows = 500
    with psycopg.connect(postgres_url) as conn:
        conn.execute(f"INSERT INTO {table} SELECT n, 'book' FROM generate_series(1, {rows}) n")
        found = conn.execute(  # the index entries this transaction's scans read
            "SELECT pg_stat_get_xact_tuples_returned(to_regclass(%s))",
            (f"{store.schema}.deliveries_row",),
        ).fetchone()
        conn.commit()
    assert found is not None
    assert found[0] < rows  # one lookup per change, each finding nothing pending (not ~rows²/2)
    assert len(await store.list_deliveries(None, 1000, 0)) == rows


async def test_numbers_keep_every_digit(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    await make_hook(store)
    execute(postgres_url, f"CREATE TABLE {app_schema}.n (id int PRIMARY KEY, v numeric)")
    await store.watch("n", schema=app_schema)
    execute(postgres_url, f"INSERT INTO {app_schema}.n VALUES (1, 0.1000000000000000000000001)")
    (delivery,) = await store.list_deliveries(None, 10, 0)
    (claimed,) = await claim_all(store)
    assert claimed.event.record is not None
    assert "0.1000000000000000000000001" in claimed.event.record
    assert delivery.event == "INSERT"


async def test_schema_qualified_patterns_match_only_their_schema(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    other = f"{app_schema}_b"
    execute(postgres_url, f"CREATE SCHEMA {other}")
    try:
        mine = await make_hook(store, name="mine", events=[{"table": f"{app_schema}.items"}])
        anywhere = await make_hook(store, name="anywhere", events=[{"table": "items"}])
        for schema in (app_schema, other):
            execute(postgres_url, f"CREATE TABLE {schema}.items (id int PRIMARY KEY)")
            await store.watch("items", schema=schema)
            execute(postgres_url, f"INSERT INTO {schema}.items VALUES (1)")
        mine_sees = [d.schema_name for d in await store.list_deliveries(mine.id, 10, 0)]
        anywhere_sees = [d.schema_name for d in await store.list_deliveries(anywhere.id, 10, 0)]
        assert mine_sees == [app_schema]
        assert sorted(anywhere_sees) == sorted([app_schema, other])
    finally:
        execute(postgres_url, f"DROP SCHEMA {other} CASCADE")


async def test_tables_without_an_id_column(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    await make_hook(store)
    execute(
        postgres_url,
        f"CREATE TABLE {app_schema}.codes (region text, code text, label text,"
        " PRIMARY KEY (region, code))",
        f"CREATE TABLE {app_schema}.log (line text)",
    )
    await store.watch("codes", schema=app_schema)
    await store.watch("log", schema=app_schema)
    execute(
        postgres_url,
        f"INSERT INTO {app_schema}.codes VALUES ('eu', 'a', 'x'), ('eu', 'b', 'y')",
        f"UPDATE {app_schema}.codes SET label = 'z' WHERE code = 'a'",
        f"INSERT INTO {app_schema}.log VALUES ('one'), ('two')",
    )
    events = [(p["table"], p["event"], p["record"]) for p in await payloads(store)]
    assert events == [
        ("codes", "INSERT", {"region": "eu", "code": "a", "label": "x"}),
        ("codes", "INSERT", {"region": "eu", "code": "b", "label": "y"}),
        ("codes", "UPDATE", {"region": "eu", "code": "a", "label": "z"}),
        ("log", "INSERT", {"line": "one"}),
        ("log", "INSERT", {"line": "two"}),
    ]
    claimable = [(c.event.table, c.event.event, c.event.record) for c in await claim_all(store)]
    assert [c[:2] for c in claimable] == [
        ("codes", "INSERT"),
        ("codes", "INSERT"),
        ("log", "INSERT"),
    ]
    assert '"one"' in (claimable[2][2] or ""), "no key: the whole table in order"


async def test_watch_refuses_a_missing_table(store: PostgresStore, app_schema: str) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        await store.watch("nothing_here", schema=app_schema)


# -- the outbox -------------------------------------------------------------------------


async def test_emit_joins_the_callers_transaction(store: PostgresStore, postgres_url: str) -> None:
    await make_hook(store)
    with psycopg.connect(postgres_url) as conn:
        assert store.capture(change(record={"id": 1}), conn)
        conn.rollback()
        (kept,) = store.capture(change(record={"id": 2}), conn)
        assert await store.get_delivery(kept) is None, "not visible before the commit"
        conn.commit()
    async with await psycopg.AsyncConnection.connect(postgres_url) as aconn:
        await store.add_event(change(record={"id": 3}), aconn)
        await aconn.rollback()
        await store.add_event(change(record={"id": 4}), aconn)
        await aconn.commit()
    assert [p["record"]["id"] for p in await payloads(store)] == [2, 4]
    with pytest.raises(TypeError):
        await store.add_event(change(), connection=object())
    with pytest.raises(TypeError), psycopg.connect(postgres_url) as conn:
        await store.add_event(change(), conn)
    with pytest.raises(TypeError):
        store.capture(change(), object())


# -- wake-ups and lost connections ------------------------------------------------------


async def test_a_commit_elsewhere_wakes_a_waiting_worker(
    store: PostgresStore, postgres_url: str
) -> None:
    await make_hook(store)
    await store.wait_for_work(timeout=0)  # starts listening
    listen = f'LISTEN "{store.schema}"'
    deadline = time.monotonic() + 30
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        while not conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE query = %s AND state = 'idle'", (listen,)
        ).fetchall():
            assert time.monotonic() < deadline, "the store is not listening"
            await asyncio.sleep(0.02)
    await store.wait_for_work(timeout=0.1)  # the wake-up that follows every (re)connection
    waiting = asyncio.create_task(store.wait_for_work(timeout=300))
    with psycopg.connect(postgres_url) as conn:
        store.capture(change(), conn)
    await asyncio.wait_for(waiting, 60)


async def terminate(postgres_url: str, schema: str) -> int:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"fluxbase-sender/{schema}",),
        ).fetchall()
    return len(rows)


async def test_terminated_connections_are_survived(store: PostgresStore, postgres_url: str) -> None:
    target = ScriptedReceiver(SECRET)
    with serving(target) as url:
        hook = await make_hook(store, url=url, secret=SECRET, timeout_seconds=5)
        worker = Worker(store, concurrency=4, poll_interval=0.1, allow_private_networks=True)
        serving_task = asyncio.create_task(worker.serve())
        try:
            for round_ in range(5):
                for i in range(20):
                    await store.add_event(change(record={"id": f"{round_}-{i}"}))
                await asyncio.sleep(0.05)
                assert await terminate(postgres_url, store.schema) >= 1
            deadline = time.monotonic() + 60
            while len(target.events) < 100:
                assert time.monotonic() < deadline, "not delivered after the connections died"
                await asyncio.sleep(0.05)
            while await store.backlog():
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await asyncio.wait_for(serving_task, 30)
    deliveries = await store.list_deliveries(hook.id, 1000, 0)
    assert len(deliveries) == 100 and {d.status for d in deliveries} == {"success"}
    assert set(target.handled.values()) == {1}


# -- worker processes -------------------------------------------------------------------


def start_worker(url: str, schema: str) -> subprocess.Popen[bytes]:
    """``fluxbase-receiver sender worker`` on the test's schema."""
    command = [sys.executable, "-m", "fluxbase_receiver.cli", "sender", "worker"]
    options = ["--database-url", url, "--schema", schema, "--allow-private-networks"]
    tuning = ["--poll-interval", "0.2", "--lease-grace", "1"]
    return subprocess.Popen([*command, *options, *tuning], cwd=ROOT)


async def run_workers(
    store: PostgresStore, postgres_url: str, app_schema: str, *, kill_one: bool
) -> None:
    changes = 10_000
    target = ScriptedReceiver(SECRET)
    with serving(target) as url:
        hook = await make_hook(
            store, url=url, secret=SECRET, timeout_seconds=2, retry_backoff_seconds=0.1
        )
        execute(postgres_url, f"CREATE TABLE {app_schema}.orders (id bigint PRIMARY KEY, n int)")
        await store.watch("orders", schema=app_schema)
        execute(
            postgres_url,
            f"INSERT INTO {app_schema}.orders SELECT i, i FROM generate_series(1, {changes}) i",
        )
        workers = [start_worker(postgres_url, store.schema) for _ in range(4)]
        try:
            deadline = time.monotonic() + 240
            if kill_one:
                while len(target.events) < changes // 5:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                workers[0].send_signal(signal.SIGKILL)
                assert workers[0].wait(10) == -signal.SIGKILL
            while await store.backlog():
                assert time.monotonic() < deadline, "deliveries still pending"
                await asyncio.sleep(0.2)
        finally:
            for process in workers[1:] if kill_one else workers:
                process.send_signal(signal.SIGTERM)
            codes = [p.wait(30) for p in workers]
    assert codes[1:] == [0, 0, 0] and codes[0] == (-signal.SIGKILL if kill_one else 0)

    rows = await store._fetch(
        "SELECT d.status, count(a.id) FILTER (WHERE a.outcome = 'success') AS successes"
        " FROM {s}.deliveries AS d LEFT JOIN {s}.attempts AS a ON a.delivery_id = d.id"
        " WHERE d.webhook_id = %s GROUP BY d.id, d.status",
        (hook.id,),
    )
    assert len(rows) == changes, "one delivery per change, none lost"
    assert Counter((r["status"], r["successes"]) for r in rows) == {("success", 1): changes}
    assert len(target.handled) == changes and set(target.handled.values()) == {1}
    ids = sorted(int(e.record["id"]) for e in target.events)  # type: ignore[index]
    assert ids == list(range(1, changes + 1))


async def test_four_worker_processes_share_ten_thousand_changes(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    await run_workers(store, postgres_url, app_schema, kill_one=False)


async def test_a_killed_worker_process_is_taken_over(
    store: PostgresStore, postgres_url: str, app_schema: str
) -> None:
    await run_workers(store, postgres_url, app_schema, kill_one=True)


async def test_a_change_stranded_behind_a_finished_one_is_released(postgres_url: str) -> None:
    """A change captured while the one ahead of it finished can miss the hand-over."""
    async with postgres_store(postgres_url, sweep_interval=0) as store:
        await make_hook(store)
        await store.add_event(change("INSERT"))
        (waiting,) = await store.add_event(change("UPDATE"))
        await store._fetch(  # the head finishes without handing over, as in the race
            "UPDATE {s}.deliveries SET status = 'success' WHERE id <> %s", (waiting,)
        )
        (released,) = await claim_all(store)
        assert released.delivery_id == waiting


def test_the_sender_runs_on_postgresql(postgres_url: str, app_schema: str) -> None:
    """The facade end to end: watch, the outbox, deliveries, history, the worker."""
    from fluxbase_receiver.sender import Sender

    target = ScriptedReceiver(SECRET)
    with serving(target) as url:
        sender = Sender(postgres_url, schema=unique_schema(), allow_private_networks=True)
        try:
            hook = sender.webhooks.create(
                name="pg", url=url, secret=SECRET, events=[{"table": "*"}]
            )
            execute(postgres_url, f"CREATE TABLE {app_schema}.orders (id int PRIMARY KEY, n int)")
            sender.watch("orders", schema=app_schema)
            with sender.connect() as app:
                app.execute(f"INSERT INTO {app_schema}.orders VALUES (1, 1)")
                sender.emit(
                    "UPDATE", "orders", {"id": 1, "n": 2}, schema=app_schema, connection=app
                )
            with sender.connect() as app:
                app.execute(f"INSERT INTO {app_schema}.orders VALUES (2, 1)")
                app.rollback()

            async def emit_in_a_transaction_rolled_back() -> None:
                async with await psycopg.AsyncConnection.connect(postgres_url) as aconn:
                    await sender.emit_async("DELETE", "orders", {"id": 1}, connection=aconn)
                    await aconn.rollback()

            asyncio.run(emit_in_a_transaction_rolled_back())
            assert sender.deliver_pending().succeeded == 2, "the UPDATE goes once the INSERT did"
            assert [(e.event, e.record["id"]) for e in target.events] == [  # type: ignore[index]
                ("INSERT", 1),
                ("UPDATE", 1),
            ]
            (latest, first) = sender.webhooks.get_deliveries(hook.id)
            assert {first.status, latest.status} == {"success"}
            again = sender.redeliver(first.id)
            assert sender.webhooks.test(hook.id).success
            assert sender.deliver_pending().succeeded == 1
            assert sender.get_delivery(again.id).status == "success"
            assert sender.next_due() is None
        finally:
            sender._call(sender.store.drop())  # type: ignore[attr-defined]
            sender.close()
