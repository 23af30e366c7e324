"""Sender throughput and latency, captured change to received, on SQLite and PostgreSQL.

Rows are written to a watched table (the trigger captures them); worker processes
(``fluxbase-receiver sender worker``) deliver them to a loopback receiver (this
package's ``Receiver`` behind the Starlette adapter, uvicorn, in a child process) that
notes when each row arrived. Printed per configuration:

* deliveries/s: one transaction of ``--events`` rows, from its commit to the last
  receipt, and as a fraction of the ceiling;
* p50 / p99 latency, commit to receipt, with rows committed five per transaction at
  half that throughput;
* capture µs/row: what the trigger adds to the writer, the one big transaction's time
  per row, from its first statement to its commit;

beside the ceiling: the same receiver measured alone in the same run, just before, by
an aiohttp client posting pre-signed bodies with the workers' concurrency. Each
configuration is measured ``--rounds`` times; the round closest to the ceiling is shown.

    python bench/sender.py [--events 5000] [--concurrency 16] [--rounds 3] [--postgres-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret"
PER_TRANSACTION = 5


def receiver_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from fluxbase_receiver import Receiver
    from fluxbase_receiver.adapters.starlette import webhook_endpoint

    receiver = Receiver(SECRET)
    received: dict[str, float] = {}

    @receiver.on("*", threaded=False)
    def handle(event) -> None:  # type: ignore[no-untyped-def]
        received[str((event.record or {}).get("id"))] = time.time()

    async def stats(request):  # type: ignore[no-untyped-def]
        if request.method == "DELETE":
            received.clear()
        return JSONResponse(received)

    return Starlette(
        routes=[
            Route("/hook", webhook_endpoint(receiver), methods=["POST"]),
            Route("/stats", stats, methods=["GET", "DELETE"]),
        ]
    )


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(ROOT))
    from tests.servers import free_port, wait_for_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}"


def receipts(base: str, clear: bool = False) -> dict[str, float]:
    request = urllib.request.Request(f"{base}/stats", method="DELETE" if clear else "GET")
    with urllib.request.urlopen(request) as response:
        found: dict[str, float] = json.loads(response.read())
        return found


async def ceiling(base: str, count: int, concurrency: int) -> float:
    """The receiver alone: pre-signed bodies posted by an aiohttp client."""
    import aiohttp

    from fluxbase_receiver.sender.capture import new_event, wire_body
    from fluxbase_receiver.sender.delivery import signed_headers

    payloads = []
    for i in range(count):
        event = new_event("INSERT", "orders", {"id": f"c{i}"}, None, "public", time.time())
        body = wire_body(event, "bench")
        payloads.append((body, signed_headers(body, SECRET, event.id, 1, {})))
    queue = iter(payloads)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def post_all() -> None:
            for body, headers in queue:
                async with http.post(f"{base}/hook", data=body, headers=headers) as response:
                    await response.read()
                    assert response.status == 200

        started = time.perf_counter()
        await asyncio.gather(*(post_all() for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


def start_workers(
    url: str, count: int, concurrency: int, schema: str | None
) -> list[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "fluxbase_receiver.cli", "sender", "worker"]
    options = ["--database-url", url, "--concurrency", str(concurrency), "--allow-private-networks"]
    if schema:
        options += ["--schema", schema]
    return [
        subprocess.Popen([*command, *options], cwd=ROOT, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]


def wait_for(base: str, keys: list[str]) -> dict[str, float]:
    while True:
        got = receipts(base)
        if all(k in got for k in keys):
            return got
        time.sleep(0.05)


def measure(
    base: str, write: Callable[[list[str]], None], count: int
) -> tuple[float, float, float, float]:
    """Throughput of one big transaction, then latency at half of it; and the writer's
    time per row in that transaction."""
    receipts(base, clear=True)
    bulk = [f"t{i}" for i in range(count)]
    writing = time.time()
    write(bulk)
    committed = time.time()
    capture = (committed - writing) / count * 1e6
    got = wait_for(base, bulk)
    rate = count / (max(got[k] for k in bulk) - committed)

    pace = rate / 2
    commits: dict[str, float] = {}
    transactions = max(20, int(min(count, pace * 4) / PER_TRANSACTION))
    started = time.time()
    for t in range(transactions):
        keys = [f"l{t}_{j}" for j in range(PER_TRANSACTION)]
        write(keys)
        now = time.time()
        commits.update(dict.fromkeys(keys, now))
        time.sleep(max(0.0, started + (t + 1) * PER_TRANSACTION / pace - time.time()))
    got = wait_for(base, list(commits))
    latencies = sorted((got[k] - commits[k]) * 1000 for k in commits)
    return rate, statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1], capture


async def make_webhook(store, base: str) -> None:  # type: ignore[no-untyped-def]
    from fluxbase_receiver.sender.models import WebhookSpec

    spec = WebhookSpec.parse({"name": "bench", "url": f"{base}/hook", "secret": SECRET})
    await store.create_webhook(spec, time.time())


def bench_sqlite(base: str, count: int, concurrency: int) -> tuple[float, float, float, float]:
    from fluxbase_receiver.sender.sqlite import SQLiteStore, connect

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/app.db"
        app = connect(path)
        app.execute("CREATE TABLE orders (id TEXT PRIMARY KEY, item TEXT)")

        async def prepare() -> None:
            store = SQLiteStore(path)
            await store.open()
            await make_webhook(store, base)
            await store.watch("orders", "public")
            await store.close()

        asyncio.run(prepare())

        def write(keys: list[str]) -> None:
            app.execute("BEGIN")
            app.executemany("INSERT INTO orders VALUES (?, 'book')", [(k,) for k in keys])
            app.execute("COMMIT")

        workers = start_workers(f"sqlite:///{path}", 1, concurrency, None)
        try:
            time.sleep(1.5)
            return measure(base, write, count)
        finally:
            stop(workers)
            app.close()


def bench_postgres(
    url: str, base: str, workers: int, count: int, concurrency: int
) -> tuple[float, float, float, float]:
    import psycopg

    from fluxbase_receiver.sender.postgres import PostgresStore

    schema = f"fbs_bench_{uuid.uuid4().hex[:8]}"
    table = f"public.bench_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(url, schema=schema)
    app = psycopg.connect(url, autocommit=True)
    app.execute(f"CREATE TABLE {table} (id text PRIMARY KEY, item text)")

    async def prepare() -> None:
        await store.open()
        await make_webhook(store, base)
        await store.watch(table.split(".")[1], "public")
        await store.close()

    async def drop() -> None:
        dropping = PostgresStore(url, schema=schema)
        await dropping.open()
        await dropping.drop()
        await dropping.close()

    def write(keys: list[str]) -> None:
        with app.transaction(), app.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, 'book')", [(k,) for k in keys])

    asyncio.run(prepare())
    processes = start_workers(url, workers, concurrency, schema)
    try:
        time.sleep(1.5)
        return measure(base, write, count)
    finally:
        stop(processes)
        app.execute(f"DROP TABLE {table}")
        app.close()
        asyncio.run(drop())


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(30)


def postgres_reachable(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "FLUXBASE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--rounds", type=int, default=3, help="measure each this often")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        import uvicorn

        uvicorn.run(receiver_app(), host="127.0.0.1", port=args.serve, log_level="warning")
        return
    receiver, base = start_receiver()
    configurations: list[tuple[str, Callable[[], tuple[float, float, float, float]]]] = [
        ("SQLite, 1 worker", lambda: bench_sqlite(base, args.events, args.concurrency))
    ]
    if postgres_reachable(args.postgres_url):
        for workers in (1, 4):
            configurations.append(
                (
                    f"PostgreSQL, {workers} worker{'s' if workers > 1 else ''}",
                    lambda n=workers: bench_postgres(  # type: ignore[misc]
                        args.postgres_url, base, n, args.events, args.concurrency
                    ),
                )
            )
    else:
        print(f"PostgreSQL not reachable at {args.postgres_url}: its rows are left out")
    rows = []
    try:
        asyncio.run(ceiling(base, 500, args.concurrency))  # warm up
        for label, run in configurations:
            best: tuple[float, float, float, float, float] | None = None
            for _ in range(args.rounds):
                top = asyncio.run(ceiling(base, args.events, args.concurrency))
                rate, p50, p99, capture = run()
                if best is None or rate / top > best[1] / best[0]:
                    best = (top, rate, p50, p99, capture)
            assert best is not None
            rows.append((label, best))
    finally:
        receiver.terminate()
        receiver.wait(10)
    print(
        f"{args.events} captured rows, concurrency {args.concurrency} per worker, loopback"
        f" receiver; {os.cpu_count()} cores; best of {args.rounds} rounds, each beside the"
        " receiver's ceiling measured just before it"
    )
    print(
        f"  {'':<22} {'ceiling/s':>10} {'deliveries/s':>12} {'of ceiling':>10}"
        f" {'p50 ms':>8} {'p99 ms':>8} {'capture µs/row':>14}"
    )
    for label, (top, rate, p50, p99, capture) in rows:
        print(
            f"  {label:<22} {top:10.0f} {rate:12.0f} {rate / top:10.2f} {p50:8.1f} {p99:8.1f}"
            f" {capture:14.0f}"
        )


if __name__ == "__main__":
    main()
