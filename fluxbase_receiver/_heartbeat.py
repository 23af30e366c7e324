"""Keeping idempotency claims alive while their handlers run.

Holding a claim costs a request one dictionary entry: one daemon thread per process looks
at the held claims at least every third of the shortest lease, and renews each claim it
finds still held a third of its lease after it first saw it (then every third of its
lease). A claim is thus renewed at most two thirds of its lease after it was taken;
claims settled sooner (most of them) are never renewed. The thread ends when it finds no
claim held twice in a row. Claims of async stores are renewed on the event loop that took
them. A process that dies stops renewing: its claims lapse within one lease, and the
sender's next retry runs the handlers again.
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
from typing import Any, TypeAlias

logger = logging.getLogger(__name__)

_Held: TypeAlias = tuple[Any, str, float, asyncio.AbstractEventLoop | None]
"""A held claim: its store, key, lease and the event loop of an async store."""


class Heartbeat:
    """The held claims of this process and the thread that renews them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._prefix = os.urandom(8).hex() + "-"
        self._count = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._live: dict[str, _Held] = {}
        self._running = False
        self._shortest = math.inf  # the shortest lease held since the thread started

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
        self._live[owner] = (store, key, lease, loop)
        if self._running and lease >= self._shortest:  # the common case: nothing to wake
            return
        with self._cond:
            self._shortest = min(self._shortest, lease)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="fluxbase-claims", daemon=True).start()
            else:
                self._cond.notify()  # look at the claims a third of this lease from now

    def owner(self) -> str:
        """A claim owner token unique to this process and call (the prefix is random)."""
        return f"{self._prefix}{next(self._count)}"

    def drop(self, owner: str) -> None:
        """Stop renewing ``owner``'s claim (it was settled, or lost)."""
        self._live.pop(owner, None)

    def _run(self) -> None:
        due: dict[str, float] = {}  # owner -> when its claim is renewed next
        idle = False
        while True:
            with self._cond:
                held = list(self._live.items())
                if not held and idle:  # nothing held at two looks in a row: end
                    self._running = False
                    if not self._live:  # nothing held since: a later hold starts a new thread
                        self._shortest = math.inf
                        return
                    self._running = True
                    continue
                idle = not held
                if idle:
                    self._cond.wait(self._shortest / 3)
                    continue
                now = time.monotonic()
                due = {owner: due.get(owner, now + claim[2] / 3) for owner, claim in held}
                wake = min(min(due.values()), now + self._shortest / 3)
                if wake > now:
                    self._cond.wait(wake - now)
                    continue
            for owner, claim in held:
                if due[owner] <= now and self._live.get(owner) is claim:
                    due[owner] = now + claim[2] / 3
                    self._renew(owner, claim)

    def _renew(self, owner: str, claim: _Held) -> None:
        store, key, lease, loop = claim
        if loop is None:
            try:
                self._renewed(owner, claim, store.renew(key, owner, lease))
            except Exception:
                logger.warning(
                    "could not renew the claim on %s; retrying",
                    key,
                    exc_info=True,
                    extra={"fluxbase_key": key},
                )
            return
        renewal = store.renew(key, owner, lease)
        try:
            future = asyncio.run_coroutine_threadsafe(renewal, loop)
        except RuntimeError:  # the loop that took the claim is closed
            renewal.close()
            self.drop(owner)
            return

        def done(future: concurrent.futures.Future[bool]) -> None:
            if future.cancelled():
                return
            error = future.exception()
            if error is not None:
                logger.warning(
                    "could not renew the claim on %s; retrying", key, extra={"fluxbase_key": key}
                )
            else:
                self._renewed(owner, claim, future.result())

        future.add_done_callback(done)

    def _renewed(self, owner: str, claim: _Held, held: bool) -> None:
        if not held and self._live.get(owner) is claim:
            self.drop(owner)
            logger.warning(
                "the claim on %s lapsed while its handlers ran; another delivery may run them too",
                claim[1],
                extra={"fluxbase_key": claim[1]},
            )


HEARTBEAT = Heartbeat()
"""The process's heartbeat (reset in a forked child, which inherits no thread and must not
reuse the parent's owner tokens)."""
os.register_at_fork(after_in_child=HEARTBEAT._reset)
