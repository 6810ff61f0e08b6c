"""A request's connections: several named pools, each checked out on first use.

``PoolMiddleware(app, url, databases={...})`` (or ``lazy=True``) puts a
:class:`RequestConnections` in ``environ["wsgipool.connections"]``. Indexing it by a
pool's name checks a connection out of that pool the first time, and hands back the
same one afterwards; the middleware gives them all back when the response is closed.
A request that asks for nothing takes nothing.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

from .errors import PoolError
from .labels import RequestLabel
from .pool import Pool, PooledConnection

if TYPE_CHECKING:
    from .clock import HoldClock

#: Where the middleware puts the request's :class:`RequestConnections`.
CONNECTIONS_KEY = "wsgipool.connections"
#: The name of the middleware's own pool, the one behind ``environ["db.conn"]``.
DEFAULT = "default"
#: Where the middleware notes its ``environ_key`` (``"db.conn"`` unless told otherwise),
#: so :func:`connection` and ``request.db`` find the connection wherever it was put.
ENVIRON_KEY = "wsgipool.environ_key"


class RequestConnections:
    """The connections of one request, by pool name; a read-only mapping.

    ``connections["reports"]`` is the driver's own connection object (so driver
    functions that check its type accept it), checked out on first access; threads of
    the request that reach for it at once all get the same one.
    """

    # _environ is dropped when the request's connections go back: until then the
    # environ holds this object (and the lazy stand-in), so this is a reference cycle
    # that only the cyclic garbage collector would otherwise break.
    __slots__ = ("_pools", "_entries", "_environ", "_clock", "_done", "_lock")

    def __init__(self, pools: Dict[str, Pool], environ: Dict[str, Any],
                 clock: "HoldClock") -> None:
        self._pools = pools
        self._entries: Dict[str, PooledConnection] = {}  # in checkout order
        self._environ: Optional[Dict[str, Any]] = environ
        self._clock = clock
        self._done = False
        # Threads of one request may reach for a connection at once: one checks out,
        # the others wait for it and get the same one.
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> Any:
        entry = self._entries.get(name)
        if entry is not None:
            return entry.conn
        pool = self._pools.get(name)
        if pool is None:
            raise KeyError(f"no database named {name!r}; this middleware has: "
                           f"{', '.join(self._pools)}")
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:  # another thread of the request took it meanwhile
                return entry.conn
            environ = self._environ
            if self._done or environ is None:
                raise PoolError(f"the response is closed: no connection to {name!r} any more")
            holder = RequestLabel(environ)
            entry = pool.checkout(holder=holder)
            entry.holder = holder
            # A new dict, not an update: readers without the lock see whole ones.
            self._entries = {**self._entries, name: entry}
            self._clock.start(entry.checked_out)
            if entry.waited:
                waited = float(environ.get("wsgipool.wait_ms", 0)) + entry.waited * 1e3
                environ["wsgipool.wait_ms"] = "%.3f" % waited
        return entry.conn

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self._pools else default

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def checked_out(self) -> List[str]:
        """The names this request has taken a connection from so far."""
        return list(self._entries)

    def __repr__(self) -> str:
        return f"<RequestConnections {list(self._pools)} checked out: {list(self._entries)}>"

    # -- the middleware's side -------------------------------------------------------

    def connection_if_taken(self, name: str) -> Optional[Any]:
        entry = self._entries.get(name)
        return None if entry is None else entry.conn

    def is_disconnect(self, _entry: Any, exc: BaseException) -> bool:
        """Whether ``exc`` means one of this request's sessions is gone."""
        return any(self._pools[name].is_disconnect(entry, exc)
                   for name, entry in self._entries.items())

    def finish_transactions(self, commit: bool) -> None:
        """Commit (or roll back) each connection taken, in the order they were taken."""
        for entry in self._entries.values():
            if commit:
                entry.conn.commit()
            else:
                entry.conn.rollback()

    # The middleware's response iterables give back "a pool's entry"; for them this
    # object is both: checkin(self) and abandon(self) end the whole request.

    def checkin(self, _entry: Any = None) -> None:
        self.release()

    def release(self) -> None:
        """Give every connection back, the last taken first; the next one even if one fails."""
        with self._lock:  # a checkout under way in another thread ends first
            self._done = True
            self._environ = None
            entries, self._entries = self._entries, {}
        if not entries:  # lazy, and never used: the common case for such requests
            self._clock.stop()
            return
        error: Optional[BaseException] = None
        for name, entry in reversed(list(entries.items())):
            try:
                self._pools[name].checkin(entry)
            except BaseException as exc:  # pragma: no cover - checkin logs and discards
                error = exc
        self._clock.stop()
        if error is not None:
            raise error

    def abandon(self, _entry: Any = None) -> None:
        """The response was never closed: let each pool discard its connection (from GC).

        No lock: the garbage collector may run in a thread that holds it.
        """
        self._done = True
        self._environ = None
        entries, self._entries = self._entries, {}
        for name, entry in entries.items():
            self._pools[name].abandon(entry)


