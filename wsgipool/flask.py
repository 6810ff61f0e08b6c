"""Flask: ``get_db()``, the request's pooled connection, and one for CLI commands too.

Usage::

    from flask import Flask
    from wsgipool.flask import Pool, get_db

    app = Flask(__name__)
    app.config["WSGIPOOL_URL"] = "postgresql://app@db/app"
    app.config["WSGIPOOL_MAX_SIZE"] = 8
    pool = Pool(app)              # or pool = Pool(), then pool.init_app(app) in a factory

    @app.get("/")
    def index():
        cursor = get_db().cursor()

``init_app`` wraps ``app.wsgi_app`` in :class:`~wsgipool.PoolMiddleware`, so every
request (the test client's included) gets its connection as it would anywhere else, and
``get_db()`` returns it. Where no request is served (a ``flask`` command, ``flask
shell``, ``with app.app_context():``), ``get_db()`` checks a connection out for the app
context and gives it back when the context ends, whether by an exception or not.

Settings come from ``app.config`` when ``init_app`` runs: ``WSGIPOOL_URL``,
``WSGIPOOL_DATABASES`` (more databases by name), and ``WSGIPOOL_<OPTION>`` for every
pool and middleware option (``WSGIPOOL_MAX_SIZE``, ``WSGIPOOL_LAZY``...), the names the
environment uses everywhere else. Without ``WSGIPOOL_URL``, :func:`wsgipool.configure`
or ``DATABASE_URL`` gives the URL, as for ``PoolMiddleware(app)``.
"""

from __future__ import annotations

import difflib
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from . import settings
from .drivers import make_driver
from .errors import (
    ConfigurationError, ConnectError, DriverNotInstalled, PoolClosed, PoolError, PoolTimeout,
)
from .labels import request_line
from .middleware import POOL_KEY, PoolMiddleware
from .options import CHECKS, MIDDLEWARE_CHECKS
from .pool import Pool as ConnectionPool
from .pool import PooledConnection
from .request import DEFAULT, connection

try:
    import click  # Flask's own dependency
    import flask
    from flask.testing import FlaskClient
except ImportError as exc:
    raise DriverNotInstalled(
        f"wsgipool.flask needs Flask, which is not installed ({exc}); install it with: "
        "pip install flask (or pip install wsgipool[flask])") from None

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["BufferedClient", "Pool", "get_db"]

log = logging.getLogger(__name__)

#: The key of the extension in ``app.extensions``.
EXTENSION = "wsgipool"
PREFIX = "WSGIPOOL_"
URL_KEY = PREFIX + "URL"
DATABASES_KEY = PREFIX + "DATABASES"
# Where an app context keeps the connections it checked out (Flask's advice for
# extensions: g, under a name of their own).
_G_NAME = "_wsgipool_connections"
# Every option by its config key: the names WSGIPOOL_* variables have everywhere.
_OPTION_KEYS: Dict[str, str] = {
    PREFIX + option.upper(): option
    for option in (*CHECKS, "connect", *MIDDLEWARE_CHECKS)
}
# Options whose text is their value; any other option given as text is converted as
# a WSGIPOOL_* environment variable is ("8", "true", "none").
_TEXT_VALUED = ("name", "environ_key", "stats_path")
_UNAVAILABLE = (PoolTimeout, ConnectError, PoolClosed)
_UNAVAILABLE_BODY = b"503 Service Unavailable: no database connection could be had.\n"


