"""The in-process store."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable

from fluxbase_receiver.idempotency.base import ClaimState

__all__ = ["MemoryIdempotencyStore"]

# The states as module names: reading a member off an Enum class goes through its
# metaclass, a tenth of a microsecond each time on the claim path.
_NEW, _IN_PROGRESS, _DONE = ClaimState.NEW, ClaimState.IN_PROGRESS, ClaimState.DONE

_Entry = tuple[ClaimState, float, "str | None"]
"""A key's state, when it expires, and the owner of an in-progress claim."""


class MemoryIdempotencyStore:
    """In-process store: bounded (oldest entries evicted first), TTL, thread-safe.

    Right for one process. Several processes or hosts need a shared store
    (SQLite on one host; Redis or PostgreSQL across hosts).

    A claim of a key it has never seen is one atomic ``dict.setdefault``, with no lock;
    everything else (an existing key, renew, complete, release, eviction) runs under
    one lock. When it holds more than ``max_entries``, the oldest sixteenth (at least
    one entry) is dropped in one go.
    """

    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # in claim order: the oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def claim(self, key: str, owner: str, lease: float) -> ClaimState:
        now = self._clock()
        mine = (_IN_PROGRESS, now + lease, owner)
        entry = self._entries.setdefault(key, mine)  # atomic: a new key is claimed once
        if entry is mine:
            if len(self._entries) > self.max_entries:
                self._evict()
            return _NEW
        with self._lock:
            entry = self._entries.get(key, entry)
            if entry[1] > now:
                return entry[0]
            self._entries.pop(key, None)  # expired (or gone): claimed anew, as the newest
            self._entries[key] = mine
            return _NEW

    def _evict(self) -> None:
        with self._lock:
            entries = self._entries
            excess = len(entries) - self.max_entries
            if excess > 0:
                oldest = list(itertools.islice(entries, max(excess, self.max_entries // 16)))
                for key in oldest:
                    del entries[key]

    def renew(self, key: str, owner: str, lease: float) -> bool:
        now = self._clock()
        with self._lock:
            if not _held(self._entries.get(key), owner, now):
                return False
            self._entries[key] = (_IN_PROGRESS, now + lease, owner)
            return True

    def complete(self, key: str, owner: str, ttl: float) -> bool:
        now = self._clock()
        entries = self._entries
        self._lock.acquire()  # not "with": this is the hot path, and "with" costs twice as much
        try:
            if not _held(entries.get(key), owner, now):
                return False
            entries[key] = (_DONE, now + ttl, None)
            return True
        finally:
            self._lock.release()

    def release(self, key: str, owner: str) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS:
                del self._entries[key]


def _held(entry: _Entry | None, owner: str, now: float) -> bool:
    """True when ``entry`` is ``owner``'s claim, in progress and not lapsed at ``now``."""
    return entry is not None and entry[2] == owner and entry[0] is _IN_PROGRESS and entry[1] > now
