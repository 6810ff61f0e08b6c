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
from os import getpid
from time import monotonic
from time import sleep as _sleep
from typing import Any, Optional

from .errors import ConnectError, PoolClosed, PoolTimeout

log = logging.getLogger(__name__)

_NEVER = float("inf")

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


class Housekeeping:
    """The pool's side of housekeeping (a mixin of :class:`~wsgipool.Pool`): retire idle
    and old connections, keep ``min_size`` open, and open them on demand at boot."""

    def housekeep(self, now: float) -> Optional[float]:
        """Close idle connections past ``max_idle`` (down to ``min_size``) or past
        ``max_lifetime``, and open up to ``min_size``; return when next to be called
        (``None``: closed, nothing more).

        Called by the housekeeping thread (:mod:`wsgipool.housekeeping`).
        """
        if self._closed or self._pid != os.getpid():
            return None
        max_idle = self.max_idle
        due = _NEVER
        with self._lock:
            if self._closed:
                return None
            keep, retire = [], []
            # Idleness shrinks the pool down to min_size, never below (as psycopg_pool);
            # age retires any connection, and the pool reopens what min_size needs.
            shrinkable = self._size - self._closing - self.min_size
            for entry in self._idle:  # the oldest returned first
                if now >= entry.expires:
                    retire.append((entry, "lifetime"))
                    shrinkable -= 1
                elif (max_idle is not None and now - entry.returned >= max_idle
                        and shrinkable > 0):
                    retire.append((entry, "idle"))
                    shrinkable -= 1
                else:
                    keep.append(entry)
                    idle_due = _NEVER if max_idle is None else entry.returned + max_idle
                    # One kept for min_size is past it already: the regular look will do.
                    due = min(due, entry.expires, idle_due if idle_due > now else _NEVER)
            if retire:
                self._idle[:] = keep
                self._closing += len(retire)
        self._discard_all(retire)
        self._open_up_to(self.min_size, keep_going=True)  # a failure paces the next look
        # Look again within a tenth of either limit, so a connection returned after this
        # look is still closed within 110 % of it.
        for limit in (max_idle, self.max_lifetime):
            if limit is not None:
                due = min(due, now + 0.1 * limit)
        if self.min_size and self._size < self.min_size:
            due = min(due, max(self._retry_at, monotonic() + 0.1))
        return due

    def open(self, wait: bool = True, holder: Any = None) -> None:
        """Open ``min_size`` connections (at least one) so the pool can serve, as
        psycopg_pool's ``open(wait=True)`` does.

        With ``wait``, return once they are open, or raise the
        :class:`~wsgipool.ConnectError` that says why not (its cause logged once, naming
        ``holder``); without, open them in the background. Connections already open
        count: a pool that has served returns at once.

        :param wait: wait for them (default ``True``), at most the pool's ``timeout``.
        :param holder: who asks, for the log line of a failure; default ``None``.
        :raises wsgipool.ConnectError: a connection could not be opened.
        :raises wsgipool.PoolTimeout: they were not open within ``timeout``.
        :raises wsgipool.PoolClosed: the pool was closed.
        """
        if self._pid != getpid():
            self._adopt_process()
        if not wait:
            if not self._housekept:
                self._housekept = True
                HOUSEKEEPER.watch(self)
            return
        target = max(1, self.min_size)
        deadline = monotonic() + self.timeout
        while True:
            with self._lock:
                if self._closed:
                    raise PoolClosed(f"pool {self.name} is closed")
                if self._size - self._opening - self._closing >= target:
                    return  # open, idle or in use
            if not self._open_up_to(target, holder):  # the housekeeping is opening them
                if monotonic() >= deadline:
                    raise PoolTimeout(f"pool {self.name} did not open {target} "
                                      f"connection(s) within {self.timeout:.1f} s")
                _sleep(0.01)

    def check_at_boot(self) -> bool:
        """A server integration's check when a worker starts: :meth:`open`, and on failure
        the cause logged once as an error; raised only with ``fail_at_boot``.

        :returns: whether the pool could open its first connections.
        :raises wsgipool.ConnectError: (or ``PoolTimeout``, ``PoolClosed``) only with
            ``fail_at_boot=True``.
        """
        try:
            self.open(wait=True, holder=f"at boot of pid {os.getpid()}")
        except (ConnectError, PoolClosed, PoolTimeout):
            if self.fail_at_boot:
                raise
            return False
        return True

    def _open_up_to(self, target: int, holder: Any = None, keep_going: bool = False) -> bool:
        """Open idle connections until ``target`` are open or being opened; ``False`` if
        none was needed or could be had (someone waits: the rooms are theirs).

        A failed connect is raised (logged once by ``_open``), unless ``keep_going``,
        which also waits out the connect back-off. Whatever interrupts, the rooms of
        connections never tried are given back.
        """
        with self._lock:
            missing = target - (self._size - self._closing)
            if (self._closed or self._waiters or missing <= 0
                    or keep_going and monotonic() < self._retry_at):
                return False
            self._size += missing
            self._opening += missing
        attempted = 0
        try:
            while attempted < missing:
                attempted += 1  # _open frees its own room if it fails
                try:
                    self._open(for_checkout=False, holder=holder)
                except Exception:
                    if not keep_going:
                        raise
        finally:
            if attempted < missing:
                with self._lock:
                    for _ in range(missing - attempted):
                        self._opening -= 1
                        self._free_room()
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
