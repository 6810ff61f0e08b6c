"""The pool: per-process, thread-safe, lazy, fair, and safe across ``fork()``.

Usage::

    pool = Pool("postgresql://app@db/app", max_size=8)
    with pool.connection() as conn:
        conn.cursor().execute("SELECT 1")

How it works, in short:

* Connections open on demand, up to ``max_size``, and idle ones are reused
  most-recently-used first; the housekeeping thread closes those idle past ``max_idle``,
  retires those past ``max_lifetime`` and keeps ``min_size`` open.
* A checkout that finds nothing free queues; a returned connection, or the room left by
  a discarded one, goes straight to the oldest waiter. Nobody can overtake a waiter, so
  nobody starves.
* On return, an open transaction is rolled back and the state checked again; autocommit
  goes back to its connect-time value. A connection that cannot be made clean is
  discarded. The driver reads the state locally, so an idle return costs no round trip.
* Every round trip the pool makes itself is bounded by ``timeout`` (the watchdog), and
  no exception, ``BaseException`` included, loses a slot or leaves the lock held.
* After ``fork()`` the child forgets its parent's connections (making them unable to
  touch the parent's sessions) and opens its own.

Here: checkout and return (each one readable function), waiting and hand-off, opening,
discarding. Elsewhere: the housekeeping chores and thread (:mod:`wsgipool.housekeeping`),
fork adoption and the process's pools (:mod:`wsgipool.process`), the time bound on
round trips (:mod:`wsgipool.watchdog`), option checks (:mod:`wsgipool.options`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Union

from .drivers import BROKEN, CLOSED, IDLE, UNKNOWN, Driver, make_driver
from .errors import ConfigurationError, ConnectError, PoolClosed, PoolTimeout
from .housekeeping import HOUSEKEEPER, Housekeeping
from .options import CHECKS as _CHECKS
from .options import check_options  # noqa: F401  (re-exported: older imports use it)
from .process import (  # noqa: F401  (re-exported for the server integrations)
    GENERATIONS, ON_POOL_CREATED, UNFORKED, ProcessBound, close_process_pools, live_pools,
    notice_fork, register, warm_at_creation,
)
from .stats import DISCARD_REASONS, HISTOGRAM_BATCH, PoolStats
from .urls import scrub
from .watchdog import WATCHDOG

log = logging.getLogger(__name__)

# Routine retirements are logged at info; every other discard is a repair, a warning.
_ROUTINE = frozenset({"lifetime", "idle", "pool_closed"})

_NEVER = float("inf")

# States a connection may be returned in once made clean: UNKNOWN is a driver that
# cannot tell (a plain connect=), trusted after its rollback.
_SETTLED = (IDLE, UNKNOWN)

# Back-off between connection attempts while the database refuses them (seconds).
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0

# How a discarded connection leaves (see Pool._discard).
_WAS_IDLE = 0  # taken from the idle list: its room is freed
_RETURNED = 1  # it ends a checkout: counted as a return, its room freed
_RETRY = 2  # it was being handed out: the checkout is taken back, its room kept to reopen
_ABORTED = 3  # it was being handed out, and the checkout fails: taken back, room freed


class PooledConnection:
    """A connection the pool owns, with the times the pool keeps about it.

    ``conn`` is the driver's own DB-API connection; everything else is the pool's.
    """

    __slots__ = ("conn", "created", "expires", "returned", "checked_out", "waited",
                 "generation", "holder", "warned_for", "flags", "autocommit", "out")

    def __init__(self, conn: Any, now: float, expires: float, generation: int,
                 flags: Any) -> None:
        self.conn = conn
        self.created = now
        self.expires = expires
        self.returned = now
        self.checked_out = now
        self.waited = 0.0  # seconds the current checkout waited for it
        self.generation = generation
        self.holder: Any = None  # who holds it (opaque; str() names it in logs)
        self.warned_for = 0.0  # the checkout (its time) already warned about as held long
        self.flags = flags  # the driver's connect-time flags; flags[0] is autocommit
        self.autocommit = flags[0]  # read on every return
        self.out = False  # handed to a caller and not yet given back

    def __repr__(self) -> str:
        return f"<PooledConnection {self.conn!r}>"


class _Waiter:
    """A checkout queued for a connection; ``outcome`` is set before ``ready`` is released.

    Whoever serves it counts its wait, under the pool's lock it holds anyway, so a served
    waiter wakes up and goes without taking the lock again.
    """

    __slots__ = ("ready", "outcome", "since")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.outcome: Any = _PENDING
        self.since = monotonic()


# Outcomes a waiter can be handed besides a PooledConnection (or an exception).
_PENDING = object()  # still waiting
_ROOM = object()  # no idle connection, but room to open one


class Pool(Housekeeping, ProcessBound):
    """A per-process pool of DB-API 2.0 connections.

    ::

        from wsgipool import Pool

        pool = Pool("postgresql://app@db/app", max_size=8, pre_ping=30)
        with pool.connection() as conn:   # waits up to timeout, then PoolTimeout
            cursor = conn.cursor()
            cursor.execute("UPDATE counters SET n = n + 1")
            conn.commit()                 # not committed: rolled back on return
        pool.close()

    Nothing connects when the pool is made (unless ``min_size`` asks for it): the first
    checkout opens the first connection. Every option is keyword-only and checked here.

    :param url: the database, as ``postgresql://``, ``postgresql+psycopg://``,
        ``mysql://``, ``mysql+pymysql://`` or ``sqlite:///`` (see *Configuration*);
        default ``None``, which needs ``connect``.
    :param connect: a callable returning a new DB-API connection; with a URL it replaces
        how that driver connects, without a URL any DB-API module can be pooled.
        Default ``None``.
    :param max_size: the most connections open at once in this process; default 10.
    :param min_size: connections the housekeeping keeps open, idle or not: opened in
        the background from the pool's creation (under a server integration, in each
        worker at boot instead; in a forked child from its first use), reopened when
        retired. Default 0; at most ``max_size``.
    :param timeout: seconds a checkout waits for a free connection before
        :class:`~wsgipool.PoolTimeout`; also the bound on each round trip the pool
        makes itself (ping, rollback, reset) and, rounded up, on opening a connection.
        Default 10.0, at most 3600.
    :param max_waiting: the most checkouts queued at once; one that finds that many
        already waiting fails at once with :class:`~wsgipool.PoolTimeout` (counted in
        ``stats()["queue_full"]``), so an overloaded process refuses quickly instead of
        making everyone wait; ``0``: never queue; ``None``: no bound. Default ``None``.
    :param max_lifetime: seconds after which a connection is retired (each one between
        95% and 100% of this, so they do not all reconnect at once); ``None``: never.
        Default 3600.0.
    :param max_idle: seconds an idle connection may wait before it is closed (the pool
        shrinks down to ``min_size``, no further); ``None``: forever. Default 600.0.
    :param pre_ping: ``True`` checks each connection is alive before handing it out; a
        number of seconds checks only connections idle at least that long. Default
        ``False``.
    :param reset: what a returned connection goes through besides the rollback of an
        open transaction and the restoring of autocommit: ``"rollback"`` (the default)
        nothing more; ``"session"`` the driver's full session reset (PostgreSQL
        ``DISCARD ALL``; MariaDB ``COM_CHANGE_USER`` through mysqlclient, which needs the
        user in the URL, or ``COM_RESET_CONNECTION`` through PyMySQL; SQLite's temporary
        tables dropped) and every driver-side flag back to its connect-time value; or a
        callable given the connection, which must leave no transaction open.
    :param hold_warning: seconds a checkout may hold its connection before one warning
        names its holder (checked on return, and while others wait); default ``None``:
        never.
    :param name: a label for logs and stats; default ``None``: the URL, password
        redacted.
    :param transaction_pooling: the database side pools per transaction (PgBouncer with
        ``pool_mode = transaction``), so consecutive transactions may run on different
        server sessions: ``reset="session"`` is refused, and psycopg 3 prepares no
        statements. Default ``False``.
    :param on_connect: a callable given each new connection once, before its first use
        (``SET search_path``, type adapters), and again after each ``reset="session"``,
        which undoes what it set; it must leave no transaction open. If it fails on a
        new connection, the connection is closed; a database error (or a transaction
        left open) fails the checkout as a refused connect would
        (:class:`~wsgipool.ConnectError`, logged with the cause), any other exception
        (a bug in the callable) reaches the caller as it is, with no back-off. After a
        reset, the connection is discarded (reason ``reset_failed``). Default ``None``.
    :param fail_at_boot: when a server starts a worker (gunicorn's
        ``post_worker_init``, a uWSGI worker, an Apache child), a pool that cannot
        connect makes the worker fail to boot (gunicorn then stops) instead of logging
        the cause and serving 503 until the database answers. Default ``False``.
    :raises TypeError: an option of the wrong type, or one no pool has.
    :raises wsgipool.ConfigurationError: a bad URL or option value (``min_size`` above
        ``max_size``, ``reset="session"`` with ``transaction_pooling``...), naming the
        option and the accepted values, never the password.
    :raises wsgipool.DriverNotInstalled: the URL's DB-API module is not installed.

    A pool is a context manager: ``with Pool(url) as pool:`` closes it on exit.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        connect: Optional[Callable[[], Any]] = None,
        max_size: int = 10,
        min_size: int = 0,
        timeout: float = 10.0,  # seconds; below gunicorn's 30 s worker timeout
        max_waiting: Optional[int] = None,  # checkouts queued at once; None: no bound
        max_lifetime: Optional[float] = 3600.0,  # seconds
        max_idle: Optional[float] = 600.0,  # seconds
        pre_ping: Union[bool, float] = False,
        reset: Union[str, Callable[[Any], Any]] = "rollback",
        hold_warning: Optional[float] = None,  # seconds
        name: Optional[str] = None,
        transaction_pooling: bool = False,
        on_connect: Optional[Callable[[Any], Any]] = None,
        fail_at_boot: bool = False,
    ) -> None:
        self.max_size = _CHECKS["max_size"](max_size)
        self.min_size = _CHECKS["min_size"](min_size)
        if min_size > max_size:
            raise ConfigurationError(
                f"min_size must be at most max_size ({max_size}), not {min_size}")
        self.timeout = _CHECKS["timeout"](timeout)
        self.max_waiting = _CHECKS["max_waiting"](max_waiting)
        self.max_lifetime = _CHECKS["max_lifetime"](max_lifetime)
        self.max_idle = _CHECKS["max_idle"](max_idle)
        self.pre_ping = _CHECKS["pre_ping"](pre_ping)
        self.hold_warning = _CHECKS["hold_warning"](hold_warning)
        self.on_connect = _CHECKS["on_connect"](on_connect)
        self.fail_at_boot = _CHECKS["fail_at_boot"](fail_at_boot)
        _CHECKS["name"](name)
        self._driver: Driver = make_driver(url, connect)
        self._state = self._driver.state  # bound once: it runs on every return
        # Seconds since its return a connection is handed out without a second look
        # (_still_good decides the rest): past max_idle it is closed, past pre_ping pinged.
        self._unchecked_for = min(
            _NEVER if self.max_idle is None else self.max_idle,
            _NEVER if self.pre_ping is False else 0.0 if self.pre_ping is True
            else self.pre_ping)
        # Seconds a checkout is held before the return warns (infinite: never).
        self._hold_warning = _NEVER if self.hold_warning is None else self.hold_warning
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
        if reset == "session":
            problem = self._driver.session_reset_problem()
            if problem:
                raise ConfigurationError(f"reset='session' {problem}")
        self.reset = reset
        # None: rollback only; else called on every return, after any rollback.
        self._session_reset: Optional[Callable[[Any], Any]] = (
            None if reset == "rollback"
            else self._driver.reset_session if reset == "session" else reset
        )
        # Whether a return needs nothing done, in one call (with a reset: none does).
        self._unchanged: Callable[[Any, Any], bool] = (
            self._driver.unchanged if self._session_reset is None else _never_unchanged)
        # A connect must not outlast a checkout's wait (a black-holed host would hang).
        self._driver.bound_connect_time(math.ceil(self.timeout))
        self.name = name or self._driver.description
        self._stats = PoolStats(DISCARD_REASONS)
        self._inherited = 0  # parent's connections forgotten since the fork
        self._closed = False
        # Unique among all pools of the process: a connection's generation tells which
        # pool, and which life of it (before or after a fork), handed it out.
        self._generation = next(GENERATIONS)
        self._past_generations: Set[int] = set()
        self._retry_at = 0.0  # while the database refuses: no new attempt before this
        self._backoff = 0.0
        self._init_process_state()
        log.info("pool %s created in pid %d (max_size=%d)", self.name, self._pid, self.max_size)
        register(self)
        if self.min_size and warm_at_creation():  # open them now, in the background
            self._housekept = True
            HOUSEKEEPER.watch(self)

    def _init_process_state(self) -> None:
        """Everything that belongs to one process: its lock, its connections, its queue.

        The pid is set last: a thread that sees it sees a complete state.
        """
        self._lock = threading.Lock()
        self._idle: List[PooledConnection] = []  # a stack: the last returned is reused first
        self._all: Set[PooledConnection] = set()
        self._waiters: Deque[_Waiter] = deque()
        self._size = 0  # connections open or being opened
        self._opening = 0  # of those, being opened (counted in no checkout yet)
        self._closing = 0  # of those, taken out of use to be closed (in no checkout)
        self._housekept = False  # the housekeeping looks after this pool in this process
        # Checkouts abandoned by garbage collection, which may run while this thread
        # holds the lock: discarded later, by the next checkout or stats().
        self._leaked: Deque[PooledConnection] = deque()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return (f"<Pool {self.name} size={self._size}/{self.max_size} "
                f"idle={len(self._idle)} pid={self._pid}>")

    @property
    def autocommit_at_connect(self) -> bool:
        """Whether the URL opens connections in autocommit mode (``?autocommit=true``,
        SQLite's ``isolation_level=None``): nothing a request does can be rolled back."""
        return self._driver.autocommit_at_connect

    @property
    def has_server(self) -> bool:
        """Whether the connections are sessions of a server, which counts them against
        its ``max_connections`` (SQLite's are a file's)."""
        return self._driver.has_server

    @property
    def paramstyle(self) -> Optional[str]:
        """The DB-API ``paramstyle`` of this pool's connections (``None`` if unknown)."""
        return self._driver.paramstyle

    # -- checkout -------------------------------------------------------------------

    def connection(self, timeout: Optional[float] = None) -> "_Lease":
        """Check a connection out for a ``with`` block; it is returned when the block ends.

        ::

            with pool.connection() as conn:
                conn.cursor().execute("SELECT 1")

        :param timeout: seconds to wait for a free connection; default ``None``: the
            pool's ``timeout``.
        :returns: a context manager whose ``__enter__`` returns the driver's own
            connection and whose ``__exit__`` gives it back (rolled back if left in a
            transaction), whatever the block raised.
        :raises wsgipool.PoolTimeout: no connection became free in time.
        :raises wsgipool.ConnectError: a new connection was needed and could not be
            opened (the cause is the driver's error).
        :raises wsgipool.PoolClosed: the pool was closed.
        """
        return _Lease(self, timeout)

    def checkout(self, timeout: Optional[float] = None,
                 holder: Any = None) -> PooledConnection:
        """Take a connection; give it back with :meth:`checkin` exactly once.

        ::

            entry = pool.checkout()
            try:
                entry.conn.cursor().execute("SELECT 1")
            finally:
                pool.checkin(entry)

        :param timeout: seconds to wait when none is free; default ``None``: the pool's
            ``timeout``.
        :param holder: names the caller in log lines (any object; ``str()`` is taken
            only when a line is logged), from a failed connect on. Default ``None``.
        :returns: the checkout's record, whose ``conn`` attribute is the driver's own
            connection; pass the record itself to :meth:`checkin`.
        :raises wsgipool.PoolTimeout: no connection became free within ``timeout``.
        :raises wsgipool.ConnectError: a new connection was needed and could not be
            opened, or the database refused one moments ago (the back-off).
        :raises wsgipool.PoolClosed: the pool was closed.
        """
        if not UNFORKED[0]:  # the first use since a fork, of whatever kind
            notice_fork()
        if self._leaked:
            self._reap_leaked()
        with self._lock:
            idle = self._idle
            if idle:  # the hot path: reuse the most recently returned connection
                entry = idle.pop()
                entry.out = True
                stats = self._stats
                checkouts = stats.checkouts = stats.checkouts + 1
                if checkouts - stats.returns > stats.peak_in_use:  # in use now
                    stats.peak_in_use = checkouts - stats.returns
            else:
                entry = self._reserve_or_queue()
        if entry.__class__ is PooledConnection:
            now = entry.checked_out = monotonic()
            entry.waited = 0.0
            if now < entry.expires and now - entry.returned < self._unchecked_for:
                return entry
        else:
            if entry is not _ROOM:  # queued
                entry = self._wait(entry, self.timeout if timeout is None else timeout)
            if entry is _ROOM:
                return self._open(holder=holder)
            now = entry.checked_out
            if now < entry.expires and now - entry.returned < self._unchecked_for:
                return entry  # just given back by its holder: nothing to look at
        if self._still_good(entry, now):
            return entry
        # Stale or dead: its room is still ours, so a waiter handed it keeps its place
        # instead of queueing again behind everyone.
        return self._open(holder=holder)

    def _count_checkout(self, entry: PooledConnection) -> None:
        """With the lock held: a connection is handed to a caller."""
        entry.out = True
        stats = self._stats
        checkouts = stats.checkouts = stats.checkouts + 1
        if checkouts - stats.returns > stats.peak_in_use:  # in use now, as checkout counts it
            stats.peak_in_use = checkouts - stats.returns

    def _reserve_or_queue(self) -> Any:
        """With the lock held, nothing idle: take room for a new connection, or queue."""
        if self._closed:
            raise PoolClosed(f"pool {self.name} is closed")
        if self._size < self.max_size and not self._waiters:
            self._size += 1
            self._opening += 1
            return _ROOM
        stats = self._stats
        if self.max_waiting is not None and len(self._waiters) >= self.max_waiting:
            stats.queue_full += 1
            refused = PoolTimeout(f"no connection free in pool {self.name} and "
                                  f"{self.max_waiting} checkouts already waiting "
                                  f"(max_waiting={self.max_waiting})")
            refused.queue_full = True
            raise refused
        waiter = _Waiter()
        self._waiters.append(waiter)
        if len(self._waiters) > stats.peak_waiting:
            stats.peak_waiting = len(self._waiters)
        return waiter

    def _wait(self, waiter: _Waiter, timeout: float) -> Any:
        """Wait in the queue for a connection or room; whatever interrupts the wait, what
        the waiter was handed goes on to the next one."""
        started = waiter.since
        try:
            if self.hold_warning is not None:
                self._warn_long_holders(monotonic())
            served = waiter.ready.acquire(
                timeout=min(max(0.0, timeout - (monotonic() - started)), threading.TIMEOUT_MAX))
            now = monotonic()
            if not served:
                with self._lock:
                    if waiter.outcome is _PENDING:  # nobody served us: leave the queue
                        self._waiters.remove(waiter)
                        self._stats.timeouts += 1
                        timed_out = PoolTimeout(
                            f"no connection free in pool {self.name} after "
                            f"{now - started:.3f} s (max_size={self.max_size}, all in use)"
                        )
                        timed_out.waited = now - started  # what the middleware's pace counts
                        raise timed_out
            outcome = waiter.outcome
            if isinstance(outcome, BaseException):
                raise outcome
            if outcome is not _ROOM:
                outcome.checked_out = now
                outcome.waited = now - started
            return outcome
        except (PoolTimeout, PoolClosed):
            raise
        except BaseException:  # interrupted (gevent.Timeout, KeyboardInterrupt...)
            self._leave_queue(waiter)
            raise

    def _leave_queue(self, waiter: _Waiter) -> None:
        """A waiter gives up: leave the queue, or pass on whatever it was just handed."""
        closing = None
        with self._lock:
            outcome, waiter.outcome = waiter.outcome, None
            if outcome is _PENDING:
                if waiter in self._waiters:  # else it left as it timed out, then was cut
                    self._waiters.remove(waiter)
            elif outcome is _ROOM:
                self._opening -= 1
                self._free_room()
            elif isinstance(outcome, PooledConnection):
                self._stats.checkouts -= 1
                if self._closed:
                    closing = outcome
                    self._closing += 1
                elif self._waiters:
                    self._count_checkout(outcome)
                    self._hand_over(outcome)
                else:
                    outcome.out = False
                    self._idle.append(outcome)
        if closing is not None:
            self._discard(closing, "pool_closed", how=_WAS_IDLE)

    def _warn_long_holders(self, now: float) -> None:
        """Name the checkouts held longer than ``hold_warning``, once each, while others
        wait; read under the lock, logged outside it (handlers may block)."""
        found = []
        with self._lock:
            idle = set(self._idle)
            for entry in self._all:
                if (entry not in idle and now - entry.checked_out > self.hold_warning
                        and entry.warned_for != entry.checked_out):  # once per checkout
                    entry.warned_for = entry.checked_out
                    found.append((entry, entry.holder))
        for entry, holder in found:
            self._log_held(entry, now, holder)

    def _log_held(self, entry: PooledConnection, now: float, holder: Any) -> None:
        log.warning("a connection to %s has been held for %.1f s (hold_warning=%.1f s)%s",
                    self.name, now - entry.checked_out, self.hold_warning,
                    _describe_holder(holder))

    def _still_good(self, entry: PooledConnection, now: float) -> bool:
        """Discard a connection just taken from the pool if it is stale or dead; its room
        stays reserved for the caller."""
        idle_for = now - entry.returned
        if self.max_idle is not None and idle_for > self.max_idle:
            self._discard(entry, "idle", how=_RETRY)
            return False
        if now >= entry.expires:
            self._discard(entry, "lifetime", how=_RETRY)
            return False
        if self.pre_ping is True or (self.pre_ping and idle_for >= self.pre_ping):
            if not self._bounded(entry, self._driver.ping, _RETRY, lambda exc: "broken"):
                return False
            with self._lock:
                self._stats.pings += 1
        return True

    def _bounded(self, entry: PooledConnection, work: Callable[[Any], Any], how: int,
                 failed: Callable[[Exception], str]) -> bool:
        """Run ``work(conn)``, round trips of the pool's own, cut after ``timeout`` by the
        watchdog; ``False`` once ``entry`` is discarded (``how``) because it failed.

        The reason is ``unresponsive`` if the watchdog cut it (even as it answered: not
        to be trusted), else ``failed(exc)``; a ``BaseException`` discards it as
        ``interrupted``, frees its room, and goes on.
        """
        guard = None
        try:
            guard = WATCHDOG.start(self._driver.fileno(entry.conn), self.timeout)
            work(entry.conn)
        except Exception as exc:
            reason = "unresponsive" if WATCHDOG.finish(guard) else failed(exc)
            self._discard(entry, reason, exc, how=how)
            return False
        except BaseException as exc:
            WATCHDOG.finish(guard)
            self._discard(entry, "interrupted", exc, how=_ABORTED if how == _RETRY else how)
            raise
        if WATCHDOG.finish(guard):
            self._discard(entry, "unresponsive", how=how)
            return False
        return True

    def _open(self, for_checkout: bool = True, holder: Any = None) -> PooledConnection:
        """Open a connection in the room already reserved for it (``_size`` and
        ``_opening`` count it); hand it out, or with ``for_checkout=False`` make it idle."""
        generation = self._generation
        started = monotonic()
        try:
            if self._closed:
                raise PoolClosed(f"pool {self.name} is closed")
            if started < self._retry_at:
                raise ConnectError(
                    f"database {self.name} refused the last attempt; "
                    f"next attempt in {self._retry_at - started:.2f} s"
                )
            conn = self._driver.connect()
            if self.on_connect is not None:
                self._set_up(conn)
            flags = self._driver.flags(conn)
        except BaseException as exc:
            refused = _refused(exc)
            with self._lock:
                self._opening -= 1
                self._free_room()
                if refused:
                    self._stats.connect_errors += 1
                    # Double the pause after each refusal, so a down database is not
                    # hammered and requests in between fail at once instead of each
                    # waiting out a connect timeout.
                    if started >= self._retry_at:  # once per window, not per attempt
                        self._backoff = min(_BACKOFF_MAX, self._backoff * 2 or _BACKOFF_FIRST)
                        self._retry_at = monotonic() + self._backoff
            if not refused:
                raise  # an interrupt, the pool's own answer, or the application's bug
            message = scrub(str(exc).strip(), *self._driver.secrets) or type(exc).__name__
            log.error("cannot connect to %s: %s%s", self.name, message,
                      _describe_holder(holder))
            error = ConnectError(f"cannot connect to {self.name}: {message}")
            error.logged = True  # the caller need not say it again
            raise error from exc
        now = monotonic()
        lifetime = self.max_lifetime
        expires = now + lifetime * (1 - 0.05 * random.random()) if lifetime else _NEVER
        entry = PooledConnection(conn, now, expires, generation, flags)
        entry.waited = now - started  # the connect itself
        closing = False
        with self._lock:
            self._backoff = 0.0
            self._opening -= 1
            self._all.add(entry)
            self._stats.connects += 1
            self._stats.connect_time.add(now - started)
            if self._closed or generation != self._generation:
                closing = True  # closed (or forked) while it was being opened
                self._closing += 1
            elif for_checkout:
                self._count_checkout(entry)
            elif self._waiters:  # warmed for the pool, but someone is waiting: theirs
                self._count_checkout(entry)
                self._hand_over(entry)
            else:
                self._idle.append(entry)
            start_housekeeping = not self._housekept
            self._housekept = True
        if closing:
            self._discard(entry, "pool_closed", how=_WAS_IDLE)
            if for_checkout:
                raise PoolClosed(f"pool {self.name} was closed")
            return entry
        try:
            if start_housekeeping:
                HOUSEKEEPER.watch(self)  # under gevent Thread.start() switches to the hub
            log.debug("opened a connection to %s (%d open)", self.name, self._size)
        except BaseException:  # a gevent.Timeout or kill due then: not the caller's yet
            if for_checkout:
                self.checkin(entry)
            raise
        return entry

    def _set_up_again(self, conn: Any) -> None:
        """After a session reset: ``on_connect`` once more, leaving no transaction."""
        self.on_connect(conn)
        if self._state(conn) not in _SETTLED:
            raise _StillInTransaction(
                "on_connect left a transaction open; it must commit or roll back")

    def _set_up(self, conn: Any) -> None:
        """Run ``on_connect`` on a new connection; if it fails or leaves a transaction
        open, close the connection and fail as its connect would have."""
        try:
            self.on_connect(conn)
            if self._state(conn) not in _SETTLED:
                raise _StillInTransaction(
                    "on_connect left a transaction open; it must commit or roll back")
        except BaseException:
            try:
                self._driver.close(conn)
            except Exception:  # the original failure is the one worth reporting
                pass
            raise

    # -- checkin ----------------------------------------------------------------------

    def checkin(self, entry: PooledConnection) -> None:
        """Give back a connection taken with :meth:`checkout`: make it clean, then reuse
        or discard it.

        Call it exactly once per checkout. A second call while the connection is idle or
        discarded is refused with a warning; one made after the connection was handed
        to someone else cannot be told from theirs, so keep no handle after the call.
        The rollback and reset are bounded by ``timeout``; whatever interrupts them,
        the connection's room in the pool is given back.

        :param entry: what :meth:`checkout` returned.
        :raises ValueError: ``entry`` came from another pool.
        """
        if not UNFORKED[0]:  # a checkout from before a fork becomes the parent's
            notice_fork()
        if entry.generation != self._generation or not entry.out:
            return self._refuse_checkin(entry)
        entry.out = False
        conn = entry.conn
        try:
            # The common return, idle and as it was, in one driver call; anything else
            # is looked at again, step by step.
            clean = self._unchanged(conn, entry.autocommit)
            state = IDLE if clean else self._state(conn)
        except Exception as exc:
            return self._discard(entry, "broken", exc, how=_RETURNED)
        except BaseException as exc:
            self._discard(entry, "interrupted", exc, how=_RETURNED)
            raise
        if not clean and not self._make_clean(entry, state):
            return  # discarded
        now = monotonic()
        if now >= entry.expires or now - entry.checked_out > self._hold_warning:
            if now >= entry.expires:
                return self._discard(entry, "lifetime", how=_RETURNED)
            if entry.warned_for != entry.checked_out:  # once per checkout
                entry.warned_for = entry.checked_out
                try:
                    self._log_held(entry, now, entry.holder)
                except BaseException as exc:  # a handler interrupted: keep the room
                    self._discard(entry, "interrupted", exc, how=_RETURNED)
                    raise
        entry.returned = now
        entry.holder = None
        with self._lock:  # (no log line here: hold times are in stats())
            stats = self._stats
            stats.returns += 1
            holds = stats.hold.pending  # Histogram.add, inlined
            holds.append(now - entry.checked_out)
            if len(holds) >= HISTOGRAM_BATCH:
                stats.hold.fold()
            if not (self._waiters or self._closed):
                self._idle.append(entry)
                return
            closing = self._closed
            if closing:
                self._closing += 1
            else:
                self._count_checkout(entry)
                self._hand_over(entry, now)
        if closing:
            self._discard(entry, "pool_closed", how=_WAS_IDLE)  # the return is counted
        elif self._leaked:  # others wait: a leaked checkout's room is theirs, now
            self._reap_leaked()

    def _refuse_checkin(self, entry: PooledConnection) -> None:
        """A checkin that must not reach the pool: a connection taken before a fork
        (silently: not ours to touch), a second checkin of one checkout (a warning: the
        connection may already serve someone else), or another pool's (an error)."""
        if entry.generation in self._past_generations:
            return
        if entry.generation != self._generation:
            raise ValueError(f"{entry!r} was not checked out of pool {self.name}")
        log.warning("%r was given back to %s twice; the second time is ignored",
                    entry, self.name)

    def _make_clean(self, entry: PooledConnection, state: int) -> bool:
        """Roll back, reset and restore a returned connection, checking the state after
        each step; discard it (``False``) if it cannot be made clean.

        Each step is bounded by the watchdog, and whatever interrupts it (an exception of
        any kind) discards the connection instead of losing its slot.
        """
        if state == CLOSED or state == BROKEN:
            self._discard(entry, "closed" if state == CLOSED else "broken", how=_RETURNED)
            return False
        driver = self._driver
        step = "rollback_failed"
        warning = driver.left_open(entry.conn) if state != IDLE else None

        def clean(conn: Any) -> None:
            nonlocal step
            if state != IDLE:
                driver.rollback(conn)
                if self._state(conn) not in _SETTLED:
                    raise _StillInTransaction("still in a transaction after the rollback")
            step = "reset_failed"
            if self._session_reset is not None:
                self._session_reset(conn)
                if self._state(conn) != IDLE and not driver.exact_state:
                    driver.rollback(conn)  # it cannot tell a SET from a transaction
                if self._state(conn) not in _SETTLED:
                    raise _StillInTransaction(
                        "the reset left a transaction open; it must commit or roll back")
            driver.restore(conn, entry.flags, self.reset == "session")
            if self.reset == "session" and self.on_connect is not None:
                self._set_up_again(conn)  # the reset undid what it set

        def failed(exc: Exception) -> str:
            return "broken" if driver.is_disconnect(entry.conn, exc) else step

        if not self._bounded(entry, clean, _RETURNED, failed):
            return False
        if state != IDLE:
            # A handler that only read leaves psycopg2's implicit transaction open: normal
            # DB-API use, so a debug line; a transaction the driver knows wrote, failed
            # or was begun explicitly is a bug worth a warning.
            try:
                log.log(logging.DEBUG if warning is None else logging.WARNING,
                        "rolled back a transaction left open on a connection to %s%s%s",
                        self.name, f" ({warning})" if warning else "",
                        _describe_holder(entry.holder))
            except BaseException as exc:  # a log handler interrupted: keep the room
                self._discard(entry, "interrupted", exc, how=_RETURNED)
                raise
            finally:  # it was rolled back, whatever the log handler did
                with self._lock:
                    self._stats.rollbacks += 1
        return True

    def is_disconnect(self, entry: PooledConnection, exc: BaseException) -> bool:
        """Whether ``exc``, raised while using ``entry``, means its session is gone.

        :param entry: what :meth:`checkout` returned.
        :param exc: the exception the holder's use of the connection raised.
        :returns: ``True`` for a lost session (the middleware then answers 503, not 500).
        """
        try:
            return self._driver.is_disconnect(entry.conn, exc)
        except Exception:
            return False

    def abandon(self, entry: PooledConnection) -> None:
        """End a checkout whose holder lost track of it (a response never closed).

        The holder may have left it mid-query, so it is discarded, not reused. Called
        from garbage collection, it takes no lock: the discard happens at the next
        checkout, ``stats()``, or return that serves a waiter.

        :param entry: what :meth:`checkout` returned.
        """
        if entry.generation == self._generation and self._pid == os.getpid():
            self._leaked.append(entry)

    def _reap_leaked(self) -> None:
        while self._leaked:
            try:
                entry = self._leaked.popleft()
            except IndexError:  # another thread took the last one
                return
            self._discard(entry, "leaked", how=_RETURNED)

    def _hand_over(self, outcome: Any, now: Optional[float] = None) -> None:
        """With the lock held: serve the oldest waiter a connection, or room to open one
        (``now``: the caller's clock reading, if it has one)."""
        waiter = self._waiters.popleft()
        if outcome is _ROOM:
            self._opening += 1
        # (A reading taken before the lock may precede a waiter that queued since.)
        waited = (monotonic() if now is None else now) - waiter.since
        self._stats.wait.add(waited if waited > 0.0 else 0.0)
        waiter.outcome = outcome
        waiter.ready.release()

    def _free_room(self) -> None:
        """With the lock held: a connection is gone; its room goes to the oldest waiter."""
        if self._waiters and not self._closed:
            self._hand_over(_ROOM)
        else:
            self._size -= 1

    def _discard(self, entry: PooledConnection, reason: str,
                 exc: Optional[BaseException] = None, *, how: int) -> None:
        """Close a connection for good and account for it, whatever happens meanwhile.

        ``how`` says where it was: taken from the idle list, counted in ``_closing``
        by the caller under the same lock (``_WAS_IDLE``), ending a checkout
        (``_RETURNED``), or being handed out (``_RETRY``: the caller keeps the room to
        open another; ``_ABORTED``: the checkout fails and the room is freed).
        """
        interrupted = False
        try:
            level = logging.INFO if reason in _ROUTINE else logging.WARNING
            if log.isEnabledFor(level):
                cause = f": {scrub(str(exc).strip(), *self._driver.secrets)}" if exc else ""
                log.log(level, "discarded a connection to %s (%s%s)%s", self.name,
                        reason.replace("_", " "), cause, _describe_holder(entry.holder))
            entry.holder = None
            entry.out = False  # a later checkin of it is refused as a second one
            try:
                self._driver.close(entry.conn)
            except Exception:  # already closed or broken: nothing more to free
                pass
        except BaseException:
            interrupted = True  # the caller will not go on to reopen the room
            raise
        finally:
            now = monotonic()
            with self._lock:
                stats = self._stats
                self._all.discard(entry)
                stats.discard_reasons[reason] += 1
                stats.closes += 1
                if how == _RETURNED:
                    stats.returns += 1
                    stats.hold.add(now - entry.checked_out)
                    self._free_room()
                elif how == _WAS_IDLE:
                    self._closing -= 1
                    self._free_room()
                else:
                    stats.checkouts -= 1
                    if how == _RETRY and not interrupted:
                        self._opening += 1
                    else:
                        self._free_room()

    # -- whole pool ---------------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """A snapshot of this process's pool figures, as a plain dict.

        Counts since the pool was made (in this process), gauges for now, and
        ``wait_seconds``, ``hold_seconds`` and ``connect_seconds`` summaries (``count``,
        ``total``, ``max``, ``p50``, ``p95``, ``p99``, in seconds); every key is listed
        under *Operations* in the documentation. Takes the pool's lock for a few
        microseconds.

        :returns: a new dict, safe to keep or serialise as JSON.
        """
        if self._pid != os.getpid():  # a new process: its figures start now
            self._adopt_process()
        if self._leaked:
            self._reap_leaked()
        with self._lock:
            # A connection being closed is gone already, for every figure.
            return self._stats.snapshot(
                max_size=self.max_size, size=self._size - self._closing,
                idle=len(self._idle), waiting=len(self._waiters), opening=self._opening,
            )

    def histograms(self) -> Dict[str, Dict[str, Any]]:
        """The bucket counts behind the ``*_seconds`` stats (for Prometheus exporters)."""
        if self._pid != os.getpid():
            self._adopt_process()
        with self._lock:
            return self._stats.histograms()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close idle connections now and the rest as they return; refuse new checkouts.

        It waits for no server: closing a connection only sends a goodbye. Checkouts
        waiting at the time, and every later one, raise :class:`~wsgipool.PoolClosed`.
        Calling it again does nothing.
        """
        if self._pid != os.getpid():
            self._adopt_process()
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._closing += len(idle)
            while self._waiters:
                self._hand_over(PoolClosed(f"pool {self.name} was closed"))
        try:
            self._discard_all([(entry, "pool_closed") for entry in idle])
        finally:
            log.info("pool %s closed in pid %d", self.name, self._pid)

    def _discard_all(self, entries: List[Any]) -> None:
        """Discard ``(connection, reason)`` pairs taken from the idle list (each counted
        in ``_closing``), every one even if closing one is interrupted; then re-raise."""
        error: Optional[BaseException] = None
        for entry, reason in entries:
            try:
                self._discard(entry, reason, how=_WAS_IDLE)
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error

