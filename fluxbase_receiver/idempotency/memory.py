"""The in-process store."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from fluxbase_receiver.idempotency.base import ClaimState

__all__ = ["MemoryIdempotencyStore"]

# The states as module names: reading a member off an Enum class goes through its
# metaclass, a tenth of a microsecond each time on the claim path.
_NEW, _IN_PROGRESS, _DONE = ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE


class MemoryIdempotencyStore:
    """In-process store: bounded (oldest entries evicted first), TTL, thread-safe.

    Right for one process. Several processes or hosts need a shared store
    (SQLite on one host; Redis or PostgreSQL across hosts).
    """

    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        # key -> (state, expires at, owner of an in-progress claim)
        self._entries: OrderedDict[str, tuple[ClaimState, float, str | None]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        now = self._clock()
        entries = self._entries
        self._lock.acquire()  # not "with": this is the hot path, and "with" costs twice as much
        try:
            entry = entries.get(key)
            if entry is not None:
                if entry[1] > now:
                    return entry[0]
                del entries[key]  # expired: claimed anew, as the newest entry
            entries[key] = (_IN_PROGRESS, now + lease, owner)
            while len(entries) > self.max_entries:
                entries.popitem(last=False)
            return _NEW
        finally:
            self._lock.release()

    def _held(self, key: str, owner: str, now: float) -> bool:
        entry = self._entries.get(key)
        return (
            entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS and entry[1] > now
        )

    def renew(self, key: str, owner: str, lease: float) -> bool:
        now = self._clock()
        with self._lock:
            if not self._held(key, owner, now):
                return False
            self._entries[key] = (_IN_PROGRESS, now + lease, owner)
            return True

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        self._lock.acquire()
        try:
            if not self._held(key, owner, now):
                return False
            self._entries[key] = (_DONE, now + ttl, None)
            self._entries.move_to_end(key)
            return True
        finally:
            self._lock.release()

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS:
                del self._entries[key]
