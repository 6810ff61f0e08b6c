"""``PoolMiddleware``: one pooled connection per request, in ``environ["db.conn"]``.

Usage::

    from wsgipool import PoolMiddleware
    app = PoolMiddleware(app, "postgresql://app@db/app", max_size=8)

    def handler(environ, start_response):
        cursor = environ["db.conn"].cursor()

The connection is checked out before the app is called and stays checked out while the
response body streams; it goes back when the server calls the response's ``close()``
(PEP 3333), or at once if the app raises. When no connection can be had, the client gets
``503 Service Unavailable`` with ``Retry-After`` instead of a hung or failed request.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import (
    TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Union,
)

from .clock import HoldClock
from .errors import ConfigurationError, ConnectError, PoolClosed, PoolTimeout
from .labels import RequestLabel, request_line
from .pacing import Pacer
from .pool import Pool, PooledConnection
from .exporters import StatsApp
from .request import (
    CONNECTIONS_KEY, DEFAULT, ENVIRON_KEY, LazyConnection, RequestConnections,
)
from .options import MIDDLEWARE_CHECKS, MIDDLEWARE_DEFAULTS, POOL_OPTIONS, unknown_options
from .settings import (
    configured_databases, middleware_options_from_environ, middleware_settings,
    pool_from_environ, pool_from_settings,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = logging.getLogger(__name__)

POOL_KEY = "wsgipool.pool"
_UNAVAILABLE_BODY = b"503 Service Unavailable: no database connection could be had.\n"


class PoolMiddleware:
    """Wrap a WSGI app so each request gets its own pooled DB-API connection.

    ::

        from wsgipool import PoolMiddleware

        def hello(environ, start_response):
            cursor = environ["db.conn"].cursor()
            cursor.execute("SELECT 'hello'")
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [cursor.fetchone()[0].encode()]

        app = PoolMiddleware(hello, "postgresql://app@db/app", max_size=8)

    The connection is checked out before the app is called, stays out while the body
    streams, and goes back when the server calls the response's ``close()`` (at once if
    the app raises). When none can be had within ``timeout``, or the database refuses
    or is lost mid-request, the client gets ``503 Service Unavailable`` with
    ``Retry-After``. The pool is :attr:`pool`; with ``databases``, :attr:`pools`.

    :param app: the WSGI application to wrap.
    :param url_or_pool: a database URL, or a :class:`~wsgipool.Pool` to share. Omitted
        (the default): the settings from :func:`wsgipool.configure` (or
        ``wsgipool.gunicorn.configure``), else the ``DATABASE_URL`` environment variable
        with the ``WSGIPOOL_*`` settings; inside Apache, the first request's ``SetEnv``.
    :param environ_key: where the connection goes in the WSGI environ; default
        ``"db.conn"``.
    :param retry_after: whole seconds sent in ``Retry-After`` with a 503; default 1.
    :param pace_refusals: seconds after its arrival before a request refused for want
        of a connection (the pool's ``timeout`` or ``max_waiting``) gets its 503. Under
        overload, clients that retry at once would otherwise turn fast refusals into a
        flood that takes the CPU from the requests holding connections; while the
        process falls behind, refusals are held longer (up to 1 s more); ``0``: answer
        at once. Default 0.08 (see :doc:`overload`).
    :param server_timing: add a ``Server-Timing: db-wait;dur=<ms>`` response header;
        default ``False``.
    :param stats_path: a path (``"/_pool"``) where this middleware answers the pool's
        stats as JSON, or Prometheus text when asked; default ``None``, off: keep it
        private.
    :param transaction: commit when the app succeeded (no exception, status below 400)
        and roll back otherwise; the commit runs once the body is produced, before its
        last chunk reaches the server, so a failed commit is never sent as a success.
        Default ``False``.
    :param databases: more databases, by name: ``{"reports": url_or_pool}``. A request
        reaches them through ``environ["wsgipool.connections"]["reports"]`` (or
        :func:`wsgipool.connection`), which checks a connection out on first use. A URL
        here gets the same pool options as the middleware's own pool. Default ``None``.
    :param lazy: check the default connection out only when the app first uses
        ``environ["db.conn"]``, so requests that never touch the database take none.
        Default ``False``.
    :param pool_options: keyword options for :class:`~wsgipool.Pool` (``max_size``,
        ``timeout``...), when the middleware builds the pool.
    :raises TypeError: ``app`` is not callable, an option is unknown (the message names
        the closest) or of the wrong type, or pool options come with a ``Pool``.
    :raises wsgipool.ConfigurationError: a bad URL or option value; no URL anywhere
        outside Apache; ``transaction=True`` with a URL that opens connections in
        autocommit mode.

    .. attribute:: pool

       The :class:`~wsgipool.Pool` behind ``environ["db.conn"]`` (``None`` inside
       Apache until the first request has made it from ``SetEnv``).

    .. attribute:: pools

       Every pool of this middleware by name: ``"default"`` and the ``databases``.
    """

    def __init__(
        self,
        app: "WSGIApplication",
        url_or_pool: Union[str, Pool, None] = None,
        *,
        environ_key: str = "db.conn",
        retry_after: int = 1,  # seconds
        server_timing: bool = False,
        stats_path: Optional[str] = None,
        transaction: bool = False,
        databases: Optional[Mapping[str, Union[str, Pool]]] = None,
        lazy: bool = False,
        pace_refusals: float = 0.08,  # seconds
        **pool_options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
        unknown = set(pool_options) - POOL_OPTIONS
        if unknown:
            raise unknown_options("PoolMiddleware()", unknown,
                                  POOL_OPTIONS | set(MIDDLEWARE_CHECKS) | {"databases"})
        given = dict(environ_key=environ_key, retry_after=retry_after,
                     server_timing=server_timing, stats_path=stats_path,
                     transaction=transaction, lazy=lazy, pace_refusals=pace_refusals)
        if url_or_pool is None:
            # Settings made elsewhere (configure(), WSGIPOOL_*) fill what was left at
            # its default here; a keyword given another value wins.
            for option, value in middleware_settings().items():
                if given[option] == MIDDLEWARE_DEFAULTS[option]:
                    given[option] = value
        for option, value in given.items():
            MIDDLEWARE_CHECKS[option](value)
        environ_key, retry_after, server_timing, stats_path, transaction, lazy = (
            given["environ_key"], given["retry_after"], given["server_timing"],
            given["stats_path"], given["transaction"], given["lazy"])
        pace_refusals = given["pace_refusals"]
        if isinstance(url_or_pool, Pool):
            if pool_options:
                raise TypeError(
                    "pool options (%s) go to Pool(), not to a middleware given a Pool"
                    % ", ".join(sorted(pool_options))
                )
            self.pool = url_or_pool
        elif url_or_pool is None or isinstance(url_or_pool, str):
            # None inside Apache with nothing configured: the first request says (SetEnv).
            self.pool = pool_from_settings(url_or_pool, pool_options)  # type: ignore[assignment]
        else:
            raise TypeError(
                f"url_or_pool must be a URL str or a Pool, not {type(url_or_pool).__name__}"
            )
        self.app = app
        named_options = pool_options
        if databases is None and url_or_pool is None:
            databases, named_options = configured_databases(pool_options)
        self.pools = {DEFAULT: self.pool, **_named_pools(databases, named_options)}
        self._waiting_options = pool_options  # for a pool made at the first request
        self._explicit = {option for option, value in
                          zip(MIDDLEWARE_DEFAULTS, (environ_key, retry_after, server_timing,
                                                    stats_path, transaction, lazy,
                                                    pace_refusals))
                          if value != MIDDLEWARE_DEFAULTS[option]}
        self._pool_lock = threading.Lock()
        self._apply(environ_key=environ_key, retry_after=retry_after,
                    server_timing=server_timing, stats_path=stats_path,
                    transaction=transaction, lazy=lazy, pace_refusals=pace_refusals)

    def _apply(self, *, environ_key: str, retry_after: int, server_timing: bool,
               stats_path: Optional[str], transaction: bool, lazy: bool,
               pace_refusals: float) -> None:
        """Set the middleware's options, and what the request path derives from them."""
        if transaction:
            for name, pool in self.pools.items():
                if pool is not None and pool.autocommit_at_connect:
                    raise ConfigurationError(
                        f"transaction=True cannot roll back a request on database {name!r}:"
                        f" its URL opens connections in autocommit mode ({pool.name}); "
                        "drop autocommit from the URL, or transaction=True")
        self.environ_key = environ_key
        self.server_timing = server_timing
        self.transaction = transaction
        self.stats_path = stats_path
        self.lazy = lazy
        self.retry_after = retry_after
        self.pace_refusals = pace_refusals
        self._refusals = _Refusals()
        self._pacer = Pacer()
        # Named pools or lazy checkout: each request gets a RequestConnections.
        self._per_request = lazy or len(self.pools) > 1
        self._stats_app = (StatsApp([p for p in self.pools.values() if p is not None])
                           if stats_path else None)
        self._wraps_start_response = server_timing or transaction
        self._unavailable_headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_UNAVAILABLE_BODY))),
            ("Retry-After", str(retry_after)),
            ("Cache-Control", "no-store"),
        ]

    def __repr__(self) -> str:
        return f"<PoolMiddleware {self.environ_key!r} {self.pool!r}>"

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> Iterable[bytes]:
        pool = self.pool
        if pool is None:
            pool = self._pool_from_first_request(environ)
        if self._stats_app is not None and environ.get("PATH_INFO") == self.stats_path:
            return self._stats_app(environ, start_response)
        if self._per_request:
            return self._call_with_connections(environ, start_response)
        holder = RequestLabel(environ)
        try:
            entry = pool.checkout(None, holder)
        except _UNAVAILABLE as exc:
            # The client learns no more than a 503; the log says why, once.
            return self._unavailable(environ, start_response, exc)
        entry.holder = holder
        environ[self.environ_key] = entry.conn
        environ[ENVIRON_KEY] = self.environ_key  # for wsgipool.connection(environ)
        environ[POOL_KEY] = pool
        waited = entry.waited
        environ["wsgipool.wait_ms"] = "%.3f" % (waited * 1e3) if waited else "0.000"
        clock = environ["wsgipool.hold_ms"] = HoldClock(entry.checked_out)
        return self._serve(environ, start_response, pool, entry, clock)

    def _call_with_connections(self, environ: "WSGIEnvironment",
                               start_response: "StartResponse") -> Iterable[bytes]:
        """``__call__`` with named pools or lazy checkout: connections taken on first use."""
        clock = environ["wsgipool.hold_ms"] = HoldClock()
        connections = environ[CONNECTIONS_KEY] = RequestConnections(self.pools, environ, clock)
        environ[POOL_KEY] = self.pool
        environ[ENVIRON_KEY] = self.environ_key
        environ["wsgipool.wait_ms"] = "0.000"
        if self.lazy:
            environ[self.environ_key] = LazyConnection(connections)
        else:
            try:
                environ[self.environ_key] = connections[DEFAULT]
            except _UNAVAILABLE as exc:
                connections.release()
                return self._unavailable(environ, start_response, exc)
        # For the response iterables this object is both the pool and its entry.
        return self._serve(environ, start_response, connections, connections, clock)

    def _serve(self, environ: "WSGIEnvironment", start_response: "StartResponse",
               owner: Any, entry: Any, clock: HoldClock) -> Iterable[bytes]:
        """Call the app with the request's connection(s) in place; whatever it raises,
        give them back (``owner.checkin(entry)``) before the exception goes on."""
        status: Optional[List[str]] = None
        if self._wraps_start_response:
            start_response, status = self._wrap_start_response(start_response, environ)
        try:
            result = self.app(environ, start_response)
        except _UNAVAILABLE as exc:  # a first use found no connection to be had
            owner.checkin(entry)
            return self._unavailable(environ, start_response, exc, sys.exc_info())
        except Exception as exc:
            lost = owner.is_disconnect(entry, exc)
            owner.checkin(entry)
            if not lost:
                raise
            # The database went away under the app: a retryable 503, not a 500. With
            # exc_info, start_response re-raises if the headers are already out.
            why = f"the database connection was lost ({type(exc).__name__})"
            return self._unavailable(environ, start_response, why, sys.exc_info())
        except BaseException:
            owner.checkin(entry)
            raise
        if self.transaction:
            return TransactionIterable(result, owner, entry, clock, status)
        return ClosingIterable(result, owner, entry, clock)

    def _pool_from_first_request(self, environ: "WSGIEnvironment") -> Pool:
        """Inside Apache, with no URL but ``SetEnv``: make the pool from this request."""
        with self._pool_lock:
            if self.pool is None:
                found = {option: value for option, value in
                         middleware_options_from_environ(environ).items()
                         if option not in self._explicit}
                current = {option: getattr(self, option) for option in MIDDLEWARE_DEFAULTS}
                pool = pool_from_environ(environ, self._waiting_options)
                self.pools[DEFAULT] = pool
                self._apply(**{**current, **found})  # the stats app sees the new pool
                self.pool = pool  # last: other threads go ahead once it is set
                log.info("pool %s made from the first request's environ in pid %d",
                         self.pool.name, os.getpid())
            return self.pool

    def _wrap_start_response(self, start_response: "StartResponse",
                             environ: "WSGIEnvironment") -> Any:
        """Add Server-Timing, and note the status for ``transaction=True``."""
        status: Optional[List[str]] = None
        if self.server_timing:
            start_response = _with_server_timing(start_response, environ)
        if self.transaction:
            status = []
            start_response = _noting_status(start_response, status)
        return start_response, status

    def _unavailable(self, environ: "WSGIEnvironment", start_response: "StartResponse",
                     why: object, exc_info: Any = None) -> List[bytes]:
        if isinstance(why, PoolTimeout) and self.pace_refusals:
            # A queue-full refusal comes at once; a timeout has waited its own pool's
            # timeout (a named database's may differ from the default pool's).
            waited = 0.0 if why.queue_full else why.waited
            self._pacer.hold(self.pace_refusals - waited)
        if not getattr(why, "logged", False):  # else the pool said it, naming the request
            self._refusals.log(environ, why)
        if exc_info is None:
            start_response("503 Service Unavailable", list(self._unavailable_headers))
        else:
            start_response("503 Service Unavailable", list(self._unavailable_headers),
                           exc_info)
        return [_UNAVAILABLE_BODY]


