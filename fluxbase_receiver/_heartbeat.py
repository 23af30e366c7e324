"""Keeping idempotency claims alive while their handlers run.

One daemon thread per process renews each live claim once a third of its lease has passed
since it was taken or last renewed. Claims settled sooner (most of them) are never renewed,
and the thread ends when no claim is live, so a request costs a dictionary entry, not a
thread. Claims of async stores are renewed on the event loop that took them. A process
that dies stops renewing: its claims lapse within one lease, and the sender's next retry
runs the handlers again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import os
import threading
import time
from typing import Any

logger = logging.getLogger("fluxbase_receiver")


class _Live:
    """One held claim and when it is next due for renewal."""

    __slots__ = ("due", "key", "lease", "loop", "owner", "store")

    def __init__(
        self,
        store: Any,
        key: str,
        owner: str,
        lease: float,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.store = store
        self.key = key
        self.owner = owner
        self.lease = lease
        self.loop = loop
        self.due = time.monotonic() + lease / 3


class Heartbeat:
    """The live claims of this process and the thread that renews them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex() + "-"
        self._count = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._live: dict[str, _Live] = {}
        self._running = False
        self._wake_at = math.inf

    def __len__(self) -> int:
        return len(self._live)

    def hold(
        self,
        store: Any,
        key: str,
        owner: str,
        lease: float,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Renew ``owner``'s claim on ``key`` until :meth:`drop` (``loop``: an async store's)."""
        live = _Live(store, key, owner, lease, loop)
        self._live[owner] = live
        if self._running and live.due >= self._wake_at:  # the common case: nothing to wake
            return
        with self._cond:
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="fluxbase-claims", daemon=True).start()
            elif live.due < self._wake_at:
                self._cond.notify()

    def owner(self) -> str:
        """A claim owner token unique to this process and call (the prefix is random)."""
        return f"{self._prefix}{next(self._count)}"

    def drop(self, owner: str) -> None:
        """Stop renewing ``owner``'s claim (it was settled, or lost)."""
        self._live.pop(owner, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                lives = list(self._live.values())
                if not lives:
                    self._running = False
                    if not self._live:  # nothing held since: a later hold starts a new thread
                        return
                    self._running = True
                    continue
                now = time.monotonic()
                due = [live for live in lives if live.due <= now]
                if not due:
                    self._wake_at = min(live.due for live in lives)
                    self._cond.wait(self._wake_at - now)
                    self._wake_at = math.inf
                    continue
            for live in due:
                if self._live.get(live.owner) is live:
                    self._renew(live)

    def _renew(self, live: _Live) -> None:
        live.due = time.monotonic() + live.lease / 3
        if live.loop is None:
            try:
                self._renewed(live, live.store.renew(live.key, live.owner, live.lease))
            except Exception:
                logger.warning("could not renew the claim on %s; retrying", live.key, exc_info=True)
            return
        renewal = live.store.renew(live.key, live.owner, live.lease)
        try:
            future = asyncio.run_coroutine_threadsafe(renewal, live.loop)
        except RuntimeError:  # the loop that took the claim is closed
            renewal.close()
            self.drop(live.owner)
            return

        def done(future: concurrent.futures.Future[bool]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                logger.warning("could not renew the claim on %s; retrying", live.key)
            else:
                self._renewed(live, future.result())

        future.add_done_callback(done)

    def _renewed(self, live: _Live, held: bool) -> None:
        if not held and self._live.get(live.owner) is live:
            self.drop(live.owner)
            logger.warning(
                "the claim on %s lapsed while its handlers ran; another delivery may run them too",
                live.key,
            )


HEARTBEAT = Heartbeat()
"""The process's heartbeat (reset in a forked child, which inherits no thread and must not
reuse the parent's owner tokens)."""
os.register_at_fork(after_in_child=HEARTBEAT._reset)