_set_slot = object.__setattr__


class LazyConnection:
    """``environ["db.conn"]`` with ``lazy=True``: the connection, checked out on first use.

    Reading and setting attributes reach the real connection. Driver functions that check the type
    of their argument (``psycopg2.extensions.register_type``, ``psycopg2.extras``) need
    the real one: ``wsgipool.connection(environ)`` returns it. ``commit()``,
    ``rollback()`` and ``close()`` before any use do nothing: there is nothing to end.
    """

    __slots__ = ("_connections", "_name")

    def __init__(self, connections: RequestConnections, name: str = DEFAULT) -> None:
        # Straight into the slots: our own __setattr__ would cost a call each, per request.
        _set_slot(self, "_connections", connections)
        _set_slot(self, "_name", name)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._connections[self._name], attribute)

    def __setattr__(self, attribute: str, value: Any) -> None:
        # conn.row_factory = ..., conn.autocommit = True: set on the real connection.
        if attribute in LazyConnection.__slots__:
            object.__setattr__(self, attribute, value)
        else:
            setattr(self._connections[self._name], attribute, value)

    def __delattr__(self, attribute: str) -> None:
        if attribute in LazyConnection.__slots__:
            object.__delattr__(self, attribute)
        else:
            delattr(self._connections[self._name], attribute)

    def _end(self, method: str) -> None:
        conn = self._connections.connection_if_taken(self._name)
        if conn is not None:
            getattr(conn, method)()

    def commit(self) -> None:
        self._end("commit")

    def rollback(self) -> None:
        self._end("rollback")

    def close(self) -> None:
        self._end("close")

    def __enter__(self) -> Any:
        return self._connections[self._name].__enter__()

    def __exit__(self, *exc_info: Any) -> Any:
        return self._connections[self._name].__exit__(*exc_info)

    def __repr__(self) -> str:
        conn = self._connections.connection_if_taken(self._name)
        return f"<LazyConnection {self._name!r} {'not taken yet' if conn is None else conn!r}>"


def connection(environ: Dict[str, Any], name: str = DEFAULT) -> Any:
    """The request's real DB-API connection to the database ``name``, checked out now if
    the request has none yet.

    Use it where a driver needs its own connection object, not a lazy stand-in::

        import psycopg2.extras
        import wsgipool

        def app(environ, start_response):
            conn = wsgipool.connection(environ)             # psycopg2's own object
            psycopg2.extras.register_uuid(conn_or_curs=conn)
            reports = wsgipool.connection(environ, "reports")  # a named database
            ...

    :param environ: the WSGI environ of a request inside :class:`~wsgipool.PoolMiddleware`.
    :param name: a name from the middleware's ``databases``; default ``"default"``, the
        middleware's own database (wherever its ``environ_key`` put it).
    :returns: the driver's connection object, the same one for every call in the request.
    :raises KeyError: the middleware has no database called ``name``.
    :raises LookupError: ``environ`` went through no :class:`~wsgipool.PoolMiddleware`.
    :raises wsgipool.PoolTimeout: a first use found no free connection in time (the
        middleware turns this into a 503: let it pass).
    :raises wsgipool.ConnectError: a first use could not open a connection (likewise).
    """
    connections = environ.get(CONNECTIONS_KEY)
    if connections is not None:
        return connections[name]
    if name != DEFAULT:
        raise KeyError(f"no database named {name!r}: the middleware was given no "
                       "databases={...}")
    try:
        return environ[environ.get(ENVIRON_KEY, "db.conn")]
    except KeyError:
        raise LookupError("no wsgipool connection in this environ: is the app wrapped "
                          "in PoolMiddleware?") from None
