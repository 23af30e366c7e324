"""Requests/s through each adapter, against the same framework's bare endpoint.

Every figure is measured in this run, in process (no sockets), as this process's CPU time
(so other load on the machine does not count): ASGI apps are called with
a prepared scope and ``receive``/``send``, WSGI apps with a prepared environ, the Lambda
handler with prepared event documents. Each request carries a distinct, correctly
signed INSERT event (signing happens before timing) and the receiver runs one trivial
handler registered with ``threaded=False``, so the core does the same work everywhere.

For each adapter it prints the bare endpoint's and the adapter's requests/s, the time the
adapter adds per request (adapter - bare), the core's ``Receiver.handle`` time per request
alone, the adapter's overhead over bare framework + core (``glue``) and that overhead as a
fraction of the core's own cost. Goal: glue / handle <= 0.25.

``glue`` is adapter - (bare endpoint, then ``Receiver.handle`` (``handle_async`` for ASGI) on
the same prepared request, in the same loop): the core runs slower between framework
requests than in a loop of its own (the framework's code and data push the core's out of
the CPU caches), so ``added`` holds more than the adapter's own work. ``glue`` is negative
where the adapter skips work the bare endpoint does (Starlette's ``Request`` and
``Response`` objects; for FastAPI's ``add_webhook_route``, FastAPI's request handling too).

FastAPI has two rows against the same bare FastAPI endpoint: the plain route of
``add_webhook_route``, and the ``FluxbaseWebhook`` dependency, which also pays FastAPI's own
``Depends`` machinery (printed below the table: one no-op ``Depends`` on the bare endpoint),
so the verdict leaves that row aside.

    python bench/adapters.py [--requests 1500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from fastapi import Depends, FastAPI, Request
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from fluxbase_receiver import Receiver, sign_payload
from fluxbase_receiver.adapters.aws_lambda import lambda_handler
from fluxbase_receiver.adapters.fastapi import (
    FluxbaseWebhook,
    add_webhook_route,
    install_exception_handler,
)
from fluxbase_receiver.adapters.flask import FluxbaseWebhooks
from fluxbase_receiver.adapters.starlette import FluxbaseASGIMiddleware, webhook_endpoint
from fluxbase_receiver.adapters.wsgi import FluxbaseWSGIMiddleware

SECRET = "bench-secret"
GOAL = 0.25
PATH = "/webhooks/fluxbase"
Signed = tuple[bytes, list[tuple[str, str]]]


def signed_requests(count: int, round_no: int) -> list[Signed]:
    requests = []
    for n in range(count):
        record = {"id": n, "round": round_no, "email": f"user{n}@example.com", "name": "Ada"}
        body = json.dumps(
            {
                "event": "INSERT",
                "table": "users",
                "schema": "public",
                "record": record,
                "old_record": None,
                "timestamp": "2026-11-27T03:30:00.123456789Z",
            }
        ).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("user-agent", "Fluxbase-Webhooks/1.0"),
            ("x-fluxbase-signature", sign_payload(body, SECRET)),
        ]
        requests.append((body, headers))
    return requests


def new_receiver() -> Receiver:
    receiver = Receiver(SECRET)
    receiver.on("users", threaded=False)(lambda event: None)
    return receiver


# -- drivers: run prepared requests through an app, return seconds --------------------


def time_asgi(app: Any, requests: list[Signed], core: Receiver | None = None) -> float:
    scopes = [
        {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": PATH,
            "raw_path": PATH.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        for _, headers in requests
    ]
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def run() -> float:
        start = time.process_time()
        for scope, (body, headers) in zip(scopes, requests, strict=True):
            messages = iter(({"type": "http.request", "body": body, "more_body": False},))

            async def receive(messages: Any = messages) -> dict[str, Any]:
                return next(messages, {"type": "http.disconnect"})

            await app(scope, receive, send)
            if core is not None:
                statuses.append((await core.handle_async(body, headers)).status)
        return time.process_time() - start

    elapsed = asyncio.run(run())
    check(statuses)
    return elapsed


def time_wsgi(
    app: Callable[..., Iterable[bytes]], requests: list[Signed], core: Receiver | None = None
) -> float:
    environs = []
    for body, headers in requests:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "SCRIPT_NAME": "",
            "PATH_INFO": PATH,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in headers:
            key = name.upper().replace("-", "_")
            environ[key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"] = value
        environs.append(environ)
    statuses: list[int] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(int(status[:3]))

    start = time.process_time()
    for environ, (body, headers) in zip(environs, requests, strict=True):
        result = app(environ, start_response)
        for _ in result:
            pass
        close = getattr(result, "close", None)
        if close is not None:
            close()
        if core is not None:
            statuses.append(core.handle(body, headers).status)
    elapsed = time.process_time() - start
    check(statuses)
    return elapsed


def time_lambda(
    handler: Callable[[Any, Any], dict[str, Any]],
    requests: list[Signed],
    core: Receiver | None = None,
) -> float:
    events = [
        {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": PATH,
            "headers": dict(headers),
            "requestContext": {"http": {"method": "POST", "path": PATH}},
            "body": base64.b64encode(body).decode(),
            "isBase64Encoded": True,
        }
        for body, headers in requests
    ]
    statuses: list[int] = []
    start = time.process_time()
    for event, (body, headers) in zip(events, requests, strict=True):
        statuses.append(handler(event, None)["statusCode"])
        if core is not None:
            statuses.append(core.handle(body, headers).status)
    elapsed = time.process_time() - start
    check(statuses)
    return elapsed


def time_core(receiver: Receiver, requests: list[Signed]) -> float:
    start = time.process_time()
    statuses = [receiver.handle(body, headers).status for body, headers in requests]
    elapsed = time.process_time() - start
    check(statuses)
    return elapsed


def time_core_async(receiver: Receiver, requests: list[Signed]) -> float:
    async def run() -> list[int]:
        return [(await receiver.handle_async(body, headers)).status for body, headers in requests]

    start = time.process_time()
    statuses = asyncio.run(run())
    elapsed = time.process_time() - start
    check(statuses)
    return elapsed


def check(statuses: list[int]) -> None:
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")


# -- the apps: bare endpoints that read the body and answer 200, and the adapters -----------


async def bare_starlette_endpoint(request: Any) -> Response:
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


def bare_starlette(_: Receiver) -> Any:
    return Starlette(routes=[Route(PATH, bare_starlette_endpoint, methods=["POST"])])


def starlette_adapter(receiver: Receiver) -> Any:
    return Starlette(routes=[Route(PATH, webhook_endpoint(receiver))])


async def bare_asgi_app(scope: Any, receive: Any, send: Any) -> None:
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def bare_asgi(_: Receiver) -> Any:
    return bare_asgi_app


def asgi_middleware(receiver: Receiver) -> Any:
    return FluxbaseASGIMiddleware(bare_asgi_app, receiver)


def bare_fastapi(_: Receiver) -> Any:
    app = FastAPI()

    @app.post(PATH)
    async def hook(request: Request) -> dict[str, bool]:
        await request.body()
        return {"ok": True}

    return app


async def no_op() -> None:
    return None


def fastapi_no_op_dependency(_: Receiver) -> Any:
    """The bare endpoint behind one no-op ``Depends``: what FastAPI's dependency machinery
    costs by itself, a floor under any adapter that is a dependency."""
    app = FastAPI()

    @app.post(PATH)
    async def hook(request: Request, _: None = Depends(no_op)) -> dict[str, bool]:
        await request.body()
        return {"ok": True}

    return app


def fastapi_route(receiver: Receiver) -> Any:
    app = FastAPI()
    add_webhook_route(app, PATH, receiver)
    return app


def fastapi_dependency(receiver: Receiver) -> Any:
    app = FastAPI()
    install_exception_handler(app)
    webhook = FluxbaseWebhook(receiver)

    @app.post(PATH)
    async def hook(event: Any = webhook.depends) -> dict[str, bool]:
        return {"ok": True}

    return app


def bare_flask(_: Receiver) -> Any:
    app = Flask("bench")

    @app.post(PATH)
    def hook() -> tuple[str, int]:
        flask_request.get_data()
        return '{"ok":true}', 200

    return app


def flask_adapter(receiver: Receiver) -> Any:
    app = Flask("bench")
    FluxbaseWebhooks(app, receiver)
    return app


def bare_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json")])
    return [b'{"ok":true}']


def bare_wsgi(_: Receiver) -> Any:
    return bare_wsgi_app


def wsgi_middleware(receiver: Receiver) -> Any:
    return FluxbaseWSGIMiddleware(bare_wsgi_app, receiver)


def bare_lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    base64.b64decode(event["body"])
    return {"statusCode": 200, "headers": {"Content-Type": "application/json"}, "body": "{}"}


def bare_lambda(_: Receiver) -> Any:
    return bare_lambda_handler


def lambda_adapter(receiver: Receiver) -> Any:
    return lambda_handler(receiver)


Driver = Callable[[Any, list[Signed], Receiver | None], float]
DEPENDENCY = "FastAPI FluxbaseWebhook (Depends)"
"""The row over a floor of FastAPI's own: left out of the verdict."""
PAIRS: list[tuple[str, Driver, Callable[[Receiver], Any], Callable[[Receiver], Any]]] = [
    ("Starlette webhook_endpoint", time_asgi, bare_starlette, starlette_adapter),
    ("FluxbaseASGIMiddleware", time_asgi, bare_asgi, asgi_middleware),
    ("FastAPI add_webhook_route", time_asgi, bare_fastapi, fastapi_route),
    (DEPENDENCY, time_asgi, bare_fastapi, fastapi_dependency),
    ("Flask FluxbaseWebhooks", time_wsgi, bare_flask, flask_adapter),
    ("FluxbaseWSGIMiddleware", time_wsgi, bare_wsgi, wsgi_middleware),
    ("Lambda lambda_handler", time_lambda, bare_lambda, lambda_adapter),
]


