"""Events/s of ``Receiver.handle`` against reference webhook verifiers, in one run.

Each library verifies (and decodes) the same ~1 KB UPDATE event signed its own way:

- floor: ``hmac.digest`` + pydantic ``model_validate_json`` on the typed event, nothing else;
- fluxbase-receiver: ``Receiver.handle`` = verify + typed parse + in-memory dedupe + a no-op
  handler (every event distinct, so each one is claimed and completed);
- svix ``Webhook.verify`` (which checks the signature but does not decode the JSON; shown
  alone and followed by ``json.loads``), standardwebhooks ``Webhook.verify``, and stripe
  ``WebhookSignature.verify_header`` + ``json.loads``.

Run: ``python bench/core.py`` (needs the ``bench`` extra). Prints a table with ratios.
"""

from __future__ import annotations

import base64
import hmac
import json
import statistics
import time
from collections.abc import Callable

from fluxbase_receiver import Receiver, UpdateEvent, sign_payload

SECRET = "bench-webhook-secret"
EVENTS = 5_000
ROUNDS = 5


def update_body(n: int) -> bytes:
    """A ~1 KB UPDATE event as a Fluxbase server sends it; ``n`` makes each one distinct."""
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
    event = {
        "event": "UPDATE",
        "table": "orders",
        "schema": "public",
        "record": row,
        "old_record": old,
        "timestamp": "2025-11-02T10:31:00.654321789Z",
    }
    return json.dumps(event, separators=(",", ":")).encode()


def rates(runs: dict[str, Callable[[int], object]]) -> dict[str, float]:
    """Best events/s of each ``run(i)`` over ROUNDS interleaved rounds of EVENTS calls."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(ROUNDS):
        for name, run in runs.items():
            start = time.perf_counter()
            for i in range(EVENTS):
                run(i)
            best[name] = max(best[name], EVENTS / (time.perf_counter() - start))
    return best


def main() -> None:
    import standardwebhooks
    import stripe
    import svix

    now = int(time.time())
    bodies = [update_body(i) for i in range(EVENTS)]
    size = statistics.mean(len(b) for b in bodies)

    ours_headers = [
        {"Content-Type": "application/json", "X-Fluxbase-Signature": sign_payload(b, SECRET, now)}
        for b in bodies
    ]
    key = SECRET.encode()
    floor_sigs = [h["X-Fluxbase-Signature"].split("v1=")[1] for h in ours_headers]
    adapter = UpdateEvent[dict]  # the same typed model the receiver parses into

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

    def floor(i: int) -> object:
        expected = hmac.digest(key, f"{now}.".encode() + bodies[i], "sha256")
        if not hmac.compare_digest(expected, bytes.fromhex(floor_sigs[i])):
            raise AssertionError("floor signature mismatch")
        return adapter.model_validate_json(bodies[i])

    receivers: list[Receiver] = []

    def ours(i: int) -> object:
        if i == 0:  # a fresh receiver per round: every event is new to its store
            receivers.append(Receiver(SECRET))
            receivers[-1].on("orders")(lambda event: None)
        outcome = receivers[-1].handle(bodies[i], ours_headers[i])
        if outcome.status != 200 or outcome.body.get("duplicate"):
            raise AssertionError(outcome)
        return outcome

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
            "floor (hmac + model_validate_json)": floor,
            "fluxbase-receiver Receiver.handle": ours,
            "svix Webhook.verify (no decoding)": svix_verify,
            "svix Webhook.verify + json.loads": svix_verify_decode,
            "standardwebhooks Webhook.verify": sw_verify,
            "stripe verify_header + json.loads": stripe_verify,
        }
    )
    ours_rate = results["fluxbase-receiver Receiver.handle"]
    floor_rate = results["floor (hmac + model_validate_json)"]
    svix_rate = results["svix Webhook.verify (no decoding)"]
    print(f"{EVENTS} distinct UPDATE events of {size:.0f} bytes, best of {ROUNDS} rounds\n")
    print(f"{'implementation':<40} {'events/s':>10} {'µs/event':>9} {'ours ÷ it':>10}")
    for name, value in results.items():
        print(f"{name:<40} {value:>10,.0f} {1e6 / value:>9.1f} {ours_rate / value:>9.2f}x")
    print(
        f"\nfluxbase-receiver: {ours_rate / svix_rate:.2f}x svix (goal ≥ 1.5x), "
        f"{ours_rate / floor_rate:.2f}x the floor (goal ≥ 0.75x)"
    )


if __name__ == "__main__":
    main()
