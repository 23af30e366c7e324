"""The embedded SQLite store: schema versions, triggers and the outbox on a real file."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from fluxbase_receiver.sender.sqlite import MIGRATIONS, SQLiteStore, connect
from tests.sender.stores import answer, change, claim_all, make_hook, recorded

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "app.db")
    await opened.open()
    yield opened
    await opened.close()


async def payloads(store: SQLiteStore) -> list[dict[str, Any]]:
    deliveries = await store.list_deliveries(None, 1000, 0)
    return [d.payload for d in reversed(deliveries) if d.payload is not None]


async def test_stores_opening_together_migrate_once(tmp_path: Path) -> None:
    stores = [SQLiteStore(tmp_path / "app.db") for _ in range(5)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        with sqlite3.connect(tmp_path / "app.db") as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        await make_hook(stores[0])
        assert len(await stores[4].list_webhooks()) == 1
    finally:
        for opened in stores:
            await opened.close()


async def test_a_file_from_before_numbered_versions_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = connect(str(path))
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    now = time.time()
    db.execute(
        "INSERT INTO fluxbase_webhooks (id, name, url, secret, enabled, events, max_retries,"
        " timeout_seconds, retry_backoff_seconds, headers, created_at, updated_at)"
        " VALUES ('w', 'old', 'http://127.0.0.1:9/', 's', 1, '[{\"table\": \"*\"}]', 3, 5, 1,"
        " '{}', ?, ?)",
        (now, now),
    )
    db.execute(
        "INSERT INTO fluxbase_subscriptions VALUES ('w', '*', '*', 'INSERT')",
    )
    db.execute(
        "INSERT INTO fluxbase_events (id, event, schema_name, table_name, record, occurred_at)"
        " VALUES ('e1', 'INSERT', 'public', 'orders', '{\"id\": 1}', ?),"
        " ('e2', 'INSERT', 'public', 'orders', '{\"id\": 2}', ?)",
        (now, now),
    )
    db.execute(
        "INSERT INTO fluxbase_deliveries (id, webhook_id, event_id, status, attempts, created_at,"
        " next_attempt_at, lease_owner, lease_expires_at) VALUES"
        " ('free', 'w', 'e1', 'pending', 0, ?, ?, NULL, NULL),"
        " ('leased', 'w', 'e2', 'pending', 1, ?, ?, 'gone-worker', ?)",
        (now, now, now, now, now + 600),
    )
    db.close()

    store = SQLiteStore(path)
    await store.open()
    try:
        webhook = await store.get_webhook("w")
        assert webhook is not None and webhook.scope == "user"
        (claimed,) = await claim_all(store)
        assert claimed.delivery_id == "free"
        await store.record_attempts([recorded(claimed, answer(200))])
        assert await store.next_due() == pytest.approx(now + 600, abs=0.01), "the lease holds"
        (taken_over,) = await claim_all(store, now=now + 601)
        assert (taken_over.delivery_id, taken_over.attempt) == ("leased", 2)
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_watch_captures_rows_in_the_writers_transaction(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await make_hook(store)
    app = connect(str(tmp_path / "app.db"))
    app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, photo BLOB)")
    await store.watch("orders", "shop")
    app.execute("INSERT INTO orders VALUES (1, 'book', x'CAFE')")
    app.execute("UPDATE orders SET item = 'pen' WHERE id = 1")
    app.execute("DELETE FROM orders WHERE id = 1")
    app.execute("BEGIN")
    app.execute("INSERT INTO orders VALUES (2, 'rolled back', NULL)")
    app.execute("ROLLBACK")

    first, second, third = await payloads(store)
    assert (first["event"], first["schema"], first["table"]) == ("INSERT", "shop", "orders")
    assert first["record"] == {"id": 1, "item": "book", "photo": "CAFE"}
    assert second["old_record"]["item"] == "book" and second["record"]["item"] == "pen"
    assert third["event"] == "DELETE" and third["record"] == third["old_record"]
    assert [c.event.event for c in await claim_all(store)] == ["INSERT"], "one row, in order"

    await store.unwatch("orders", "shop")
    app.execute("INSERT INTO orders VALUES (3, 'unwatched', NULL)")
    assert len(await payloads(store)) == 3
    app.close()


async def test_tables_without_an_id_column(store: SQLiteStore, tmp_path: Path) -> None:
    await make_hook(store)
    app = connect(str(tmp_path / "app.db"))
    app.execute(
        "CREATE TABLE codes (region TEXT, code TEXT, label TEXT, PRIMARY KEY (region, code))"
    )
    app.execute("CREATE TABLE log (line TEXT)")
    await store.watch("codes", "public")
    await store.watch("log", "public")
    app.execute("INSERT INTO codes VALUES ('eu', 'a', 'x'), ('eu', 'b', 'y')")
    app.execute("UPDATE codes SET label = 'z' WHERE code = 'a'")
    app.execute("INSERT INTO log VALUES ('one'), ('two')")
    events = [(p["table"], p["event"]) for p in await payloads(store)]
    assert events == [
        ("codes", "INSERT"),
        ("codes", "INSERT"),
        ("codes", "UPDATE"),
        ("log", "INSERT"),
        ("log", "INSERT"),
    ]
    claimable = [(c.event.table, c.event.record) for c in await claim_all(store)]
    assert [table for table, _ in claimable] == ["codes", "codes", "log"]
    assert '"one"' in (claimable[2][1] or ""), "no key: the whole table in order"
    with pytest.raises(ValueError, match="does not exist"):
        await store.watch("nothing_here", "public")
    app.close()


async def test_emit_joins_the_callers_transaction(store: SQLiteStore, tmp_path: Path) -> None:
    await make_hook(store)
    app = connect(str(tmp_path / "app.db"))
    app.execute("BEGIN")
    assert store.capture(change(record={"id": 1}), app)
    app.execute("ROLLBACK")
    app.execute("BEGIN")
    store.capture(change(record={"id": 2}), app)
    app.execute("COMMIT")
    assert [p["record"]["id"] for p in await payloads(store)] == [2]
    with pytest.raises(TypeError):
        store.capture(change(), connection=object())
    with pytest.raises(TypeError):
        await store.add_event(change(), app)
    app.close()


async def test_a_commit_by_another_connection_wakes_a_waiting_worker(
    store: SQLiteStore, tmp_path: Path
) -> None:
    await make_hook(store)
    app = connect(str(tmp_path / "app.db"))
    app.execute("CREATE TABLE ticks (n INTEGER)")
    waiting = asyncio.create_task(store.wait_for_work(timeout=300))
    deadline = time.monotonic() + 60
    while not waiting.done():  # commits until the waiting worker has noticed one
        assert time.monotonic() < deadline, "the waiting worker did not notice the commits"
        app.execute("INSERT INTO ticks VALUES (1)")
        await asyncio.sleep(0.05)
    app.close()
