"""The retry policy as a table: one attempt's result in, the delivery's next state out."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

import pytest

from fluxbase_receiver.sender.delivery import AttemptResult
from fluxbase_receiver.sender.policy import Decision, RetryPolicy

NOW = 1_800_000_000.0
DAY = 86_400.0


class Ceiling(random.Random):
    """A random source whose jitter always lands on the top of its range."""

    def uniform(self, a: float, b: float) -> float:
        return b


@dataclass(frozen=True)
class Facts:
    attempt: int = 1
    in_progress_answers: int = 0
    max_attempts: int = 4
    retry_backoff_seconds: float = 5.0
    created_at: float = NOW - 60
    failing_since: float | None = None


def answer(status: int | None, retry_after: float | None = None) -> AttemptResult:
    error = None if status is not None and 200 <= status < 300 else "failed"
    return AttemptResult(status, "", error, 1.0, retry_after)


POLICY = RetryPolicy(clock=lambda: NOW, rng=Ceiling())

CASES: list[tuple[str, Facts, AttemptResult, Decision]] = [
    ("2xx succeeds", Facts(), answer(200), Decision("success", None, None)),
    (
        "204 succeeds and ends a run of failures",
        Facts(failing_since=NOW - 100),
        answer(204),
        Decision("success", None, None),
    ),
    (
        "500 retries after the base backoff",
        Facts(),
        answer(500),
        Decision("retrying", NOW + 5, NOW),
    ),
    (
        "the backoff doubles with each counted failure",
        Facts(attempt=3),
        answer(500),
        Decision("retrying", NOW + 20, NOW),
    ),
    (
        "a transport error is a failure",
        Facts(attempt=2),
        answer(None),
        Decision("retrying", NOW + 10, NOW),
    ),
    (
        "a redirect is a failure",
        Facts(),
        answer(307),
        Decision("retrying", NOW + 5, NOW),
    ),
    (
        "the last attempt fails the delivery",
        Facts(attempt=4),
        answer(500),
        Decision("failed", None, NOW),
    ),
    (
        "max_retries 0: the first failure is final",
        Facts(max_attempts=1),
        answer(502),
        Decision("failed", None, NOW),
    ),
    (
        "410 fails and disables",
        Facts(),
        answer(410),
        Decision("failed", None, NOW, "the receiver answered 410 Gone"),
    ),
    (
        "410 disables even with attempts left and a run of failures",
        Facts(failing_since=NOW - 7 * DAY),
        answer(410),
        Decision("failed", None, NOW - 7 * DAY, "the receiver answered 410 Gone"),
    ),
    (
        "Retry-After on 429 is honoured",
        Facts(),
        answer(429, retry_after=120),
        Decision("retrying", NOW + 120, NOW),
    ),
    (
        "Retry-After on 503 is honoured",
        Facts(attempt=2),
        answer(503, retry_after=1),
        Decision("retrying", NOW + 1, NOW),
    ),
    (
        "Retry-After is capped",
        Facts(),
        answer(429, retry_after=10 * DAY),
        Decision("retrying", NOW + 6 * 3600, NOW),
    ),
    (
        "Retry-After on another status is ignored",
        Facts(),
        answer(500, retry_after=120),
        Decision("retrying", NOW + 5, NOW),
    ),
    (
        "Retry-After does not extend the last attempt",
        Facts(attempt=4),
        answer(429, retry_after=60),
        Decision("failed", None, NOW),
    ),
    (
        "the backoff is capped",
        Facts(attempt=15, max_attempts=21, retry_backoff_seconds=3600),
        answer(500),
        Decision("retrying", NOW + 6 * 3600, NOW),
    ),
    (
        "a run of failures keeps its start",
        Facts(failing_since=NOW - DAY),
        answer(500),
        Decision("retrying", NOW + 5, NOW - DAY),
    ),
    (
        "failing for the whole period disables the webhook",
        Facts(failing_since=NOW - 5 * DAY),
        answer(500),
        Decision("retrying", NOW + 5, NOW - 5 * DAY, "every attempt failed for 5 days, 0:00:00"),
    ),
    (
        "and so does the last attempt then",
        Facts(attempt=4, failing_since=NOW - 6 * DAY),
        answer(500),
        Decision("failed", None, NOW - 6 * DAY, "every attempt failed for 5 days, 0:00:00"),
    ),
    (
        "409 is retried without counting",
        Facts(attempt=4),
        answer(409),
        Decision("retrying", NOW + 40, None, counted=False),
    ),
    (
        "409 leaves a run of failures as it is",
        Facts(attempt=2, failing_since=NOW - 10),
        answer(409),
        Decision("retrying", NOW + 10, NOW - 10, counted=False),
    ),
    (
        "409 answers do not use up attempts",
        Facts(attempt=6, in_progress_answers=3),
        answer(500),
        Decision("retrying", NOW + 20, NOW),
    ),
    (
        "the last counted attempt after 409 answers fails",
        Facts(attempt=7, in_progress_answers=3),
        answer(500),
        Decision("failed", None, NOW),
    ),
    (
        "409 past the period fails",
        Facts(attempt=30, in_progress_answers=29, created_at=NOW - 5 * DAY),
        answer(409),
        Decision("failed", None, NOW),
    ),
]


@pytest.mark.parametrize(
    ("facts", "result", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_decision_table(facts: Facts, result: AttemptResult, expected: Decision) -> None:
    assert POLICY.decide(facts, result) == expected


def test_disable_after_bounds_failing_webhooks_and_in_progress_retries() -> None:
    policy = RetryPolicy(disable_after=timedelta(hours=1), clock=lambda: NOW, rng=Ceiling())
    assert policy.decide(Facts(failing_since=NOW - 3599), answer(500)).disable_reason is None
    failing = policy.decide(Facts(failing_since=NOW - 3600), answer(500))
    assert failing.disable_reason == "every attempt failed for 1:00:00"
    assert policy.decide(Facts(created_at=NOW - 3600), answer(409)).status == "failed"
    assert policy.decide(Facts(created_at=NOW - 3599), answer(409)).status == "retrying"
    immediate = RetryPolicy(disable_after=timedelta(0), clock=lambda: NOW)
    assert (
        immediate.decide(Facts(), answer(500)).disable_reason == "every attempt failed for 0:00:00"
    )


@pytest.mark.parametrize("status", [500, 409, 429, None, 307])
def test_a_test_send_is_never_retried(status: int | None) -> None:
    decision = POLICY.decide(Facts(max_attempts=1), answer(status, retry_after=1), retry=False)
    assert (decision.status, decision.next_attempt_at) == ("failed", None)
    assert POLICY.decide(Facts(), answer(200), retry=False).status == "success"
    assert POLICY.decide(Facts(), answer(410), retry=False).disable_reason is not None


def test_backoff_growth_is_pinned_by_the_random_source() -> None:
    ceilings = [POLICY.backoff(n, 2.0) for n in range(1, 16)]
    assert ceilings[:6] == [2, 4, 8, 16, 32, 64]
    assert ceilings[-1] == 6 * 3600, "capped"
    seeded = [RetryPolicy(rng=random.Random(7)).backoff(n, 2.0) for n in range(1, 16)]
    again = [RetryPolicy(rng=random.Random(7)).backoff(n, 2.0) for n in range(1, 16)]
    assert seeded == again
    assert all(0 <= d <= c for d, c in zip(seeded, ceilings, strict=True))
    assert len(set(seeded)) == len(seeded), "full jitter: spread over the range"