class Pool:
    """The Flask extension: a :class:`~wsgipool.PoolMiddleware` around each app's
    ``wsgi_app``, and :meth:`get_db` for its connections.

    ::

        pool = Pool()

        def create_app():
            app = Flask(__name__)
            app.config.from_prefixed_env()   # FLASK_WSGIPOOL_URL=postgresql://...
            pool.init_app(app)
            return app

    One instance may serve several apps; each gets its own pools, made from its own
    config. :attr:`pool`, :attr:`pools` and :meth:`stats` are those of the current app.

    :param app: the Flask app to set up now; ``None``: call :meth:`init_app` later.
    :raises wsgipool.ConfigurationError: a bad ``WSGIPOOL_*`` setting, naming its key.
    """

    def __init__(self, app: Optional["Flask"] = None) -> None:
        # Each app's middleware, weakly both ways (the app holds it as its wsgi_app,
        # and it holds the app): an app a factory made and dropped (one per test) goes,
        # and its pools and their connections with it.
        self._middlewares: "weakref.WeakKeyDictionary[Flask, weakref.ref[PoolMiddleware]]" = (
            weakref.WeakKeyDictionary())
        if app is not None:
            self.init_app(app)

    def init_app(self, app: "Flask") -> None:
        """Read ``app.config``, wrap ``app.wsgi_app``, and register the teardown that
        gives an app context's connections back. Once per app.

        :param app: the Flask app; its config must be complete by now.
        :raises wsgipool.ConfigurationError: a bad ``WSGIPOOL_*`` setting (naming its
            key), no URL anywhere, or ``app.wsgi_app`` already a ``PoolMiddleware``.
        :raises RuntimeError: wsgipool is set up on this app already.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(f"wsgipool is already set up on Flask app {app.name!r}: "
                               "call init_app once per app")
        if isinstance(app.wsgi_app, PoolMiddleware):  # two checkouts per request
            raise ConfigurationError(
                f"app.wsgi_app of Flask app {app.name!r} is a PoolMiddleware already: "
                "remove it, init_app wraps app.wsgi_app itself")
        url, databases, options = settings_from_config(app.config)
        if url is None and not _url_elsewhere():
            raise ConfigurationError(
                f"no database URL for Flask app {app.name!r}: set app.config"
                f"[{URL_KEY!r}] (or call wsgipool.configure(url), or set DATABASE_URL)")
        try:
            middleware = PoolMiddleware(app.wsgi_app, url, databases=databases, **options)
        except (ConfigurationError, TypeError) as exc:
            # What only the whole set can tell (min_size above max_size...).
            raise type(exc)(f"{PREFIX}* in the config of Flask app {app.name!r}: {exc}") from None
        app.wsgi_app = middleware  # type: ignore[method-assign]
        self._middlewares[app] = weakref.ref(middleware)
        app.extensions[EXTENSION] = self
        # First in the list, so it runs last: other teardown functions may still use
        # get_db(), however they were registered.
        app.teardown_appcontext(_give_back)
        app.teardown_appcontext_funcs.insert(0, app.teardown_appcontext_funcs.pop())
        try:
            flask.appcontext_pushed.connect(_forget_ended, app)
        except RuntimeError:  # Flask 2.2 without blinker: a popped context stays ended
            pass
        for error in _UNAVAILABLE:
            app.register_error_handler(error, _unavailable)
        if app.test_client_class is None:
            app.test_client_class = BufferedClient

    # -- the current app's --------------------------------------------------------

    def middleware(self, app: Optional["Flask"] = None) -> PoolMiddleware:
        """The middleware around an app's ``wsgi_app``, and through it its pools.

        :param app: the Flask app; ``None``: the current app (needs an app context).
        """
        if app is None:
            if not flask.has_app_context():
                raise RuntimeError("no Flask app context: pass the app, or use this "
                                   "inside a request, a flask command or app.app_context()")
            app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
        middleware = self._middlewares.get(app, _gone)()
        if middleware is None:
            raise RuntimeError(f"this wsgipool.flask.Pool is not set up on Flask app "
                               f"{app.name!r}: call init_app(app)")
        return middleware

    @property
    def pool(self) -> ConnectionPool:
        """The current app's default pool (``WSGIPOOL_URL``)."""
        return self.middleware().pool

    @property
    def pools(self) -> Dict[str, ConnectionPool]:
        """The current app's pools by name: ``"default"`` and ``WSGIPOOL_DATABASES``."""
        return dict(self.middleware().pools)

    def stats(self, name: Optional[str] = None) -> Dict[str, Any]:
        """``stats()`` of the current app's pool ``name`` (default: the default pool).

        :param name: a database name from ``WSGIPOOL_DATABASES``, or ``None``.
        """
        return _pool_named(self.middleware(), name).stats()

    def get_db(self, name: Optional[str] = None) -> Any:
        """The DB-API connection to database ``name`` (default: ``WSGIPOOL_URL``'s).

        In a request the middleware serves, the request's own: under ``lazy`` (and for
        named databases) checked out at the first call. Elsewhere in an app context, one
        checked out for that context at the first call and given back when it ends.
        The same connection on every call in one request or context.

        :param name: a database name from ``WSGIPOOL_DATABASES``, or ``None``.
        :raises KeyError: no database has that name.
        :raises wsgipool.PoolTimeout: none became free in time (in a view: a 503).
        """
        return self._connection(self.middleware(), name)

    def _connection(self, middleware: PoolMiddleware, name: Optional[str]) -> Any:
        if name is None:
            name = DEFAULT
        elif name not in middleware.pools:
            _pool_named(middleware, name)  # KeyError, naming the databases there are
        if flask.has_request_context():
            environ = flask.request.environ
            if (environ.get(POOL_KEY) is middleware.pool is not None  # served by it
                    and not environ["wsgipool.hold_ms"].stopped):
                return connection(environ, name)
            # A request context with no connection: test_request_context(), or one the
            # test client keeps (with client:) after its response went back.
        return _context_connections(middleware).get(name)


