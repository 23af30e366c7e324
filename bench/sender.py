"""Sender throughput on SQLite, one worker, against a loopback receiver.

Prints deliveries/s for:

* ``httpx`` and ``aiohttp``: the same signed POSTs with a pooled client (the choice
  of HTTP client for the sender), concurrency as configured;
* the sender: ``emit`` N events, then one ``deliver_pending()`` pass (claim, sign,
  POST, record every attempt in SQLite), as a ratio of the raw aiohttp figure.

The receiver is this package's ``Receiver`` behind the Starlette adapter, served by
uvicorn in a child process so it does not share the worker's CPU time slice.

    python bench/sender.py [--events 2000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SECRET = "bench-secret"


def receiver_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.routing import Route

    from fluxbase_receiver import Receiver
    from fluxbase_receiver.adapters.starlette import webhook_endpoint

    receiver = Receiver(SECRET)

    @receiver.on("*", threaded=False)
    def handle(event: object) -> None:
        return None

    return Starlette(routes=[Route("/hook", webhook_endpoint(receiver))])


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(receiver_app(), host="127.0.0.1", port=port, log_level="warning")


def start_receiver() -> tuple[subprocess.Popen[bytes], str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.servers import free_port, wait_for_port

    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    wait_for_port(port)
    return process, f"http://127.0.0.1:{port}/hook"


def bodies(count: int) -> list[tuple[bytes, dict[str, str]]]:
    from fluxbase_receiver.sender.capture import new_event, wire_body
    from fluxbase_receiver.sender.delivery import signed_headers

    out = []
    for i in range(count):
        event = new_event(
            "INSERT", "orders", {"id": i, "item": "book"}, None, "public", time.time()
        )
        body = wire_body(event, "bench")
        out.append((body, signed_headers(body, SECRET, event.id, 1, {})))
    return out


async def run_limited(count: int, concurrency: int, send) -> None:  # type: ignore[no-untyped-def]
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await send(index)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def bench_httpx(url: str, payloads, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    import httpx

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, follow_redirects=False) as client:

        async def send(i: int) -> None:
            body, headers = payloads[i]
            response = await client.post(url, content=body, headers=headers, timeout=30)
            assert response.status_code == 200, response.text

        started = time.perf_counter()
        await run_limited(len(payloads), concurrency, send)
        return len(payloads) / (time.perf_counter() - started)


async def bench_aiohttp(url: str, payloads, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def send(i: int) -> None:
            body, headers = payloads[i]
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                await response.read()
                assert response.status == 200

        started = time.perf_counter()
        await run_limited(len(payloads), concurrency, send)
        return len(payloads) / (time.perf_counter() - started)


def bench_sender(url: str, count: int, concurrency: int) -> tuple[float, float]:
    from fluxbase_receiver.sender import Sender

    with tempfile.TemporaryDirectory() as tmp:
        sender = Sender(
            f"sqlite:///{tmp}/bench.db", allow_private_networks=True, concurrency=concurrency
        )
        sender.webhooks.create(name="bench", url=url, secret=SECRET, events=[{"table": "*"}])
        started = time.perf_counter()
        db = sender.connect()
        db.execute("BEGIN")
        for i in range(count):
            sender.emit("INSERT", "orders", {"id": i, "item": "book"}, connection=db)
        db.execute("COMMIT")
        captured = count / (time.perf_counter() - started)
        started = time.perf_counter()
        counts = sender.deliver_pending()
        delivered = counts.succeeded / (time.perf_counter() - started)
        assert counts.succeeded == count, counts
        sender.close()
    return captured, delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    process, url = start_receiver()
    try:
        payloads = bodies(args.events)
        asyncio.run(bench_aiohttp(url, payloads[:200], args.concurrency))  # warm up
        httpx_rate = asyncio.run(bench_httpx(url, bodies(args.events), args.concurrency))
        aiohttp_rate = asyncio.run(bench_aiohttp(url, bodies(args.events), args.concurrency))
        captured, delivered = bench_sender(url, args.events, args.concurrency)
    finally:
        process.terminate()
        process.wait(10)
    print(f"{args.events} events, concurrency {args.concurrency}, loopback receiver (uvicorn)")
    print(f"  httpx   raw POSTs      {httpx_rate:9.0f} /s")
    ratio = aiohttp_rate / httpx_rate
    print(f"  aiohttp raw POSTs      {aiohttp_rate:9.0f} /s   ({ratio:.2f}x httpx)")
    print(f"  sender  emit (outbox)  {captured:9.0f} /s")
    print(
        f"  sender  deliveries     {delivered:9.0f} /s   "
        f"({delivered / aiohttp_rate:.2f}x raw aiohttp; SQLite, one worker)"
    )


if __name__ == "__main__":
    main()