class _StillInTransaction(Exception):
    """A returned connection is still inside a transaction after it was made clean."""


class _Lease:
    """The context manager :meth:`Pool.connection` returns: the checkout in
    ``__enter__``, the return in ``__exit__``, whatever ends the block."""

    __slots__ = ("_pool", "_timeout", "_entry")

    def __init__(self, pool: Pool, timeout: Optional[float]) -> None:
        self._pool = pool
        self._timeout = timeout

    def __enter__(self) -> Any:
        entry = self._entry = self._pool.checkout(self._timeout)
        return entry.conn

    def __exit__(self, _type: Any, _value: Any, _traceback: Any) -> None:
        self._pool.checkin(self._entry)


def _refused(exc: BaseException) -> bool:
    """Whether a failed open means the database refused it (a DB-API error, a socket
    error, a set-up left in a transaction): counted, logged, a back-off, a
    :class:`ConnectError`. Anything else (an interrupt, the pool's own answer, a bug in
    ``connect=`` or ``on_connect`` such as a ``TypeError``, a framework's configuration
    error) reaches the caller as it is."""
    if not isinstance(exc, Exception) or isinstance(exc, (ConnectError, PoolClosed)):
        return False
    if isinstance(exc, (OSError, _StillInTransaction)):
        return True
    # DB-API 2.0: every error a driver raises derives from its module's ``Error``
    # (Django's wrappers of them too).
    return any(kind.__name__ == "Error" and kind.__module__ != "builtins"
               for kind in type(exc).__mro__)


def _never_unchanged(_conn: Any, _autocommit: Any) -> bool:
    """With a session reset, every return is reset: none goes back as it is."""
    return False


def _describe_holder(holder: Any) -> str:
    return f", {holder}" if holder is not None else ""