# What a checkout raises when no connection can be had: the client gets a 503.
_UNAVAILABLE = (PoolTimeout, ConnectError, PoolClosed)


class _Refusals:
    """The 503 warnings of one middleware: the first at once, then at most one a second
    saying how many were left unsaid. Under overload a line per refusal would flood
    the log and spend the CPU the requests being served need."""

    __slots__ = ("_next", "_unsaid")
    INTERVAL = 1.0  # seconds

    def __init__(self) -> None:
        self._next = 0.0
        self._unsaid = 0

    def log(self, environ: "WSGIEnvironment", why: object) -> None:
        now = time.monotonic()
        if now < self._next:
            self._unsaid += 1  # (a race between threads may lose a count: only a log line)
            return
        self._next = now + self.INTERVAL
        unsaid, self._unsaid = self._unsaid, 0
        log.warning("answered 503 to %s: %s%s", request_line(environ), why,
                    f" ({unsaid} more 503s since the last line)" if unsaid else "")


def _named_pools(databases: Optional[Mapping[str, Union[str, Pool]]],
                 pool_options: Dict[str, Any]) -> Dict[str, Pool]:
    if databases is None:
        return {}
    if not isinstance(databases, Mapping):
        raise TypeError(f"databases must be a mapping of name to URL or Pool, "
                        f"not {type(databases).__name__}")
    pools = {}
    for name, url_or_pool in databases.items():
        if not isinstance(name, str) or not name or name == DEFAULT:
            raise ConfigurationError(
                f"database names must be non-empty str other than {DEFAULT!r} (the "
                f"middleware's own pool), not {name!r}")
        if isinstance(url_or_pool, Pool):
            pools[name] = url_or_pool
        elif isinstance(url_or_pool, str):
            pools[name] = Pool(url_or_pool, **{**pool_options, "name": name})
        else:
            raise TypeError(f"databases[{name!r}] must be a URL str or a Pool, "
                            f"not {type(url_or_pool).__name__}")
    return pools


