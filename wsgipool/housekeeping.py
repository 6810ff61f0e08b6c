"""Per-process housekeeping: close idle connections on time, retire old ones, keep some warm.

Reuse is most-recently-used first, so under light traffic the older idle connections
are never taken, and with no traffic at all nothing is: checking ``max_idle`` only at
checkout would keep them open for ever. One daemon thread per process (a greenlet under
gevent's monkey-patching, which is harmless: it only waits and closes) asks each pool
to tidy itself, then sleeps until the next pool is due.

It starts at a pool's first connection in a process, so a server that makes its pools
in a parent before forking starts none there; a forked child starts its own; it stops
when no open pool is left.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from time import monotonic
from typing import Any, Optional

log = logging.getLogger(__name__)

# The longest the thread sleeps between two looks (seconds), and the shortest.
MAX_SLEEP = 10.0
MIN_SLEEP = 0.05


class Housekeeper:
    """The thread that calls ``pool.housekeep(now)`` on each pool when it is due.

    ``housekeep`` does the pool's chores and returns the monotonic time it next wants
    to be called (``None``: it is closed and wants nothing more).
    """

    def __init__(self) -> None:
        self._pools: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._thread: Optional[threading.Thread] = None
        # Made with the thread, not at import or fork: gevent patches threading in a
        # worker after both, and an unpatched Event would block the whole hub.
        self._wake: Optional[threading.Event] = None
        self._pid = os.getpid()

    def watch(self, pool: Any) -> None:
        """Look after ``pool`` in this process, starting the thread if needed."""
        thread = None
        with _START_LOCK:  # held for a few statements, never across a switch
            if self._pid != os.getpid():  # forked: the parent's thread is not here
                self.__init__()  # type: ignore[misc]
            self._pools.add(pool)
            if self._thread is None:
                self._wake = threading.Event()
                thread = self._thread = threading.Thread(
                    target=self._run, args=(self._wake,), name="wsgipool-housekeeping",
                    daemon=True)
            elif self._wake is not None:
                self._wake.set()  # the new pool may be due before the current sleep ends
        if thread is not None:
            # Started outside the lock: under gevent, start() switches to the new
            # greenlet, which would block on the lock for good.
            thread.start()

    def _run(self, wake: threading.Event) -> None:
        try:
            while self._look(wake):
                pass
        finally:  # however the thread ends, watch() may start a new one
            with _START_LOCK:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _look(self, wake: threading.Event) -> bool:
        """Tidy every pool that is due, then sleep until the next; ``False``: stop."""
        due = None
        pool = None
        for pool in list(self._pools):
            try:
                wanted = pool.housekeep(monotonic())
            except Exception:  # a chore failed (logged by the pool): try again later
                log.exception("housekeeping of pool %s failed", pool.name)
                wanted = monotonic() + MAX_SLEEP
            if wanted is None:
                self._pools.discard(pool)
            elif due is None or wanted < due:
                due = wanted
        pool = None  # while asleep, hold no pool: a dropped one must be collectable
        with _START_LOCK:
            if due is None and not wake.is_set():
                return False  # no open pool left
        delay = MAX_SLEEP if due is None else due - monotonic()
        wake.wait(min(MAX_SLEEP, max(MIN_SLEEP, delay)))
        wake.clear()
        return True


#: The process's housekeeper.
HOUSEKEEPER = Housekeeper()
# Serialises starting the thread; a plain lock, never held across a wait.
_START_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _START_LOCK
    _START_LOCK = threading.Lock()  # a parent thread may have held it at the fork
    HOUSEKEEPER.__init__()  # type: ignore[misc]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
