"""Idempotency stores: claims with an owner and a lease, and remembered completions.

A key is *claimed* before handlers run, by an ``owner`` (a random token the receiver
makes per delivery) for a short ``lease``. The claim answers one of three states:
``NEW`` (this owner holds it: run the handlers), ``IN_PROGRESS`` (another owner holds it:
answer 409 so the sender retries later) or ``DONE`` (answer 200, run nothing).

While the handlers run, the owner *renews* the lease; when they end it *completes* the key
(remembered as done for a ``ttl``) or *releases* it (the next delivery runs again). Renew,
complete and release are compare-and-set on the owner: a claimant that outlived its lease
never touches the claim that replaced it. A claim whose holder died stops being renewed
and lapses when its lease runs out, so the sender's next retry runs the handlers.

The protocols, the states and :func:`content_key` are in
:mod:`fluxbase_receiver.idempotency.base`; each store has a module of its own:
:mod:`~fluxbase_receiver.idempotency.memory`, :mod:`~fluxbase_receiver.idempotency.sqlite`,
:mod:`~fluxbase_receiver.idempotency.redis` (the ``redis`` extra) and
:mod:`~fluxbase_receiver.idempotency.postgres` (the ``postgres`` extra). The last two are
not imported here: import them from their modules.
"""

from fluxbase_receiver.idempotency.base import (
    AsyncIdempotencyStore,
    ClaimState,
    IdempotencyStore,
    content_key,
)
from fluxbase_receiver.idempotency.memory import MemoryIdempotencyStore
from fluxbase_receiver.idempotency.sqlite import SQLiteIdempotencyStore

__all__ = [
    "AsyncIdempotencyStore",
    "ClaimState",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "SQLiteIdempotencyStore",
    "content_key",
]