def _noting_status(start_response: "StartResponse", noted: List[str]) -> "StartResponse":
    def noting_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        noted[:] = [status]
        if exc_info is None:  # PEP 3333: pass exc_info on only when given
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return noting_start_response


def _with_server_timing(start_response: "StartResponse",
                        environ: "WSGIEnvironment") -> "StartResponse":
    def timed_start_response(status: str, headers: list, exc_info: Any = None) -> Any:
        # Read now: a lazy checkout may have waited since the request began.
        timing = "db-wait;dur=" + environ.get("wsgipool.wait_ms", "0.000")
        headers = [*headers, ("Server-Timing", timing)]  # not the app's list
        if exc_info is None:  # PEP 3333: pass exc_info on only when given
            return start_response(status, headers)
        return start_response(status, headers, exc_info)

    return timed_start_response


class ClosingIterable:
    """The app's response, which gives the connection back when the server closes it.

    The app's own ``close()`` runs first, so a generator's ``finally`` can still use the
    connection; the connection goes back even if that ``close()`` raises. A response the
    server never closes gives its connection back when it is garbage collected.
    """

    __slots__ = ("_result", "_pool", "_entry", "_clock")

    def __init__(self, result: Iterable[bytes], pool: Pool, entry: PooledConnection,
                 clock: "HoldClock") -> None:
        self._result = result
        self._pool = pool
        self._entry: Optional[PooledConnection] = entry
        self._clock = clock

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._result)

    def close(self) -> None:
        entry, self._entry = self._entry, None
        if entry is None:
            return  # closed already: PEP 3333 allows a second call, which does nothing
        try:
            if type(self._result) is not list:  # a list has no close(): no call at all
                self._close_result()
        finally:
            self._clock.stop()
            self._end(entry)

    def _close_result(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()

    def _end(self, entry: PooledConnection) -> None:
        self._pool.checkin(entry)

    def __del__(self) -> None:
        entry = self._entry
        if entry is not None:
            self._entry = None
            # The server never closed us. Finish the app's response first, as close()
            # would (a generator's finally may still use the connection); then discard
            # the connection: it may have been left mid-query.
            try:
                self._close_result()
            except Exception:
                log.exception("closing an abandoned response failed")
            finally:
                self._pool.abandon(entry)


class TransactionIterable(ClosingIterable):
    """A response whose request is one transaction: committed if it succeeded.

    The body is passed on one chunk behind: when the app's iterable is exhausted, the
    transaction commits (status below 400) or rolls back, and only then does the last
    chunk go to the server. A commit that fails raises instead, so the client never
    receives the whole response: a 500 if nothing was sent yet, else a cut-off body.
    """

    __slots__ = ("_status", "_finished")

    def __init__(self, result: Iterable[bytes], pool: Pool, entry: PooledConnection,
                 clock: "HoldClock", status: List[str]) -> None:
        super().__init__(result, pool, entry, clock)
        self._status = status
        self._finished = False

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self._result)
        for previous in chunks:
            break
        else:
            self._finish()
            return
        for chunk in chunks:
            yield previous
            previous = chunk
        self._finish()
        yield previous

    def _finish(self) -> None:
        entry = self._entry
        if entry is None:
            return
        self._finished = True
        succeeded = bool(self._status) and self._status[0][:1] in "123"
        _end_transaction(entry, succeeded)

    def _end(self, entry: PooledConnection) -> None:
        if not self._finished:
            try:  # the body failed or was abandoned: undo the request's work quietly
                _end_transaction(entry, commit=False)
            except Exception:  # broken: the return discards it
                pass
        self._pool.checkin(entry)


def _end_transaction(entry: Union[PooledConnection, RequestConnections], commit: bool) -> None:
    if isinstance(entry, RequestConnections):  # every connection the request took
        entry.finish_transactions(commit)
    elif commit:
        entry.conn.commit()
    else:
        entry.conn.rollback()
