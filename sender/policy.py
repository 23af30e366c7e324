"""The retry policy: what one attempt's result means for its delivery and its webhook.

:class:`RetryPolicy` is pure: its clock and random source are injected, it reads the
attempt's facts from a :class:`Attempted` and returns a :class:`Decision`. Rules, in
order:

1. a 2xx answer is a success (and ends the webhook's run of failures);
2. ``410 Gone`` fails the delivery and disables the webhook;
3. ``409`` (the receiver is still handling the same event) is retried without counting
   against ``max_retries``, until the delivery is older than ``disable_after``;
4. any other answer (3xx included: redirects are not followed), a timeout or a transport
   error is a failed attempt: retried while attempts remain, after the ``Retry-After`` of
   a 429 / 503 (capped at ``max_backoff_seconds``) or an exponential backoff with full
   jitter from the webhook's ``retry_backoff_seconds``; the last one fails the delivery;
5. a webhook whose attempts have all failed for ``disable_after`` is disabled.

A test send (``retry=False``) gets one attempt: its failure is final.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol

from fluxbase_receiver.sender.delivery import AttemptResult
from fluxbase_receiver.sender.models import DeliveryStatus

__all__ = ["Attempted", "Decision", "RetryPolicy"]

_RETRY_AFTER_STATUSES = (429, 503)
IN_PROGRESS = 409
GONE = 410


class Attempted(Protocol):
    """The facts about a delivery the policy reads (a claimed delivery has them)."""

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1 (every HTTP attempt counts here)."""
        ...

    @property
    def in_progress_answers(self) -> int:
        """Earlier attempts answered 409: they do not count against ``max_attempts``."""
        ...

    @property
    def max_attempts(self) -> int:
        """Counted attempts allowed (the webhook's ``max_retries`` + 1)."""
        ...

    @property
    def retry_backoff_seconds(self) -> float:
        """The webhook's backoff base."""
        ...

    @property
    def created_at(self) -> float:
        """When the delivery was queued (unix seconds)."""
        ...

    @property
    def failing_since(self) -> float | None:
        """Since when every attempt to the webhook has failed, or ``None``."""
        ...


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows from an attempt, for the store to record."""

    status: DeliveryStatus
    next_attempt_at: float | None
    failing_since: float | None
    """The webhook's new ``failing_since`` (``None`` after a success)."""
    disable_reason: str | None = None
    counted: bool = True
    """``False`` for a 409: the attempt does not use up one of ``max_attempts``."""


def _system_random() -> random.Random:
    return random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """The sender's retry rules, with an injectable ``clock`` and random source ``rng``."""

    max_backoff_seconds: float = 6 * 3600.0
    """Cap on any wait, backoff and ``Retry-After`` alike."""
    disable_after: timedelta = timedelta(days=5)
    """A webhook failing every attempt for this long is disabled; a delivery answered
    409 is retried until it is this old."""
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=_system_random)

    def backoff(self, failures: int, base: float) -> float:
        """Full jitter: uniform in ``[0, min(cap, base * 2**(failures-1))]``."""
        ceiling = min(self.max_backoff_seconds, base * 2.0 ** min(max(failures, 1) - 1, 60))
        return self.rng.uniform(0.0, ceiling)

    def decide(self, delivery: Attempted, result: AttemptResult, retry: bool = True) -> Decision:
        """The delivery's next state after ``result`` (see the module's rules)."""
        now = self.clock()
        if result.ok:
            return Decision("success", None, None)
        failing_since = delivery.failing_since if delivery.failing_since is not None else now
        if now - failing_since >= self.disable_after.total_seconds():
            reason: str | None = f"every attempt failed for {self.disable_after}"
        else:
            reason = None
        if result.status == GONE:
            return Decision("failed", None, failing_since, "the receiver answered 410 Gone")
        if not retry:
            return Decision("failed", None, failing_since, reason)
        if result.status == IN_PROGRESS:
            if now - delivery.created_at < self.disable_after.total_seconds():
                delay = self.backoff(delivery.attempt, delivery.retry_backoff_seconds)
                return Decision("retrying", now + delay, delivery.failing_since, counted=False)
            return Decision("failed", None, failing_since, reason)
        counted = delivery.attempt - delivery.in_progress_answers
        if counted >= delivery.max_attempts:
            return Decision("failed", None, failing_since, reason)
        wait = result.retry_after if result.status in _RETRY_AFTER_STATUSES else None
        if wait is None:
            wait = self.backoff(counted, delivery.retry_backoff_seconds)
        next_attempt_at = now + min(wait, self.max_backoff_seconds)
        return Decision("retrying", next_attempt_at, failing_since, reason)