def _gone() -> None:
    return None


class BufferedClient(FlaskClient):
    """``app.test_client()``'s class (unless the app has its own): a response is read
    and closed before ``open()`` returns, as a server would, so the request's
    connection goes back at once. ``buffered=False`` streams; then close the response
    (``with client.get(...) as response:``), or its connection is discarded as leaked."""

    def open(self, *args: Any, buffered: bool = True, **kwargs: Any) -> Any:
        """Werkzeug's ``Client.open``, buffered unless told otherwise.

        :param args: as for ``FlaskClient.open``.
        :param buffered: ``False`` to stream the body; then close the response.
        :param kwargs: as for ``FlaskClient.open``.
        """
        return super().open(*args, buffered=buffered, **kwargs)


def get_db(name: Optional[str] = None) -> Any:
    """The current app's connection to database ``name``: see :meth:`Pool.get_db`.

    ::

        cursor = get_db().cursor()              # in a view, a command, an app context

    :param name: a database name from ``WSGIPOOL_DATABASES``; ``None``: ``WSGIPOOL_URL``'s.
    :raises RuntimeError: no app context, or wsgipool is not set up on the current app.
    :raises KeyError: no database has that name.
    :raises wsgipool.PoolTimeout: none became free in time (in a view: a 503).
    """
    try:
        app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
    except RuntimeError:
        raise RuntimeError("get_db() needs a Flask app context: call it in a request, a "
                           "flask command, or inside with app.app_context():") from None
    extension = app.extensions.get(EXTENSION)
    if extension is None:
        raise RuntimeError(f"wsgipool is not set up on Flask app {app.name!r}:"
                           " call wsgipool.flask.Pool(app) or init_app(app)")
    return extension._connection(extension.middleware(app), name)


class ContextConnections:
    """The connections one app context checked out outside a request, by database name.

    Kept on ``flask.g``; the teardown gives them back, the last taken first. A context
    whose teardown never ran (an earlier teardown function raised) lets the pools
    discard them when it is garbage collected.
    """

    __slots__ = ("_pools", "_entries", "_label", "_lock", "done")

    def __init__(self, pools: Mapping[str, ConnectionPool], label: "ContextLabel") -> None:
        self._pools = pools
        self._entries: Dict[str, PooledConnection] = {}  # in checkout order
        self._label = label
        # Threads sharing the context (copy_current_request_context) check out once.
        self._lock = threading.Lock()
        self.done = False

    def get(self, name: str) -> Any:
        entry = self._entries.get(name)
        if entry is not None:
            return entry.conn
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                if self.done:  # a teardown that runs after ours: nobody would return it
                    raise PoolError(f"the app context is ending: no connection to "
                                    f"{name!r} any more")
                pool = self._pools[name]
                if pool is None:
                    raise ConfigurationError(
                        "the pool is made at the first request (Apache SetEnv); outside a "
                        f"request, set app.config[{URL_KEY!r}] or DATABASE_URL")
                entry = pool.checkout(holder=self._label)
                entry.holder = self._label
                self._entries = {**self._entries, name: entry}
        return entry.conn

    def release(self) -> None:
        """Give every connection back; the next one even if one fails."""
        with self._lock:
            self.done = True
            entries, self._entries = self._entries, {}
        error: Optional[BaseException] = None
        for name, entry in reversed(list(entries.items())):
            try:
                self._pools[name].checkin(entry)
            except BaseException as exc:  # pragma: no cover - checkin logs and discards
                error = error or exc
        if error is not None:
            raise error

    def __del__(self) -> None:
        entries, self._entries = self._entries, {}
        for name, entry in entries.items():
            self._pools[name].abandon(entry)

    def __repr__(self) -> str:
        return f"<ContextConnections {self._label} checked out: {list(self._entries)}>"


class ContextLabel:
    """How logs name an app context's checkout: the app, and the command if any."""

    __slots__ = ("_text",)

    def __init__(self, app: "Flask") -> None:
        command = click.get_current_context(silent=True)
        where = f"command {command.command_path!r}, " if command is not None else ""
        self._text = f"{where}app context of Flask app {app.name!r}"

    def __str__(self) -> str:
        return self._text

    __repr__ = __str__


def _context_connections(middleware: PoolMiddleware) -> ContextConnections:
    connections = flask.g.get(_G_NAME)
    if connections is None:
        app = flask.current_app._get_current_object()  # type: ignore[attr-defined]
        # setdefault: two threads of one context agree on one holder.
        connections = flask.g.setdefault(
            _G_NAME, ContextConnections(middleware.pools, ContextLabel(app)))
    return connections


