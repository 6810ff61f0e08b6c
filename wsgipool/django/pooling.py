"""The pooled half of each Django backend: connect is a checkout, close is a return.

:class:`PooledWrapperMixin` goes before Django's own ``DatabaseWrapper`` in each
backend's class. Each alias gets one :class:`~wsgipool.Pool` per process, made on first
use (and made again if the alias's settings change, as Django's test runner changes
``NAME``); wsgipool's process registry makes it safe across ``fork()``.

A real connection is opened by Django's own ``get_new_connection()`` and set up once by
Django's own steps (autocommit, ``init_connection_state()``: time zone, role,
``init_command``, isolation level; then ``connection_created``), run on a wrapper of
the same alias and settings bound to it: a reused connection costs no setup round trip.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created

from ..errors import ConfigurationError, ConnectError, PoolClosed, PoolError, PoolTimeout
from ..options import CHECKS, POOL_OPTIONS
from ..pool import Pool, PooledConnection
from .labels import CURRENT

log = logging.getLogger(__name__)

#: The ``OPTIONS`` keys that are the pool's (every Pool option but ``connect``, which is
#: Django's own connect); the rest go to Django and the driver as before.
POOL_KEYS = frozenset(POOL_OPTIONS) - {"connect"}
#: Where an alias's settings keep the pool's options once they are out of ``OPTIONS``.
POOL_OPTIONS_KEY = "WSGIPOOL_OPTIONS"

# alias -> (the settings the pool was made for, the pool); one pool per alias.
_POOLS: Dict[str, Tuple[Any, Pool]] = {}
_POOLS_LOCK = threading.Lock()


def pools() -> Dict[str, Pool]:
    """This process's pools, by alias (for stats and exporters)."""
    return {alias: pool for alias, (_, pool) in list(_POOLS.items()) if not pool._closed}


def stats() -> Dict[str, Dict[str, Any]]:
    """Each alias's pool figures in this process, as :meth:`wsgipool.Pool.stats` gives them."""
    return {alias: pool.stats() for alias, pool in pools().items()}


def open_pools(*aliases: str) -> Dict[str, Pool]:
    """Make the pools of ``aliases`` (default: every pooled alias) now, opening no
    connection (unless ``min_size``, and not under a server that does it at boot).

    Call it where the WSGI app is loaded (``wsgi.py``): a server's boot hook then finds
    the pools, as gunicorn's ``post_worker_init`` does to log each worker's connection
    budget and open its first connections (``min_size``, ``fail_at_boot``).
    """
    for alias in aliases or tuple(connections):
        wrapper = connections[alias]
        if isinstance(wrapper, PooledWrapperMixin) and wrapper.pool_applies():
            _pool_for(wrapper)
    return pools()


def close_pool(alias: str) -> None:
    """Close the alias's pool (idle connections now, the rest as they return); the next
    connect makes a new one.

    :param alias: the ``DATABASES`` key whose pool to close; an alias with no pool in
        this process is left alone.
    """
    with _POOLS_LOCK:
        found = _POOLS.pop(alias, None)
    if found is not None:
        found[1].close()


def _pool_for(wrapper: Any) -> Pool:
    key = wrapper.pool_key()
    found = _POOLS.get(wrapper.alias)
    if found is not None and found[0] == key:
        return found[1]
    with _POOLS_LOCK:
        found = _POOLS.get(wrapper.alias)
        if found is not None and found[0] == key:
            return found[1]
        if found is not None:
            # The settings changed (Django's test runner renames the database): the old
            # pool's connections are stale. Closed first, so the new pool takes its name.
            del _POOLS[wrapper.alias]
            found[1].close()
        pool = wrapper.make_pool()
        _POOLS[wrapper.alias] = (key, pool)
    return pool


class _Returned:
    """Stands in for a connection closed inside ``atomic``, until the block ends: the
    pool may already have handed it to another thread, so any use fails as Django's
    use of a closed connection would."""

    __slots__ = ("_error",)

    def __init__(self, error: type) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise self._error("connection already closed (given back to the pool)")


