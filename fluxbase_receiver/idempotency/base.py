"""The stores' contract: the claim states, the blocking and asyncio store protocols, and
:func:`content_key` for events that carry no id."""

from __future__ import annotations

import enum
import hashlib
from typing import Any, Protocol, runtime_checkable

from pydantic_core import to_json

__all__ = ["AsyncIdempotencyStore", "ClaimState", "IdempotencyStore", "content_key"]


class ClaimState(enum.Enum):
    """What :meth:`IdempotencyStore.claim` found."""

    NEW = "new"
    IN_PROGRESS = "in_progress"
    DONE = "done"


@runtime_checkable
class IdempotencyStore(Protocol):
    """A blocking store of owned claims and completed keys."""

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        """Claim ``key`` for ``owner`` for ``lease`` seconds unless it is held or done."""
        ...

    def renew(self, key: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s live claim to ``lease`` seconds from now; False if it is lost."""
        ...

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        """Mark ``owner``'s live claim done for ``ttl`` seconds; False if it is lost."""
        ...

    def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim so the next delivery runs the handlers again."""
        ...


@runtime_checkable
class AsyncIdempotencyStore(Protocol):
    """The same contract as :class:`IdempotencyStore`, for asyncio clients."""

    async def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        """Claim ``key`` for ``owner`` for ``lease`` seconds unless it is held or done."""
        ...

    async def renew(self, key: str, owner: str, lease: float) -> bool:
        """Extend ``owner``'s live claim to ``lease`` seconds from now; False if it is lost."""
        ...

    async def complete(self, key: str, owner: str, ttl: float) -> bool:
        """Mark ``owner``'s live claim done for ``ttl`` seconds; False if it is lost."""
        ...

    async def release(self, key: str, owner: str) -> None:
        """Drop ``owner``'s claim so the next delivery runs the handlers again."""
        ...


def content_key(event: Any) -> str:
    """A SHA-256 of what the event says changed, for events that carry no id.

    The identity is the compact JSON of ``webhook_id, event, schema, table, record,
    old_record``, object keys in the order the signed body has them. ``timestamp`` is
    left out: a Fluxbase server changes it on every retry. Two real changes with the same
    content (a flag toggled back, a row re-inserted) have the same content key.
    """
    identity = (
        event.webhook_id,
        event.event,
        event.schema_name,
        event.table,
        event.record,
        event.old_record,
    )
    return "sha256:" + hashlib.sha256(to_json(identity)).hexdigest()