def _forget_ended(_app: Any, **_signal: Any) -> None:
    """``appcontext_pushed``: a context pushed again after it ended starts afresh."""
    connections = flask.g.get(_G_NAME)
    if connections is not None and connections.done:
        flask.g.pop(_G_NAME, None)


def _give_back(_exc: Optional[BaseException]) -> None:
    """``teardown_appcontext``: the context's connections go back (rolled back if a
    transaction is open), however the context ended."""
    connections = flask.g.get(_G_NAME)
    if connections is not None:
        connections.release()


def _unavailable(exc: PoolError) -> Any:
    """A checkout in a view found no connection (``lazy``, a named database): 503 with
    ``Retry-After``, as the middleware answers when its own checkout fails."""
    if not getattr(exc, "logged", False):
        log.warning("answered 503 to %s: %s", request_line(flask.request.environ), exc)
    middleware = flask.current_app.extensions[EXTENSION].middleware()
    return flask.current_app.response_class(
        _UNAVAILABLE_BODY, 503,
        {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store",
         "Retry-After": str(middleware.retry_after)})


def _pool_named(middleware: PoolMiddleware, name: Optional[str]) -> Any:
    name = DEFAULT if name is None else name
    try:
        return middleware.pools[name]
    except KeyError:
        raise KeyError(f"no database named {name!r}: this app has "
                       f"{', '.join(map(repr, middleware.pools))} "
                       f"(more go in app.config[{DATABASES_KEY!r}])") from None


def _url_elsewhere() -> bool:
    """Whether ``PoolMiddleware(app)`` finds a URL without the app's config (asked
    first, so the error for none at all names the config key)."""
    return (settings._configured is not None
            or settings.server_setting(settings.ENV_VAR) is not None
            or settings.in_apache())


# -- app.config ---------------------------------------------------------------------

def settings_from_config(config: Mapping[str, Any]) -> Tuple[
        Optional[str], Optional[Dict[str, Any]], Dict[str, Any]]:
    """``(url, databases, options)`` from a Flask config, each value checked as
    ``Pool()`` and ``PoolMiddleware()`` check it, with the key in every message."""
    unknown = [key for key in config if isinstance(key, str) and key.startswith(PREFIX)
               and key not in _OPTION_KEYS and key not in (URL_KEY, DATABASES_KEY)]
    if unknown:
        known = sorted([URL_KEY, DATABASES_KEY, *_OPTION_KEYS])
        hints: List[str] = []
        for key in sorted(unknown):
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ConfigurationError(f"unknown wsgipool setting(s) in app.config: "
                                 f"{', '.join(hints)}; known: {', '.join(known)}")
    url = config.get(URL_KEY)
    if url is not None:
        if not isinstance(url, str):
            raise ConfigurationError(
                f"app.config[{URL_KEY!r}] must be a database URL str, not {type(url).__name__}")
        _check_url(f"app.config[{URL_KEY!r}]", url, config.get(PREFIX + "CONNECT"))
    options = {}
    for key, option in _OPTION_KEYS.items():
        if key in config:
            options[option] = _typed(key, option, config[key])
    databases = config.get(DATABASES_KEY)
    if databases is not None:
        if not isinstance(databases, Mapping):
            raise ConfigurationError(
                f"app.config[{DATABASES_KEY!r}] must be a mapping of name to URL or "
                f"wsgipool.Pool, not {type(databases).__name__}")
        for name, other in databases.items():
            if isinstance(other, str):
                _check_url(f"app.config[{DATABASES_KEY!r}][{name!r}]", other,
                           options.get("connect"))
        databases = dict(databases)
    return url, databases, options


def _typed(key: str, option: str, value: Any) -> Any:
    """One option's value: text converted as for a WSGIPOOL_* variable, then checked."""
    if isinstance(value, str) and option not in _TEXT_VALUED and option != "connect":
        try:
            value = settings.TEXT_OPTIONS[option](value)
        except ValueError as exc:
            raise ConfigurationError(f"app.config[{key!r}] = {value!r}: {exc}") from None
    check = _connect if option == "connect" else CHECKS.get(option) or MIDDLEWARE_CHECKS[option]
    try:
        return check(value)
    except (TypeError, ConfigurationError) as exc:
        raise ConfigurationError(f"app.config[{key!r}]: {exc}") from None


def _connect(value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"connect must be a callable or None, not {type(value).__name__}")
    return value


def _check_url(where: str, url: str, connect: Any) -> None:
    try:
        make_driver(url, connect if callable(connect) else None)
    except ConfigurationError as exc:  # DriverNotInstalled too: it keeps its type
        raise type(exc)(f"{where}: {exc}") from None