class PooledWrapperMixin:
    """Django's connect and close, on a :class:`~wsgipool.Pool` per alias.

    Not pooled, as in Django: the ``__no_db__`` alias Django uses to create and drop
    test databases, and SQLite in memory (each connection would be another database).
    """

    #: The URL that tells wsgipool which driver reads the connections' state.
    pool_url = ""
    #: ``OPTIONS`` keys both the pool and Django's own backend read.
    shared_options: frozenset = frozenset()

    def __init__(self, settings_dict: Dict[str, Any], alias: str = "default") -> None:
        options = settings_dict.get("OPTIONS") or {}
        found = {k: v for k, v in options.items() if k in POOL_KEYS}
        if any(k not in self.shared_options for k in found):
            # Moved out of OPTIONS in the alias's own dict, not in a copy: Django's test
            # runner changes a wrapper's settings_dict in place for the alias's other
            # threads to follow (a parallel worker's clone, a mirror). Kept beside it,
            # written first: a thread that finds OPTIONS without them finds them there.
            settings_dict[POOL_OPTIONS_KEY] = {
                **(settings_dict.get(POOL_OPTIONS_KEY) or {}), **found}
            settings_dict["OPTIONS"] = {k: v for k, v in options.items()
                                        if k not in POOL_KEYS or k in self.shared_options}
        super().__init__(settings_dict, alias)  # type: ignore[call-arg]
        self.pool_options = {**(settings_dict.get(POOL_OPTIONS_KEY) or {}), **found}
        self._pool_entry: Optional[PooledConnection] = None
        self._pool: Optional[Pool] = None
        if alias != NO_DB_ALIAS:
            self._check_pool_settings()

    def _check_pool_settings(self) -> None:
        where = f"DATABASES[{self.alias!r}]"
        for name, value in self.pool_options.items():
            try:
                CHECKS[name](value)
            except (PoolError, TypeError, ValueError) as exc:
                raise ImproperlyConfigured(f"{where}['OPTIONS']: {exc}") from None
        max_age = self.settings_dict.get("CONN_MAX_AGE", 0)
        if max_age != 0:
            raise ImproperlyConfigured(
                f"{where}['CONN_MAX_AGE'] = {max_age!r} cannot work with "
                f"{self.settings_dict['ENGINE']}: the pool keeps connections open between "
                "requests, and CONN_MAX_AGE would keep each thread's checked out of it; "
                "leave CONN_MAX_AGE at 0 and set OPTIONS['max_lifetime'] / "
                "OPTIONS['max_idle'] instead")
        if self.settings_dict.get("CONN_HEALTH_CHECKS"):
            raise ImproperlyConfigured(
                f"{where}['CONN_HEALTH_CHECKS'] = True has no effect with "
                f"{self.settings_dict['ENGINE']}: set OPTIONS['pre_ping'] = True (or a "
                "number of idle seconds) for the pool to check connections instead")
        if "pool" in (self.settings_dict.get("OPTIONS") or {}):
            raise ImproperlyConfigured(
                f"{where}['OPTIONS']['pool'] (Django's psycopg_pool) cannot be combined "
                f"with {self.settings_dict['ENGINE']}, which is a pool already: drop "
                "OPTIONS['pool'] and put its settings (max_size, min_size, timeout, "
                "max_lifetime, max_idle) in OPTIONS directly")

    # -- the pool ---------------------------------------------------------------------

    def pool_applies(self) -> bool:
        """Whether this wrapper's connections come from a pool."""
        return self.alias != NO_DB_ALIAS

    def make_pool_url(self) -> str:
        """The URL the pool's driver is made from (it never connects with it)."""
        return self.pool_url

    def pool_key(self) -> Any:
        """What the alias's pool is made from: another value means another pool. Its
        last item names the database the pool's sessions are on."""
        where = self.settings_dict
        return (repr(where), repr(self.pool_options), settings.USE_TZ, settings.TIME_ZONE,
                (where["ENGINE"], where.get("HOST"), where.get("PORT"), where["NAME"]))

    def make_pool(self) -> Pool:
        options = dict(self.pool_options)
        options.setdefault("name", self.alias)
        extra = options.pop("on_connect", None)
        set_up = self._set_up_connection
        if extra is None:
            on_connect: Callable[[Any], Any] = set_up
        else:
            def on_connect(conn: Any) -> None:
                set_up(conn)
                extra(conn)
        try:
            return Pool(self.make_pool_url(), connect=self._open_connection,
                        on_connect=on_connect, **options)
        except ConfigurationError as exc:  # options each valid, but not together
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']: {exc}") from None

    def _twin(self, conn: Any = None) -> Any:
        """A wrapper of the same alias and settings, bound to ``conn``, to run Django's
        own connect and setup steps on: whichever thread opens the connection."""
        twin = type(self)(self.settings_dict, self.alias)
        twin.pool_options = self.pool_options
        twin.connection = conn
        return twin

    def _open_connection(self) -> Any:
        """The pool's connect: Django's own ``get_new_connection()``."""
        twin = self._twin()
        return twin.open_real_connection(twin.get_connection_params())

    def open_real_connection(self, params: Dict[str, Any]) -> Any:
        """Open a new connection as Django's own backend does (a hook)."""
        return super().get_new_connection(params)  # type: ignore[misc]

    def _set_up_connection(self, conn: Any) -> None:
        """Django's setup of a new connection, once per real connection (and again after
        a ``reset="session"``, which undid it); it leaves no transaction open."""
        twin = self._twin(conn)
        twin.get_connection_params()  # what the backend keeps on the wrapper (see connect)
        try:
            twin.set_autocommit(self.settings_dict["AUTOCOMMIT"])
            twin.init_connection_state()
            connection_created.send(sender=type(self), connection=twin)
            if not twin.get_autocommit():
                conn.commit()  # what the setup ran is kept, and no transaction is open
        finally:
            twin.connection = None

    # -- Django's connect and close ----------------------------------------------------

    def connect(self) -> None:
        """Take a connection from the pool: Django's ``connect()`` without the setup,
        which the connection had when it was opened."""
        if not self.pool_applies():
            return super().connect()  # type: ignore[misc]
        if self._pool_entry is not None:  # connected already: Django drops the old one
            self._close()
        self.check_settings()  # type: ignore[attr-defined]
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False
        self.health_check_enabled = False
        self.close_at = time.monotonic()  # CONN_MAX_AGE = 0: given back after each request
        self.closed_in_transaction = False
        self.errors_occurred = False
        self.health_check_done = True
        # Local work only; it sets what the backend keeps on the wrapper (SQLite's
        # transaction mode, MySQL's isolation level).
        self.get_connection_params()  # type: ignore[attr-defined]
        pool = _pool_for(self)
        request = CURRENT.get()
        try:
            entry = pool.checkout(holder=request)
        except (PoolTimeout, PoolClosed) as exc:
            if request is not None:
                request.unavailable = exc
            raise
        except ConnectError as exc:
            if request is not None:
                request.unavailable = exc
            # Django and its users catch the driver's error, as without a pool.
            raise self.Database.OperationalError(str(exc)) from exc  # type: ignore
        entry.holder = request  # hold warnings name the request and its view
        self._pool, self._pool_entry = pool, entry
        self.connection = entry.conn
        self.autocommit = self.settings_dict["AUTOCOMMIT"]  # the pool restored it
        self.adopt_connection(entry)
        self.run_on_commit = []

    def adopt_connection(self, entry: PooledConnection) -> None:
        """Set what Django's ``get_new_connection()`` sets on the wrapper (a hook)."""

    def prepare_return(self, entry: PooledConnection) -> None:
        """Undo, locally, what the request changed on the driver's side (a hook)."""

    def _close(self) -> None:
        entry = self._pool_entry
        if entry is None:
            return super()._close()  # type: ignore[misc]
        pool, self._pool_entry, self._pool = self._pool, None, None
        with self.wrap_database_errors:  # type: ignore[attr-defined]
            try:
                self.prepare_return(entry)
            finally:
                pool.checkin(entry)  # type: ignore[union-attr]

    def close_pool(self) -> None:
        """Django's own ``close_pool()`` closes this alias's pool too: Django calls it
        before cloning or dropping a test database (which must have no session on it)
        and from ``ensure_timezone()`` when ``TIME_ZONE`` changes (so no connection
        keeps the old zone)."""
        django_close_pool = getattr(super(), "close_pool", None)
        if django_close_pool is not None:
            django_close_pool()
        close_pool(self.alias)

    def close_if_unusable_or_obsolete(self) -> None:
        """End of request (``CONN_MAX_AGE = 0``): give the connection back. Django would
        first check a connection that saw an error with a round trip; the pool's return
        tells a broken connection locally and discards it."""
        if self._pool_entry is not None:
            self.close()
        else:
            super().close_if_unusable_or_obsolete()  # type: ignore[misc]

    def close(self) -> None:
        returned = self._pool_entry is not None
        super().close()  # type: ignore[misc]
        if returned and self.closed_in_transaction:  # inside atomic: kept until its end
            self.connection = _Returned(self.Database.InterfaceError)  # type: ignore

    def __del__(self) -> None:
        # Dropped while holding a checkout: its thread (or greenlet) ended without
        # Django's close, as after a BaseException in a view (request_finished is never
        # sent) or in a thread that never called close_old_connections(). Django's own
        # connection would be closed with it; the pool discards this one at its next
        # checkout, return or stats(), so the slot is not lost.
        entry = getattr(self, "_pool_entry", None)  # none if __init__ failed early
        if entry is not None:
            self._pool.abandon(entry)  # takes no lock: safe from garbage collection

    def _forget_parent(self) -> None:
        """In a forked child: the parent's checkout is not ours to return."""
        self._pool_entry = self._pool = None
        self.connection = None
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False


