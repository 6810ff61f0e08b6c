"""One small driver object per DB-API module: how to connect, and what a connection's state is.

The pool core knows nothing about any database. It asks its driver five questions: open a
connection, what is its state (idle, in a transaction, closed), roll it back, is it alive,
and make a connection inherited across ``fork()`` harmless. Each driver answers them with
its module's own cheap, local calls, so returning an idle connection costs no round trip.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sqlite3
import stat
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ConfigurationError, DriverNotInstalled
from .urls import SECRET_KEYS, DatabaseURL, parse_url, redact_url

# Connection states, as :meth:`Driver.state` reports them.
IDLE = 0  # no transaction open: the connection can go back as it is
DIRTY = 1  # a transaction may be open: roll back before reuse
CLOSED = 2  # closed by the handler: discard
BROKEN = 3  # the session is gone: discard
UNKNOWN = 4  # the driver cannot tell: roll back, as a precaution, without a warning


def _blind(fd: int) -> None:
    """Point ``fd`` at /dev/null, so a finalizer's goodbye goes nowhere (used after fork).

    The child keeps the descriptor number occupied, so nothing else can reuse it before
    the inherited connection object is finalized.
    """
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return  # the driver closed it and the number was reused: not ours
    except OSError:
        return  # closed already
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


class Driver:
    """Any DB-API 2.0 module, opened by a user's ``connect`` callable.

    Nothing is known about its connections, so every return rolls back and liveness is
    checked with ``SELECT 1``. Subclasses answer the same questions more cheaply.
    """

    #: Scheme-less name shown in logs and ``repr()``.
    name = "dbapi"
    #: What ``paramstyle`` the module's cursors use (PEP 249), when known.
    paramstyle: Optional[str] = None

    def __init__(self, connect: Callable[[], Any], description: str = "connect=") -> None:
        self._connect = connect
        self.description = description
        #: Text to scrub from driver messages before they are logged.
        self.secrets: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    def connect(self) -> Any:
        return self._connect()

    def state(self, conn: Any) -> int:
        if getattr(conn, "closed", False):
            return CLOSED
        return UNKNOWN

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        """Whether ``exc``, raised using ``conn``, means the session is gone."""
        return bool(getattr(conn, "closed", False))

    def bound_connect_time(self, seconds: int) -> None:
        """Cap how long opening a connection may take, unless the URL already says."""

    def reset_session(self, conn: Any) -> None:
        """Clear what a request may have left in the session (``reset="session"``)."""
        raise NotImplementedError(
            f"reset='session' is not available for {self.description}; "
            "pass reset=<a callable> that resets your database's session"
        )

    def ping(self, conn: Any) -> None:
        """Raise if ``conn`` cannot answer a trivial query; leave no transaction open."""
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT 1")
            cursor.fetchall()
        finally:
            cursor.close()
        conn.rollback()

    def close(self, conn: Any) -> None:
        conn.close()

    def detach(self, conn: Any) -> None:
        """Called in a forked child on a connection its parent opened.

        The generic driver cannot know the connection's socket; it keeps a reference so
        the child never finalizes (and so never closes) the parent's session.
        """
        _FOREIGN.append(conn)


# Connections a forked child inherited and must never finalize (see Driver.detach).
_FOREIGN: list = []


class SocketDriver(Driver):
    """A driver whose connections talk over one socket, exposed as ``conn.fileno()``."""

    def detach(self, conn: Any) -> None:
        try:
            fd = conn.fileno()
        except Exception:  # already closed: nothing of the parent's is reachable
            return
        _blind(fd)


class Psycopg2Driver(SocketDriver):
    """PostgreSQL through psycopg2: libpq reports the transaction state locally."""

    name = "postgresql"
    paramstyle = "pyformat"

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        psycopg2 = _import("psycopg2", "postgresql", url)
        from psycopg2 import extensions

        options: Dict[str, Any] = dict(
            host=url.host, port=url.port, user=url.username,
            password=url.password, dbname=url.path.lstrip("/") or None,
        )
        options = {k: v for k, v in options.items() if v is not None}
        options.update(url.query)
        try:  # libpq's own parser names an unknown option without connecting
            extensions.parse_dsn(extensions.make_dsn(**options))
        except psycopg2.ProgrammingError as exc:
            raise ConfigurationError(
                f"invalid connection option in {url.redacted!r}: {_first_line(exc)}"
            ) from None
        super().__init__(connect or (lambda: psycopg2.connect(**options)), url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        self._idle_status = extensions.TRANSACTION_STATUS_IDLE
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def bound_connect_time(self, seconds: int) -> None:
        self._options.setdefault("connect_timeout", max(2, seconds))  # libpq's minimum

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        # psycopg2 marks the connection closed = 2 when it finds the session gone (1 is
        # a close() by the handler); SQLSTATE class 08 and 57P0x say so for the rest.
        if conn.closed == 2:
            return True
        code = getattr(exc, "pgcode", None) or ""
        return isinstance(exc, self._connection_errors) and (
            code.startswith("08") or code in ("57P01", "57P02", "57P03")
        )

    def state(self, conn: Any) -> int:
        if conn.closed:  # 1: closed by a call to close(); 2: psycopg2 found it broken
            return CLOSED if conn.closed == 1 else BROKEN
        return IDLE if conn.get_transaction_status() == self._idle_status else DIRTY

    def ping(self, conn: Any) -> None:
        self._run_outside_transaction(conn, "SELECT 1")

    def reset_session(self, conn: Any) -> None:
        # DISCARD ALL: RESET ALL (SET ROLE and set_config included), SET SESSION
        # AUTHORIZATION DEFAULT, DEALLOCATE ALL, CLOSE ALL, UNLISTEN *, advisory locks
        # released, temporary tables and cached plans dropped.
        self._run_outside_transaction(conn, "DISCARD ALL")

    @staticmethod
    def _run_outside_transaction(conn: Any, statement: str) -> None:
        # Autocommit for this statement alone, so it opens no transaction to roll back:
        # one round trip instead of two. psycopg2 sets the flag locally.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            if not conn.closed:
                conn.autocommit = autocommit


class MySQLdbDriver(SocketDriver):
    """MariaDB and MySQL through mysqlclient (``MySQLdb``).

    ``MySQLdb`` cannot tell whether a transaction is open, and its ``rollback()`` always
    costs a round trip. Its connections are made from a subclass that notes when a
    statement runs, so a request that ran none is returned without a word to the
    server; and that, finalized in a process other than its opener (after ``fork()``),
    first blinds its socket so the ``COM_QUIT`` it sends cannot end the parent's session.
    """

    name = "mysql"
    paramstyle = "format"
    # URL query values arrive as text; these are the mysqlclient options that are not.
    _INT_OPTIONS = frozenset(
        {"connect_timeout", "read_timeout", "write_timeout", "client_flag", "port"}
    )
    _BOOL_OPTIONS = frozenset({"autocommit", "compress", "local_infile", "use_unicode"})
    _STR_OPTIONS = frozenset({
        "charset", "collation", "unix_socket", "init_command", "sql_mode", "ssl_mode",
        "auth_plugin", "server_public_key_path", "read_default_file",
        "read_default_group", "named_pipe", "host", "user", "password", "database",
    })

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        _import("MySQLdb", "mysql", url)
        options: Dict[str, Any] = dict(
            host=url.host, port=url.port, user=url.username,
            password=url.password, database=url.path.lstrip("/") or None,
        )
        options = {k: v for k, v in options.items() if v is not None}
        for key, value in url.query.items():
            options[key] = self._coerce(key, value, url)
        tracked = tracked_mysql_connection_class()
        super().__init__(connect or (lambda: tracked(**options)), url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        import MySQLdb

        self._operational_error = MySQLdb.OperationalError

    def bound_connect_time(self, seconds: int) -> None:
        self._options.setdefault("connect_timeout", seconds)

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        if not conn.open:  # closed by the handler: MySQLdb then raises 2006 too
            return False
        code = exc.args[0] if isinstance(exc, self._operational_error) and exc.args else None
        return code in _MYSQL_DISCONNECT_CODES

    def _coerce(self, key: str, value: str, url: DatabaseURL) -> Any:
        if key in self._INT_OPTIONS:
            if not value.isdigit():
                raise ConfigurationError(
                    f"{key} must be a whole number, not {value!r}, in {url.redacted!r}"
                )
            return int(value)
        if key in self._BOOL_OPTIONS:
            return _parse_bool(key, value, url)
        if key in self._STR_OPTIONS:
            return value
        known = ", ".join(sorted(self._INT_OPTIONS | self._BOOL_OPTIONS | self._STR_OPTIONS))
        raise ConfigurationError(
            f"unknown mysqlclient option {key!r} in {url.redacted!r}; known: {known}"
        )

    def state(self, conn: Any) -> int:
        if not conn.open:
            return CLOSED
        dirty = getattr(conn, "_wsgipool_dirty", None)
        if dirty is None:  # a plain MySQLdb connection, from connect=: it cannot tell
            return UNKNOWN
        if dirty and conn.get_autocommit():  # autocommit: open only after an explicit BEGIN
            return UNKNOWN
        return DIRTY if dirty else IDLE

    def ping(self, conn: Any) -> None:
        conn.ping()  # COM_PING: a round trip that opens no transaction

    def reset_session(self, conn: Any) -> None:
        # mysqlclient has no mysql_reset_connection(); COM_CHANGE_USER to the same user
        # clears the same state (variables, temporary tables, prepared statements,
        # GET_LOCK locks), and costs nothing when no statement ran since the last reset.
        if not getattr(conn, "_wsgipool_used", True):
            return
        if "user" not in self._options:
            raise NotImplementedError("reset='session' on MariaDB needs the user in the URL")
        charset, autocommit = conn.character_set_name(), conn.get_autocommit()
        conn.change_user(self._options["user"], self._options.get("password", ""),
                         self._options.get("database"))
        # The change resets what MySQLdb set up at connect: set it up again.
        conn.set_character_set(charset)
        conn.autocommit(autocommit)
        for option, apply in (("sql_mode", conn.set_sql_mode), ("init_command", conn.query)):
            if option in self._options:
                apply(self._options[option])
        conn._wsgipool_used = conn._wsgipool_dirty = False


# Client and server error codes that mean the session is gone: server has gone away,
# lost connection, server lost, client inactivity timeout, connection killed, shutdown.
_MYSQL_DISCONNECT_CODES = frozenset({2006, 2013, 2055, 4031, 1927, 1053})

_TRACKED_CLASS = None


def tracked_mysql_connection_class() -> type:
    """The ``MySQLdb`` connection subclass that tracks statements and its opener's pid."""
    global _TRACKED_CLASS
    if _TRACKED_CLASS is None:
        from MySQLdb.connections import Connection

        class TrackedConnection(Connection):
            """A ``MySQLdb`` connection that knows whether a statement ran since the last
            commit or rollback, and never says goodbye from a forked child."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self._wsgipool_pid = os.getpid()
                self._wsgipool_dirty = False  # a statement ran since commit or rollback
                self._wsgipool_used = False  # a statement ran since the session was reset
                super().__init__(*args, **kwargs)
                # __init__'s own SET statements open nothing and are part of the setup.
                self._wsgipool_dirty = self._wsgipool_used = False

            def query(self, query: Any) -> None:
                self._wsgipool_dirty = self._wsgipool_used = True
                super().query(query)

            def send_query(self, query: Any) -> None:
                self._wsgipool_dirty = self._wsgipool_used = True
                super().send_query(query)

            def commit(self) -> None:
                super().commit()
                self._wsgipool_dirty = False

            def rollback(self) -> None:
                super().rollback()
                self._wsgipool_dirty = False

            def __del__(self) -> None:
                if self._wsgipool_pid != os.getpid() and self.open:
                    _blind(self.fileno())

        TrackedConnection.__module__ = __name__
        _TRACKED_CLASS = TrackedConnection
    return _TRACKED_CLASS


class SQLiteDriver(Driver):
    """SQLite through the standard library: a file, no server, ``in_transaction`` is local."""

    name = "sqlite"
    paramstyle = "qmark"
    # sqlite3.connect's keyword options, with the type a URL's text becomes.
    _OPTIONS = {
        "timeout": float, "detect_types": int, "isolation_level": str,
        "cached_statements": int, "uri": bool,
    }

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        if url.host or url.username or url.port:
            raise ConfigurationError(
                f"a SQLite URL has no host: use sqlite:///relative.db or "
                f"sqlite:////absolute/path.db, not {url.redacted!r}"
            )
        path = url.path[1:] if url.path.startswith("/") else url.path
        # Resolve now: a later chdir (gunicorn --chdir, a daemon) must not move the file.
        database = path if path in ("", ":memory:") else os.path.abspath(path)
        options: Dict[str, Any] = {"check_same_thread": False}  # requests move between threads
        for key, value in url.query.items():
            options[key] = self._coerce(key, value, url)
        if options.get("isolation_level", "") == "None":
            options["isolation_level"] = None
        target = database or ":memory:"
        self.database = target
        super().__init__(connect or (lambda: sqlite3.connect(target, **options)), url.redacted)

    def _coerce(self, key: str, value: str, url: DatabaseURL) -> Any:
        kind = self._OPTIONS.get(key)
        if kind is None:
            known = ", ".join(sorted(self._OPTIONS))
            raise ConfigurationError(
                f"unknown sqlite3 option {key!r} in {url.redacted!r}; known: {known}"
            )
        if kind is bool:
            return _parse_bool(key, value, url)
        try:
            return kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{key} must be a {kind.__name__}, not {value!r}, in {url.redacted!r}"
            ) from None

    def state(self, conn: Any) -> int:
        try:
            return DIRTY if conn.in_transaction else IDLE
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            return CLOSED

    def ping(self, conn: Any) -> None:
        conn.execute("SELECT 1").fetchall()

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        return False  # a file has no session to lose

    def reset_session(self, conn: Any) -> None:
        # A SQLite connection's session state is its temporary schema (and PRAGMAs,
        # which this does not undo): drop every temporary table, view and trigger.
        temporary = conn.execute(
            "SELECT type, name FROM sqlite_temp_master WHERE type IN ('table', 'view', 'trigger')"
        ).fetchall()
        for kind, name in temporary:
            conn.execute(f'DROP {kind.upper()} IF EXISTS temp."{name}"')
        if conn.in_transaction:
            conn.commit()

    def detach(self, conn: Any) -> None:
        # Closing a parent's SQLite handle in a child can checkpoint or delete the WAL
        # under the parent: keep it referenced and unused instead.
        _FOREIGN.append(conn)


_DRIVERS = {
    "postgresql": Psycopg2Driver, "postgres": Psycopg2Driver,
    "postgresql+psycopg2": Psycopg2Driver,
    "mysql": MySQLdbDriver, "mariadb": MySQLdbDriver,
    "mysql+mysqldb": MySQLdbDriver, "mariadb+mysqldb": MySQLdbDriver,
    "sqlite": SQLiteDriver, "sqlite3": SQLiteDriver,
}

# The pip extra that installs each module a driver needs.
_EXTRAS = {"psycopg2": "postgresql", "MySQLdb": "mysql"}


def make_driver(url: Optional[str], connect: Optional[Callable[[], Any]] = None) -> Driver:
    """Choose the driver for ``url`` (its scheme), or a generic one for ``connect=`` alone."""
    if connect is not None and not callable(connect):
        raise TypeError(f"connect must be callable, not {type(connect).__name__}")
    if url is None:
        if connect is None:
            raise ConfigurationError("give a database URL, or connect= (a callable)")
        return Driver(connect, f"connect={_describe(connect)}")
    parsed = parse_url(url)
    driver_class = _DRIVERS.get(parsed.scheme)
    if driver_class is None:
        schemes = ", ".join(sorted(_DRIVERS))
        raise ConfigurationError(
            f"unsupported database URL scheme {parsed.scheme!r} in {parsed.redacted!r}; "
            f"supported: {schemes}; for any other DB-API driver pass connect="
        )
    return driver_class(parsed, connect)


def _import(module: str, extra: str, url: DatabaseURL) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DriverNotInstalled(
            f"{url.redacted!r} needs the {module} module, which is not installed "
            f"({exc}); install it with: pip install wsgipool[{extra}]"
        ) from None


def _parse_bool(key: str, value: str, url: DatabaseURL) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{key} must be true or false, not {value!r}, in {url.redacted!r}")


def _secrets(url: DatabaseURL) -> Tuple[str, ...]:
    found = [url.password] + [
        value for key, value in url.query.items() if key.lower() in SECRET_KEYS
    ]
    return tuple(secret for secret in found if secret)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _describe(func: Callable[..., Any]) -> str:
    name = getattr(func, "__qualname__", None) or type(func).__name__
    module = getattr(func, "__module__", None) or (inspect.getmodule(func) or "?")
    return f"{module}.{name}"


__all__ = ["BROKEN", "CLOSED", "DIRTY", "UNKNOWN", "IDLE", "Driver", "make_driver", "redact_url"]
