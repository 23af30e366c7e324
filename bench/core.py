"""Events/s of ``Receiver.handle`` against the floor and reference verifiers, in one run.

The events are ~1.4 KB UPDATE events shaped as this package's sender sends them: the body
carries ``webhook_id`` and a stable ``id``, the headers are the sender's (``Content-Type``,
``User-Agent``, ``X-Fluxbase-Signature``, the legacy ``X-Webhook-Signature``,
``X-Fluxbase-Event-Id``, ``X-Fluxbase-Delivery-Attempt``). Every event is distinct.

- floor: what any typed, deduplicating receiver must do at least: the HMAC of ``"<t>." +
  body`` checked with ``hmac.compare_digest``, ``UpdateEvent[dict].model_validate_json(body)``
  (the typed event, ``timestamp`` read as a ``datetime``) and a plain ``dict`` membership
  test and insert by the event's ``id``;
- fluxbase-receiver ``Receiver.handle``: size guard, verify (with the age check), typed
  parse, claim and completion in the in-memory idempotency store, a no-op handler;
- svix ``Webhook.verify`` + ``json.loads`` (the anchor: svix checks the signature but does
  not decode the JSON; shown alone too), standardwebhooks ``Webhook.verify`` and stripe
  ``WebhookSignature.verify_header`` + ``json.loads``;
- for information, ``Receiver.handle`` on the same events as a Fluxbase server sends them
  (no ``id``, its two signature headers): only kept from running concurrently, which
  needs a content key (a SHA-256 of the change).

Run: ``python bench/core.py [--rounds 7]`` (needs the ``bench`` extra). The machine may be
shared: the implementations run interleaved, round after round, and each one's best round
counts.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from fluxbase_receiver import Receiver, UpdateEvent
from fluxbase_receiver.signature import fluxbase_headers

SECRET = "bench-webhook-secret"
EVENTS = 5_000
SVIX_GOAL = 1.5
FLOOR_GOAL = 0.75

FLOOR = "floor (hmac + typed parse + dict dedupe)"
OURS = "fluxbase-receiver Receiver.handle"
SVIX = "svix Webhook.verify + json.loads"
NO_ID = "Receiver.handle, no id (Fluxbase server)"


def update_event(n: int) -> dict[str, Any]:
    """A ~1.3 KB UPDATE event as a Fluxbase server sends it; ``n`` makes each one distinct."""
    row = {
        "id": n,
        "customer_id": "550e8400-e29b-41d4-a716-446655440000",
        "status": "shipped",
        "currency": "EUR",
        "total": 1249.5,
        "items": [{"sku": f"SKU-{i:04d}", "quantity": i + 1, "price": 19.99 + i} for i in range(6)],
        "shipping_address": {
            "line1": "1 Rue de la Paix",
            "city": "Paris",
            "postcode": "75002",
            "country": "FR",
        },
        "note": "Leave at the door — merci ☃",
        "created_at": "2025-11-02T10:30:00.123456Z",
        "updated_at": "2025-11-02T10:31:00.654321Z",
    }
    old = {**row, "status": "paid", "updated_at": "2025-11-02T10:30:00.123456Z"}
    return {
        "event": "UPDATE",
        "table": "orders",
        "schema": "public",
        "record": row,
        "old_record": old,
        "timestamp": "2025-11-02T10:31:00.654321789Z",
    }


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def rates(runs: dict[str, Callable[[int], object]], rounds: int) -> dict[str, float]:
    """Best events/s of each ``run(i)`` over ``rounds`` interleaved rounds of EVENTS calls."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            for i in range(EVENTS):
                run(i)
            best[name] = max(best[name], EVENTS / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    rounds = parser.parse_args().rounds

    import standardwebhooks
    import stripe
    import svix

    now = int(time.time())
    webhook_id = str(uuid.uuid4())
    events = [update_event(i) for i in range(EVENTS)]
    server_bodies = [encode(event) for event in events]
    bodies = [
        encode({**event, "webhook_id": webhook_id, "id": str(uuid.uuid4())}) for event in events
    ]
    size = statistics.mean(len(b) for b in bodies)

    sender_headers = [
        {
            **fluxbase_headers(body, SECRET, now),
            "X-Fluxbase-Event-Id": json.loads(body)["id"],
            "X-Fluxbase-Delivery-Attempt": "1",
        }
        for body in bodies
    ]
    server_headers = [fluxbase_headers(body, SECRET, now) for body in server_bodies]
    key = SECRET.encode()
    signed = [h["X-Fluxbase-Signature"].removeprefix("t=").split(",v1=") for h in sender_headers]

    svix_secret = "whsec_" + base64.b64encode(b"bench-webhook-secret-32-bytes!!!").decode()
    svix_hook = svix.Webhook(svix_secret)
    sw_hook = standardwebhooks.Webhook(svix_secret)
    svix_headers = []
    sw_headers = []
    for i, body in enumerate(bodies):
        msg_id = f"msg_{i}"
        raw = base64.b64decode(svix_secret.removeprefix("whsec_"))
        mac = hmac.digest(raw, f"{msg_id}.{now}.".encode() + body, "sha256")
        sig = "v1," + base64.b64encode(mac).decode()
        svix_headers.append({"svix-id": msg_id, "svix-timestamp": str(now), "svix-signature": sig})
        sw_headers.append(
            {"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": sig}
        )
    stripe_headers = [
        f"t={now},v1=" + hmac.digest(key, f"{now}.".encode() + b, "sha256").hex() for b in bodies
    ]
    stripe_bodies = [b.decode() for b in bodies]

    typed = UpdateEvent[dict]  # the typed event the receiver parses into
    seen: dict[str, bool] = {}

    def floor(i: int) -> object:
        if i == 0:  # a fresh dict per round: every event is new to it
            seen.clear()
        t, signature = signed[i]
        expected = hmac.digest(key, t.encode() + b"." + bodies[i], "sha256")
        if not hmac.compare_digest(expected, bytes.fromhex(signature)):
            raise AssertionError("floor signature mismatch")
        event = typed.model_validate_json(bodies[i])
        if event.id in seen:
            raise AssertionError("floor duplicate")
        seen[event.id] = True
        return event

    def receiving(
        all_bodies: list[bytes], all_headers: list[dict[str, str]]
    ) -> Callable[[int], object]:
        receivers: list[Receiver] = []

        def run(i: int) -> object:
            if i == 0:  # a fresh receiver per round: every event is new to its store
                receivers[:] = [Receiver(SECRET)]
                receivers[0].on("orders")(lambda event: None)
            outcome = receivers[0].handle(all_bodies[i], all_headers[i])
            if outcome.status != 200 or outcome.body.get("duplicate"):
                raise AssertionError(outcome)
            return outcome

        return run

    def svix_verify(i: int) -> object:
        return svix_hook.verify(bodies[i], svix_headers[i])

    def svix_verify_decode(i: int) -> object:
        svix_hook.verify(bodies[i], svix_headers[i])
        return json.loads(bodies[i])

    def sw_verify(i: int) -> object:
        return sw_hook.verify(bodies[i], sw_headers[i])

    def stripe_verify(i: int) -> object:
        stripe.WebhookSignature.verify_header(stripe_bodies[i], stripe_headers[i], SECRET, 300)
        return json.loads(stripe_bodies[i])

    results = rates(
        {
            FLOOR: floor,
            OURS: receiving(bodies, sender_headers),
            SVIX: svix_verify_decode,
            "svix Webhook.verify (no decoding)": svix_verify,
            "standardwebhooks Webhook.verify": sw_verify,
            "stripe verify_header + json.loads": stripe_verify,
            NO_ID: receiving(server_bodies, server_headers),
        },
        rounds,
    )
    ours = results[OURS]
    print(
        f"{EVENTS} distinct UPDATE events of {size:.0f} bytes with an id, best of {rounds} rounds\n"
    )
    print(f"{'implementation':<42} {'events/s':>10} {'µs/event':>9} {'ours ÷ it':>10}")
    for name, value in results.items():
        print(f"{name:<42} {value:>10,.0f} {1e6 / value:>9.1f} {ours / value:>9.2f}x")
    to_svix, to_floor = ours / results[SVIX], ours / results[FLOOR]
    print(
        f"\nReceiver.handle: {to_svix:.2f}x svix verify + json.loads "
        f"(goal ≥ {SVIX_GOAL}x: {'met' if to_svix >= SVIX_GOAL else 'NOT met'}), "
        f"{to_floor:.2f}x the floor (goal ≥ {FLOOR_GOAL}x: "
        f"{'met' if to_floor >= FLOOR_GOAL else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
