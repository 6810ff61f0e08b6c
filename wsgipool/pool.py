"""The pool: per-process, thread-safe, lazy, fair, and safe across ``fork()``.

Usage::

    pool = Pool("postgresql://app@db/app", max_size=8)
    with pool.connection() as conn:
        conn.cursor().execute("SELECT 1")

How it works, in short:

* Connections open on demand (none at construction), up to ``max_size``, and idle ones
  are reused most-recently-used first, so the rest age out under ``max_idle``.
* A checkout that finds nothing free queues; a returned connection, or the room left by
  a discarded one, goes straight to the oldest waiter. Nobody can overtake a waiter, so
  nobody starves.
* On return an open transaction is rolled back, and a closed or broken connection is
  discarded. The driver says which, from local state, so an idle return costs no round
  trip.
* After ``fork()`` the child forgets its parent's connections (making them unable to
  touch the parent's sessions) and opens its own.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import random
import sys
import threading
import weakref
from collections import deque
from os import getpid
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Union

from .drivers import BROKEN, CLOSED, DIRTY, IDLE, UNKNOWN, Driver, make_driver
from .errors import ConfigurationError, ConnectError, PoolClosed, PoolTimeout
from .stats import PoolStats
from .options import CHECKS as _CHECKS
from .urls import scrub

log = logging.getLogger(__name__)

#: Why a connection left the pool; the keys of ``stats()["discard_reasons"]``.
DISCARD_REASONS = (
    "broken", "closed", "rollback_failed", "reset_failed", "lifetime", "idle", "fork",
    "leaked", "pool_closed",
)
# Routine retirements are logged at info; every other discard is a repair, a warning.
_ROUTINE = frozenset({"lifetime", "idle", "pool_closed"})

_NEVER = float("inf")

# Back-off between connection attempts while the database refuses them (seconds).
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


class PooledConnection:
    """A connection the pool owns, with the times the pool keeps about it.

    ``conn`` is the driver's own DB-API connection; everything else is the pool's.
    """

    __slots__ = ("conn", "created", "expires", "returned", "checked_out", "waited",
                 "generation", "holder", "warned_for")

    def __init__(self, conn: Any, now: float, expires: float, generation: int) -> None:
        self.conn = conn
        self.created = now
        self.expires = expires
        self.returned = now
        self.checked_out = now
        self.waited = 0.0  # seconds the current checkout waited for it
        self.generation = generation
        self.holder: Any = None  # who holds it (opaque; str() names it in logs)
        self.warned_for = 0.0  # the checkout (its time) already warned about as held long

    def __repr__(self) -> str:
        return f"<PooledConnection {self.conn!r}>"


class _Waiter:
    """A checkout queued for a connection; ``outcome`` is set before ``ready`` is released."""

    __slots__ = ("ready", "outcome")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.outcome: Any = _PENDING


# Outcomes a waiter can be handed besides a PooledConnection.
_PENDING = object()  # still waiting
_ROOM = object()  # no idle connection, but room to open one


class Pool:
    """A per-process pool of DB-API 2.0 connections.

    :param url: ``postgresql://``, ``mysql://`` or ``sqlite:///`` URL (see the README).
    :param connect: a callable returning a new DB-API connection; with a URL it replaces
        how that driver connects, without a URL any DB-API module can be pooled.
    :param max_size: the most connections open at once in this process.
    :param timeout: seconds a checkout waits for a free connection before
        :class:`~wsgipool.PoolTimeout`.
    :param max_lifetime: seconds after which a connection is retired (each one between
        95% and 100% of this, so they do not all reconnect at once); ``None``: never.
    :param max_idle: seconds an idle connection may wait before it is closed; ``None``:
        forever.
    :param pre_ping: ``True`` checks each connection is alive before handing it out; a
        number of seconds checks only connections idle at least that long.
    :param reset: what a returned connection goes through besides the rollback of an
        open transaction: ``"rollback"`` nothing more; ``"session"`` the driver's full
        session reset (PostgreSQL ``DISCARD ALL``, MariaDB ``COM_CHANGE_USER``, SQLite's
        temporary tables dropped); or a callable given the connection.
    :param hold_warning: seconds a checkout may hold its connection before one warning
        names the request (checked on return, and while others wait); ``None``: never.
    :param name: a label for logs and stats; defaults to the redacted URL.
    :param transaction_pooling: the database side pools per transaction (PgBouncer with
        ``pool_mode = transaction``), so consecutive transactions may run on different
        server sessions: ``reset="session"`` is refused, and psycopg 3 prepares no
        statements.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        connect: Optional[Callable[[], Any]] = None,
        max_size: int = 10,
        timeout: float = 10.0,  # seconds; below gunicorn's 30 s worker timeout
        max_lifetime: Optional[float] = 3600.0,  # seconds
        max_idle: Optional[float] = 600.0,  # seconds
        pre_ping: Union[bool, float] = False,
        reset: Union[str, Callable[[Any], Any]] = "rollback",
        hold_warning: Optional[float] = None,  # seconds
        name: Optional[str] = None,
        transaction_pooling: bool = False,
    ) -> None:
        self.max_size = _CHECKS["max_size"](max_size)
        self.timeout = _CHECKS["timeout"](timeout)
        self.max_lifetime = _CHECKS["max_lifetime"](max_lifetime)
        self.max_idle = _CHECKS["max_idle"](max_idle)
        self.pre_ping = _CHECKS["pre_ping"](pre_ping)
        self.hold_warning = _CHECKS["hold_warning"](hold_warning)
        _CHECKS["name"](name)
        self._driver: Driver = make_driver(url, connect)
        self._state = self._driver.state  # bound once: it runs on every return
        _CHECKS["reset"](reset)
        if _CHECKS["transaction_pooling"](transaction_pooling):
            if reset == "session":
                raise ConfigurationError(
                    "reset='session' cannot work with transaction_pooling=True: the reset "
                    "would run on whichever server session the pooler picks, not on the "
                    "one the request used; keep session state per transaction (SET LOCAL)"
                )
            self._driver.use_transaction_pooling()
        self.transaction_pooling = transaction_pooling
        if reset == "session" and type(self._driver).reset_session is Driver.reset_session:
            raise ConfigurationError(
                f"reset='session' is not available for {self._driver.description}; "
                "pass reset=<a callable> that resets the session"
            )
        self.reset = reset
        # None: rollback only; else called on every return, after any rollback.
        self._session_reset: Optional[Callable[[Any], Any]] = (
            None if reset == "rollback"
            else self._driver.reset_session if reset == "session" else reset
        )
        # A connect must not outlast a checkout's wait (a black-holed host would hang).
        self._driver.bound_connect_time(math.ceil(self.timeout))
        self.name = name or self._driver.description
        self._stats = PoolStats(DISCARD_REASONS)
        self._inherited = 0  # parent's connections forgotten since the fork
        self._closed = False
        self._generation = 0
        self._retry_at = 0.0  # while the database refuses: no new attempt before this
        self._backoff = 0.0
        self._init_process_state()
        _LIVE_POOLS.add(self)
        log.info("pool %s created in pid %d (max_size=%d)", self.name, self._pid, self.max_size)
        for announce in ON_POOL_CREATED:
            announce(self)

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: its lock, its connections, its queue.

        The pid is set last: a thread that sees it sees a complete state.
        """
        self._lock = threading.Lock()
        self._idle: List[PooledConnection] = []  # a stack: the last returned is reused first
        self._all: Set[PooledConnection] = set()
        self._waiters: Deque[_Waiter] = deque()
        self._size = 0  # connections open or being opened
        # Checkouts abandoned by garbage collection, which may run while this thread
        # holds the lock: discarded later, by the next checkout, return or stats().
        self._leaked: Deque[PooledConnection] = deque()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (f"<Pool {self.name} size={self._size}/{self.max_size} "
                f"idle={len(self._idle)} pid={self._pid}>")

    @property
    def paramstyle(self) -> Optional[str]:
        """The DB-API ``paramstyle`` of this pool's connections (``None`` if unknown)."""
        return self._driver.paramstyle

    # -- checkout -------------------------------------------------------------------

    def connection(self, timeout: Optional[float] = None) -> "_Lease":
        """Check a connection out for a ``with`` block; it is returned when the block ends."""
        return _Lease(self, timeout)

    def checkout(self, timeout: Optional[float] = None) -> PooledConnection:
        """Take a connection; give it back with :meth:`checkin` exactly once.

        Waits up to ``timeout`` seconds (default: the pool's) when none is free.
        """
        if self._pid != getpid():  # a fork no hook told us about (uWSGI by default)
            self._adopt_process()
        if self._leaked:
            self._reap_leaked()
        lock = self._lock
        lock.acquire()
        idle = self._idle
        if idle:  # the hot path: reuse the most recently returned connection
            entry = idle.pop()
            stats = self._stats
            stats.checkouts += 1
            in_use = self._size - len(idle)
            if in_use > stats.peak_in_use:
                stats.peak_in_use = in_use
            lock.release()
            now = entry.checked_out = monotonic()
            entry.waited = 0.0
            if (now < entry.expires and not self.pre_ping
                    and (self.max_idle is None or now - entry.returned <= self.max_idle)):
                return entry
        else:
            deadline = monotonic() + (self.timeout if timeout is None else timeout)
            entry = self._reserve_or_wait(deadline)  # releases the lock
            if entry is _ROOM:
                return self._open()
        if self._still_good(entry, entry.checked_out):
            return entry
        # Stale or dead: its room is still ours, so a waiter handed it keeps its place
        # instead of queueing again behind everyone.
        return self._open()

    def _count_checkout(self) -> None:
        """With the lock held: a connection is handed to a caller."""
        stats = self._stats
        stats.checkouts += 1
        in_use = self._size - len(self._idle)
        if in_use > stats.peak_in_use:
            stats.peak_in_use = in_use

    def _reserve_or_wait(self, deadline: float) -> Any:
        """With the lock held: take room for a new connection, or queue. Releases the lock."""
        if self._closed:
            self._lock.release()
            raise PoolClosed(f"pool {self.name} is closed")
        if self._size < self.max_size and not self._waiters:
            self._size += 1
            self._lock.release()
            return _ROOM
        started = monotonic()
        held_long = self._long_holders(started) if self.hold_warning is not None else ()
        waiter = _Waiter()
        self._waiters.append(waiter)
        stats = self._stats
        if len(self._waiters) > stats.peak_waiting:
            stats.peak_waiting = len(self._waiters)
        self._lock.release()
        for entry, request in held_long:  # logged outside the lock: handlers may block
            self._log_held(entry, started, request)
        try:
            got = waiter.ready.acquire(timeout=max(0.0, deadline - started))
        except BaseException:  # interrupted (gevent.Timeout, KeyboardInterrupt...)
            self._leave_queue(waiter)
            raise
        now = monotonic()
        with self._lock:
            if not got and waiter.outcome is _PENDING:  # nobody served us: leave the queue
                self._waiters.remove(waiter)
                stats.timeouts += 1
                raise PoolTimeout(
                    f"no connection free in pool {self.name} after {now - started:.3f} s "
                    f"(max_size={self.max_size}, all in use)"
                )
            stats.wait.add(now - started)
        outcome = waiter.outcome
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome is not _ROOM:
            outcome.checked_out = now
            outcome.waited = now - started
        return outcome

    def _leave_queue(self, waiter: _Waiter) -> None:
        """A waiter gives up: leave the queue, or pass on whatever it was just handed."""
        with self._lock:
            outcome = waiter.outcome
            if outcome is _PENDING:
                self._waiters.remove(waiter)
            elif outcome is _ROOM:
                self._free_room()
            elif isinstance(outcome, PooledConnection):
                self._stats.checkouts -= 1
                if self._waiters and not self._closed:
                    self._count_checkout()
                    self._hand_over(outcome)
                else:
                    self._idle.append(outcome)

    def _long_holders(self, now: float) -> List[Any]:
        """With the lock held, all connections busy: the checkouts held too long, not yet
        warned about, each with its request (read now: it changes when returned)."""
        idle = set(self._idle)
        found = []
        for entry in self._all:
            if (entry not in idle and now - entry.checked_out > self.hold_warning
                    and entry.warned_for != entry.checked_out):  # once per checkout
                entry.warned_for = entry.checked_out
                found.append((entry, entry.holder))
        return found

    def _warn_held(self, entry: PooledConnection, now: float) -> None:
        if entry.warned_for != entry.checked_out:  # once per checkout
            entry.warned_for = entry.checked_out
            self._log_held(entry, now, entry.holder)

    def _log_held(self, entry: PooledConnection, now: float, request: Any) -> None:
        log.warning("a connection to %s has been held for %.1f s (hold_warning=%.1f s)%s",
                    self.name, now - entry.checked_out, self.hold_warning,
                    _describe_holder(request))

    def _still_good(self, entry: PooledConnection, now: float) -> bool:
        """Discard a connection just taken from the pool if it is stale or dead; its room
        stays reserved for the caller."""
        idle_for = now - entry.returned
        if self.max_idle is not None and idle_for > self.max_idle:
            self._discard(entry, "idle", checking_out=True)
            return False
        if now >= entry.expires:
            self._discard(entry, "lifetime", checking_out=True)
            return False
        if self.pre_ping is True or (self.pre_ping and idle_for >= self.pre_ping):
            try:
                self._driver.ping(entry.conn)
            except Exception as exc:
                self._discard(entry, "broken", exc, checking_out=True)
                return False
            with self._lock:
                self._stats.pings += 1
        return True

    def _open(self) -> PooledConnection:
        """Open a connection in the room already reserved for it (``_size`` counts it)."""
        generation = self._generation
        started = monotonic()
        try:
            if started < self._retry_at:
                raise ConnectError(
                    f"database {self.name} refused the last attempt; "
                    f"next attempt in {self._retry_at - started:.2f} s"
                )
            conn = self._driver.connect()
        except BaseException as exc:
            with self._lock:
                self._free_room()
                if isinstance(exc, Exception) and not isinstance(exc, ConnectError):
                    self._stats.connect_errors += 1
                    # Double the pause after each refusal, so a down database is not
                    # hammered and requests in between fail at once instead of each
                    # waiting out a connect timeout.
                    if started >= self._retry_at:  # once per window, not per attempt
                        self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_FIRST)
                        self._retry_at = monotonic() + self._backoff
            if not isinstance(exc, Exception) or isinstance(exc, ConnectError):
                raise
            message = scrub(str(exc).strip(), *self._driver.secrets) or type(exc).__name__
            log.error("cannot connect to %s: %s", self.name, message)
            raise ConnectError(f"cannot connect to {self.name}: {message}") from exc
        now = monotonic()
        lifetime = self.max_lifetime
        expires = now + lifetime * (1 - 0.05 * random.random()) if lifetime else _NEVER
        entry = PooledConnection(conn, now, expires, generation)
        entry.waited = now - started  # the connect itself
        with self._lock:
            self._backoff = 0.0
            self._all.add(entry)
            self._stats.connects += 1
            self._stats.connect_time.add(now - started)
            self._count_checkout()
        log.debug("opened a connection to %s (%d open)", self.name, self._size)
        return entry

    # -- checkin ----------------------------------------------------------------------

    def checkin(self, entry: PooledConnection) -> None:
        """Give back a connection taken with :meth:`checkout`: reset it, then reuse or discard."""
        if entry.generation != self._generation:
            return  # taken before a fork, in the parent's life: not ours to touch
        if self._leaked:
            self._reap_leaked()
        try:
            state = self._state(entry.conn)
        except Exception as exc:
            return self._discard(entry, "broken", exc, returning=True)
        if (state != IDLE or self._session_reset is not None) and not self._reset(entry, state):
            return  # discarded
        now = monotonic()
        if now >= entry.expires:
            return self._discard(entry, "lifetime", returning=True)
        if self.hold_warning is not None and now - entry.checked_out > self.hold_warning:
            self._warn_held(entry, now)
        entry.returned = now
        entry.holder = None
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r returned to %s after %.3f ms", entry.conn, self.name,
                      (now - entry.checked_out) * 1e3)
        lock = self._lock
        lock.acquire()
        stats = self._stats
        stats.returns += 1
        stats.hold.add(now - entry.checked_out)
        if self._waiters or self._closed:
            self._return_slow(entry)  # releases the lock
        else:
            self._idle.append(entry)
            lock.release()

    def _reset(self, entry: PooledConnection, state: int) -> bool:
        """Make a returned connection reusable: roll back, or discard it (``False``)."""
        if state == CLOSED:
            self._discard(entry, "closed", returning=True)
            return False
        if state == BROKEN:
            self._discard(entry, "broken", returning=True)
            return False
        if state == DIRTY or state == UNKNOWN:
            try:
                self._driver.rollback(entry.conn)
            except Exception as exc:
                self._discard_failed(entry, "rollback_failed", exc)
                return False
            if state == DIRTY:  # known to be open: the handler forgot it; worth a warning
                log.warning("rolled back a transaction left open on a connection to %s%s",
                            self.name, _describe_holder(entry.holder))
            with self._lock:
                self._stats.rollbacks += 1
        if self._session_reset is not None:
            try:
                self._session_reset(entry.conn)
            except Exception as exc:
                self._discard_failed(entry, "reset_failed", exc)
                return False
        return True

    def _discard_failed(self, entry: PooledConnection, reason: str, exc: Exception) -> None:
        broken = self._driver.is_disconnect(entry.conn, exc)
        self._discard(entry, "broken" if broken else reason, exc, returning=True)

    def _return_slow(self, entry: PooledConnection) -> None:
        """With the lock held: hand a returned connection to a waiter, or close it."""
        if not self._closed:
            self._count_checkout()
            self._hand_over(entry)
            self._lock.release()
            return
        self._lock.release()
        self._discard(entry, "pool_closed")

    def is_disconnect(self, entry: PooledConnection, exc: BaseException) -> bool:
        """Whether ``exc``, raised while using ``entry``, means its session is gone."""
        try:
            return self._driver.is_disconnect(entry.conn, exc)
        except Exception:
            return False

    def abandon(self, entry: PooledConnection) -> None:
        """End a checkout whose holder lost track of it (a response never closed).

        The holder may have left it mid-query, so it is discarded, not reused. Called
        from garbage collection, it takes no lock: the discard happens at the next
        checkout, return or ``stats()``.
        """
        if entry.generation == self._generation and self._pid == os.getpid():
            self._leaked.append(entry)

    def _reap_leaked(self) -> None:
        while self._leaked:
            try:
                entry = self._leaked.popleft()
            except IndexError:  # another thread took the last one
                return
            self._discard(entry, "leaked", returning=True)

    def _hand_over(self, outcome: Any) -> None:
        """With the lock held: serve the oldest waiter a connection, or room to open one."""
        waiter = self._waiters.popleft()
        waiter.outcome = outcome
        waiter.ready.release()

    def _free_room(self) -> None:
        """With the lock held: a connection is gone; its room goes to the oldest waiter."""
        if self._waiters and not self._closed:
            self._hand_over(_ROOM)
        else:
            self._size -= 1

    def _discard(self, entry: PooledConnection, reason: str,
                 exc: Optional[BaseException] = None, *,
                 returning: bool = False, checking_out: bool = False) -> None:
        """Close a connection for good and free its room.

        ``returning``: it ends a checkout (counted as a return); ``checking_out``: it was
        about to be handed out (the checkout is taken back, and the caller keeps the room
        to open another).
        """
        level = logging.INFO if reason in _ROUTINE else logging.WARNING
        if log.isEnabledFor(level):
            cause = f": {scrub(str(exc).strip(), *self._driver.secrets)}" if exc else ""
            log.log(level, "discarded a connection to %s (%s%s)%s", self.name,
                    reason.replace("_", " "), cause, _describe_holder(entry.holder))
        entry.holder = None
        try:
            self._driver.close(entry.conn)
        except Exception:  # already closed or broken: nothing more to free
            pass
        now = monotonic()
        with self._lock:
            stats = self._stats
            self._all.discard(entry)
            stats.discard_reasons[reason] += 1
            stats.closes += 1
            if returning:
                stats.returns += 1
                stats.hold.add(now - entry.checked_out)
            if checking_out:
                stats.checkouts -= 1
            else:
                self._free_room()

    # -- whole pool ---------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """A snapshot of this process's pool figures, as a plain dict (see the README)."""
        if self._pid != os.getpid():  # a new process: its figures start now
            self._adopt_process()
        if self._leaked:
            self._reap_leaked()
        with self._lock:
            return self._stats.snapshot(
                max_size=self.max_size, size=self._size, idle=len(self._idle),
                waiting=len(self._waiters),
            )

    def histograms(self) -> Dict[str, Dict[str, Any]]:
        """The bucket counts behind the ``*_seconds`` stats (for Prometheus exporters)."""
        if self._pid != os.getpid():
            self._adopt_process()
        with self._lock:
            return self._stats.histograms()

    def close(self) -> None:
        """Close idle connections now and the rest as they return; refuse new checkouts."""
        if self._pid != os.getpid():
            self._adopt_process()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            while self._waiters:
                self._hand_over(PoolClosed(f"pool {self.name} was closed"))
        for entry in idle:
            self._discard(entry, "pool_closed")
        log.info("pool %s closed in pid %d", self.name, self._pid)

    # -- fork ---------------------------------------------------------------------------

    def _forget_parent(self) -> None:
        """In a forked child: make every inherited connection harmless and forget it.

        Runs from the fork hook, before anything else in the child; creates no lock
        (under gevent the hub is not patched in yet), so the child's first checkout
        finishes the job in :meth:`_adopt_process`.
        """
        inherited = list(self._all)
        for entry in inherited:
            self._driver.detach(entry.conn)
        self._all = set()
        self._idle = []
        self._generation += 1
        self._inherited += len(inherited)

    def _adopt_process(self) -> None:
        """First use in a new process (forked, with or without fork hooks): start afresh."""
        with _ADOPT_LOCK:
            if self._pid == os.getpid():
                return
            if self._all:  # no fork hook ran (uWSGI without --enable-threads, ...)
                self._forget_parent()
            # Figures are per process: the child starts its own, noting what it dropped.
            stats = PoolStats(DISCARD_REASONS)
            stats.discard_reasons["fork"] = self._inherited
            self._stats = stats
            self._inherited = 0
            self._init_process_state()
            log.info("pool %s adopted by pid %d after fork", self.name, self._pid)