def _close_pools_on_test_database(wrapper: Any) -> None:
    """Close the pools with sessions on ``wrapper``'s test database: its alias's, and
    those of the aliases Django's runner points at it (a ``TEST["MIRROR"]``, another
    alias on the same database)."""
    close_pool(wrapper.alias)
    database = wrapper.pool_key()[-1]
    for alias, (key, _) in list(_POOLS.items()):
        if key[-1] == database:
            close_pool(alias)


def creation_class(base: type) -> type:
    """Django's test database creation for a pooled backend: the pools on the test
    database (the alias's and its mirrors') are closed before it is dropped or cloned
    (an idle connection would keep it, or make it unusable as a template)."""

    class DatabaseCreation(base):  # type: ignore[valid-type, misc]
        def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
            _close_pools_on_test_database(self.connection)
            super()._destroy_test_db(test_database_name, verbosity)

        def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
            _close_pools_on_test_database(self.connection)
            super()._clone_test_db(suffix, verbosity, keepdb)

    return DatabaseCreation


def _after_fork_in_child() -> None:
    global _POOLS_LOCK
    _POOLS_LOCK = threading.Lock()  # a parent thread may have held it at the fork
    try:
        wrappers = connections.all(initialized_only=True)
    except Exception:  # settings not configured in this process: nothing to forget
        return
    for wrapper in wrappers:
        if isinstance(wrapper, PooledWrapperMixin) and wrapper._pool_entry is not None:
            wrapper._forget_parent()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
