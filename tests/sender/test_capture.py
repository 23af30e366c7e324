"""Capture: emit in the caller's transaction (outbox), SQLite triggers, fan-out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from fluxbase_receiver import DeleteEvent, InsertEvent, UpdateEvent
from fluxbase_receiver.sender import Sender, Webhook
from tests.sender.conftest import make_webhook
from tests.sender.receivers import ScriptedReceiver


@pytest.fixture
def app_db(sender: Sender) -> sqlite3.Connection:
    db = sender.connect()
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT, qty INTEGER, photo BLOB)")
    return db


def test_rolled_back_outbox_rows_are_never_sent(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    make_webhook(sender, hook_url)
    db = sqlite3.connect(sender.store.path)  # the application's own connection
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    db.execute("INSERT INTO orders VALUES (1, 'lost')")
    assert sender.emit("INSERT", "orders", {"id": 1, "item": "lost"}, connection=db)
    db.rollback()
    db.execute("INSERT INTO orders VALUES (2, 'kept')")
    sender.emit("INSERT", "orders", {"id": 2, "item": "kept"}, connection=db)
    db.commit()

    assert sender.deliver_pending().succeeded == 1
    assert [e.record for e in target.events] == [{"id": 2, "item": "kept"}]
    assert sender.deliver_pending().attempted == 0


def test_triggers_capture_insert_update_delete_with_old_rows(
    sender: Sender, app_db: sqlite3.Connection, target: ScriptedReceiver, hook_url: str
) -> None:
    make_webhook(sender, hook_url, events=[{"table": "orders"}])
    sender.watch("orders")
    app_db.execute("INSERT INTO orders VALUES (1, 'book', 1, x'00ff')")
    app_db.execute("UPDATE orders SET qty = 3 WHERE id = 1")
    app_db.execute("DELETE FROM orders WHERE id = 1")
    sender.deliver_pending()

    by_kind = {type(event).__name__.split("[")[0]: event for event in target.events}
    row = {"id": 1, "item": "book", "qty": 1, "photo": "00FF"}
    insert, update, delete = by_kind["InsertEvent"], by_kind["UpdateEvent"], by_kind["DeleteEvent"]
    assert isinstance(insert, InsertEvent) and insert.record == row and insert.old_record is None
    assert isinstance(update, UpdateEvent) and update.old_record == row
    assert update.changes == {"qty": (1, 3)}
    assert isinstance(delete, DeleteEvent) and delete.row == {**row, "qty": 3}
    assert all(e.schema_name == "public" and e.table == "orders" for e in target.events)


def test_a_rolled_back_write_to_a_watched_table_is_never_sent(
    sender: Sender, app_db: sqlite3.Connection, target: ScriptedReceiver, hook_url: str
) -> None:
    make_webhook(sender, hook_url)
    sender.watch("orders")
    app_db.execute("BEGIN")
    app_db.execute("INSERT INTO orders (item) VALUES ('never')")
    app_db.execute("ROLLBACK")
    assert sender.deliver_pending().attempted == 0
    assert target.requests == []


def test_unwatch_removes_the_triggers_and_watch_follows_alter_table(
    sender: Sender, app_db: sqlite3.Connection, target: ScriptedReceiver, hook_url: str
) -> None:
    make_webhook(sender, hook_url)
    sender.watch("orders")
    sender.unwatch("orders")
    app_db.execute("INSERT INTO orders (item) VALUES ('unseen')")
    assert sender.deliver_pending().attempted == 0

    app_db.execute("ALTER TABLE orders ADD COLUMN note TEXT")
    sender.watch("orders")
    sender.watch("orders")  # idempotent
    app_db.execute("INSERT INTO orders (item, note) VALUES ('seen', 'fragile')")
    assert sender.deliver_pending().succeeded == 1
    (event,) = target.events
    assert event.record["note"] == "fragile"


def test_wide_tables_are_captured_whole(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    make_webhook(sender, hook_url)
    db = sender.connect()
    columns = [f"c{i}" for i in range(150)]
    db.execute(f"CREATE TABLE wide ({', '.join(c + ' INTEGER' for c in columns)})")
    sender.watch("wide")
    db.execute(f"INSERT INTO wide VALUES ({', '.join(str(i) for i in range(150))})")
    sender.deliver_pending()
    (event,) = target.events
    assert event.record == {c: i for i, c in enumerate(columns)}


def test_fan_out_matches_tables_operations_and_enabled_webhooks(
    sender: Sender, target: ScriptedReceiver, hook_url: str
) -> None:
    every = make_webhook(sender, hook_url, name="every", events=[{"table": "*"}])
    inserts = make_webhook(
        sender, hook_url, name="inserts", events=[{"table": "orders", "operations": ["insert"]}]
    )
    audit = make_webhook(sender, hook_url, name="audit", events=[{"table": "audit.*"}])
    off = make_webhook(sender, hook_url, name="off", enabled=False)

    def targets(*args: object, **kwargs: object) -> set[str]:
        ids = sender.emit(*args, **kwargs)  # type: ignore[arg-type]
        return {sender.get_delivery(i).webhook_id for i in ids}

    assert targets("INSERT", "orders", {"id": 1}) == {every.id, inserts.id}
    assert targets("UPDATE", "orders", {"id": 1}) == {every.id}
    assert targets("DELETE", "logins", {"id": 1}, schema="audit") == {every.id, audit.id}
    assert off.id not in {d.webhook_id for d in sender.get_deliveries()}
    sender.webhooks.update(every.id, enabled=False)
    sender.webhooks.update(audit.id, enabled=False)
    assert targets("UPDATE", "orders", {"id": 1}) == set()


def test_emit_refuses_bad_arguments(sender: Sender) -> None:
    with pytest.raises(ValueError, match="event must be one of"):
        sender.emit("TRUNCATE", "orders", {})
    with pytest.raises(ValueError, match="TEST events"):
        sender.emit("TEST", "orders", {})
    with pytest.raises(ValueError, match="table must be a plain identifier"):
        sender.emit("INSERT", "orders; DROP TABLE x", {})
    with pytest.raises(ValueError, match="does not exist"):
        sender.watch("missing")


def test_emit_async_from_any_event_loop(sender: Sender, webhook: Webhook) -> None:
    async def emit() -> list[str]:
        return await sender.emit_async("INSERT", "orders", {"id": 5})

    (delivery_id,) = asyncio.run(emit())
    assert sender.get_delivery(delivery_id).webhook_id == webhook.id


def test_a_schema_is_for_postgresql_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="postgresql"):
        Sender(f"sqlite:///{tmp_path}/app.db", schema="elsewhere")