class _Lease:
    """The context manager :meth:`Pool.connection` returns."""

    __slots__ = ("_pool", "_timeout", "_entry")

    def __init__(self, pool: Pool, timeout: Optional[float]) -> None:
        self._pool = pool
        self._timeout = timeout
        self._entry: Optional[PooledConnection] = None

    def __enter__(self) -> Any:
        self._entry = self._pool.checkout(self._timeout)
        return self._entry.conn

    def __exit__(self, *exc_info: Any) -> None:
        entry, self._entry = self._entry, None
        if entry is not None:
            self._pool.checkin(entry)


def _describe_holder(holder: Any) -> str:
    return f", {holder}" if holder is not None else ""


# -- process lifecycle ------------------------------------------------------------------

# Called with each new pool (a server integration's startup line).
ON_POOL_CREATED: List[Callable[["Pool"], None]] = []
# Every pool alive in this process, for the fork hook and the exit handler.
_LIVE_POOLS: "weakref.WeakSet[Pool]" = weakref.WeakSet()
# Serialises the adoption of pools by a new process whose threads race to first use.
_ADOPT_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    global _ADOPT_LOCK
    _ADOPT_LOCK = threading.Lock()  # a parent thread may have held it at the fork
    for pool in list(_LIVE_POOLS):
        pool._forget_parent()


def close_process_pools() -> None:
    """Close every pool this process opened; make any inherited from a parent harmless.

    Runs at exit and from server hooks (gunicorn's ``worker_exit``); safe to call twice.
    """
    for pool in list(_LIVE_POOLS):
        if pool._pid == os.getpid():
            try:
                pool.close()
            except Exception:  # exiting anyway; the server will see the socket close
                log.debug("closing pool %s failed", pool.name, exc_info=True)
        else:
            pool._forget_parent()


def live_pools() -> List[Pool]:
    """The pools alive in this process (for hooks, logs and exporters)."""
    return [pool for pool in list(_LIVE_POOLS) if not pool._closed]


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_process_pools)
if {"mod_wsgi", "_apache", "uwsgi"} & set(sys.modules):  # a server embedding Python
    from . import embedded

    embedded.install()  # mod_python runs no atexit handler: register the same one with it