def run(driver: Driver, make_app: Callable[[Receiver], Any], requests: list[Signed]) -> float:
    """Time ``requests`` through the app ``make_app`` builds around a fresh receiver."""
    return driver(make_app(new_receiver()), requests, None)


def run_with_core(
    driver: Driver, make_app: Callable[[Receiver], Any], requests: list[Signed]
) -> float:
    """:func:`run`, with a fresh receiver handling each request right after the app."""
    return driver(make_app(new_receiver()), requests, new_receiver())


def per_request(count: int, round_no: int, measure: Callable[[list[Signed]], float]) -> float:
    """Seconds per request for ``count`` fresh, distinct events, with the collector paused."""
    requests = signed_requests(count, round_no)
    gc.collect()
    gc.disable()
    try:
        return measure(requests) / count
    finally:
        gc.enable()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    count, rounds = args.requests, args.rounds

    print(f"{count} requests x {rounds} rounds each; best round; core measured beside each pair")
    core_async = min(
        per_request(count, r, lambda q: time_core_async(new_receiver(), q)) for r in range(rounds)
    )
    print(f"(for the ASGI adapters: Receiver.handle_async alone is {core_async * 1e6:.1f} µs)")
    print()
    header = f"{'adapter':34} {'bare req/s':>11} {'adapter req/s':>14} {'added µs':>9}"
    print(f"{header} {'handle µs':>10} {'glue µs':>8} {'glue ÷ handle':>14}")
    worst = -math.inf
    for name, driver, bare, adapter in PAIRS:
        core_s = bare_s = adapter_s = both_s = float("inf")
        for r in range(rounds):  # interleaved, so a noisy moment hits all alike
            core_s = min(core_s, per_request(count, r, lambda q: time_core(new_receiver(), q)))
            bare_s = min(bare_s, per_request(count, r, partial(run, driver, bare)))
            adapter_s = min(adapter_s, per_request(count, r, partial(run, driver, adapter)))
            both_s = min(both_s, per_request(count, r, partial(run_with_core, driver, bare)))
        glue = adapter_s - both_s
        ratio = glue / core_s
        if name != DEPENDENCY:
            worst = max(worst, ratio)
        verdict = "" if ratio <= GOAL else "  over the goal"
        if name == DEPENDENCY and ratio > GOAL:
            verdict += " (Depends' floor, below)"
        print(
            f"{name:34} {1 / bare_s:11,.0f} {1 / adapter_s:14,.0f} "
            f"{(adapter_s - bare_s) * 1e6:9.1f} {core_s * 1e6:10.1f} "
            f"{glue * 1e6:8.1f} {ratio:13.2f}x{verdict}"
        )
    bare_s = dependency_s = float("inf")
    for r in range(rounds):
        bare_s = min(bare_s, per_request(count, r, partial(run, time_asgi, bare_fastapi)))
        dependency_s = min(
            dependency_s, per_request(count, r, partial(run, time_asgi, fastapi_no_op_dependency))
        )
    print(
        f"\nFastAPI's own dependency machinery: one no-op Depends adds "
        f"{(dependency_s - bare_s) * 1e6:.1f} µs to the bare endpoint "
        f"({(dependency_s - bare_s) / core_s:.2f}x the core's handle), a floor under any "
        "dependency: FluxbaseWebhook's row pays it, add_webhook_route's plain route does not"
    )
    print()
    print("glue = adapter - (bare + the core on the same request, in the same loop)")
    print(
        f"glue ÷ handle: goal <= {GOAL}x; worst {worst:.2f}x "
        f"({'met' if worst <= GOAL else 'NOT met'}; the {DEPENDENCY} row aside)"
    )


if __name__ == "__main__":
    main()
