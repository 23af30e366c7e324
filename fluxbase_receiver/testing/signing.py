"""Signing test requests, and pointing an existing receiver at the test secret."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fluxbase_receiver.receiver import Receiver
from fluxbase_receiver.testing import make_event, sign_event

__all__ = ["Signer", "use_secret"]


class Signer:
    """Signs events with a secret: ``signer(event, **options) -> (body, headers)``.

    ``event`` is a payload dict (default: a fresh ``make_event()``), or body bytes/text
    to sign as they are. Options are those of :func:`~fluxbase_receiver.testing.sign_event`:
    ``timestamp``, ``skew``, ``wrong_secret``, ``legacy_only``, ``headers``; ``secret``
    overrides the fixture's secret (a list signs with each: several ``v1`` entries).
    """

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return "<Signer secret=***>"

    def __call__(
        self,
        event: Mapping[str, Any] | bytes | str | None = None,
        *,
        secret: str | Sequence[str] | None = None,
        timestamp: int | None = None,
        skew: float = 0,
        wrong_secret: bool = False,
        legacy_only: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        return sign_event(
            make_event() if event is None else event,
            self.secret if secret is None else secret,
            timestamp=timestamp,
            skew=skew,
            wrong_secret=wrong_secret,
            legacy_only=legacy_only,
            headers=headers,
        )


def use_secret(receiver: Receiver, secret: str | Sequence[str]) -> Callable[[], None]:
    """Make ``receiver`` verify with ``secret`` (e.g. the test's) instead of its own.

    For an app whose receiver was built at import time: no re-import, no environment
    change. Returns a function that puts the receiver's own secrets back.
    """
    return receiver.use_secret(secret)
