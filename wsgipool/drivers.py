"""One small driver object per DB-API module: how to connect, and what a connection's state is.

The pool core knows nothing about any database. It asks its driver: open a connection;
what is its state (idle, in a transaction, closed) and its autocommit flag; why a
transaction left open matters (it wrote, failed); end any transaction, whatever the mode;
put its flags back; is it alive; which socket it uses (for the watchdog); and make a
connection inherited across ``fork()`` harmless. Each driver answers with its module's
own cheap, local calls, so returning an idle connection costs no round trip.
"""

from __future__ import annotations

import importlib
import inspect
import os
import stat
from typing import Any, Callable, Optional, Tuple

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
    #: ``state()`` says exactly whether a transaction is open (else: whether one may be).
    exact_state = False
    #: The URL opens connections in autocommit mode (a ``connect=`` callable: unknown).
    autocommit_at_connect = False
    #: Each connection is a server's session, counted against its connection limit.
    has_server = True
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
        """End any transaction open on ``conn``, whatever mode the handler left it in."""
        conn.rollback()

    def left_open(self, conn: Any) -> Optional[str]:
        """Before the rollback of a returned connection: why the transaction left open
        matters (it wrote, failed, or was begun explicitly), told from local state only;
        ``None`` for the implicit transaction of plain DB-API use, which may only have read.
        """
        return None

    def autocommit(self, conn: Any) -> Any:
        """The connection's autocommit flag as the driver keeps it (``None``: unknown).

        Read on every return, so it must be local: no round trip.
        """
        return None

    def unchanged(self, conn: Any, autocommit: Any) -> bool:
        """Whether a returned ``conn`` needs nothing done: :meth:`state` is ``IDLE`` and
        the autocommit flag is still ``autocommit``. Runs on every return, so drivers
        answer it in one call from local state; ``False`` sends the return to the
        careful path, which reads :meth:`state` again to learn what to do.
        """
        return self.state(conn) == IDLE and self.autocommit(conn) == autocommit

    def flags(self, conn: Any) -> Tuple[Any, ...]:
        """The driver-side flags of a new connection, autocommit first, to restore later."""
        return (self.autocommit(conn),)

    def restore(self, conn: Any, flags: Tuple[Any, ...], everything: bool) -> None:
        """Put autocommit (and with ``everything``, every flag) back to ``flags``."""

    def fileno(self, conn: Any) -> Optional[int]:
        """The socket the connection talks over, for the watchdog (``None``: none)."""
        try:
            return conn.fileno()
        except Exception:  # no socket, or closed
            return None

    def session_reset_problem(self) -> Optional[str]:
        """Why ``reset="session"`` cannot work here, or ``None`` when it can."""
        if type(self).reset_session is Driver.reset_session:
            return (f"is not available for {self.description}; "
                    "pass reset=<a callable> that resets the session")
        return None

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        """Whether ``exc``, raised using ``conn``, means the session is gone."""
        return bool(getattr(conn, "closed", False))

    def bound_connect_time(self, seconds: int) -> None:
        """Cap how long opening a connection may take, unless the URL already says."""

    def use_transaction_pooling(self) -> None:
        """Open connections that keep nothing on the server between transactions."""

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


# Each URL scheme's driver class, as "module:class", imported when first used.
_DRIVERS = {
    "postgresql": "postgresql:Psycopg2Driver", "postgres": "postgresql:Psycopg2Driver",
    "postgresql+psycopg2": "postgresql:Psycopg2Driver",
    "postgresql+psycopg": "postgresql:PsycopgDriver",
    "mysql": "mysql:MySQLdbDriver", "mariadb": "mysql:MySQLdbDriver",
    "mysql+mysqldb": "mysql:MySQLdbDriver", "mariadb+mysqldb": "mysql:MySQLdbDriver",
    "mysql+pymysql": "mysql:PyMySQLDriver", "mariadb+pymysql": "mysql:PyMySQLDriver",
    "sqlite": "sqlite:SQLiteDriver", "sqlite3": "sqlite:SQLiteDriver",
}


def make_driver(url: Optional[str], connect: Optional[Callable[[], Any]] = None) -> Driver:
    """Choose the driver for ``url`` (its scheme), or a generic one for ``connect=`` alone."""
    if connect is not None and not callable(connect):
        raise TypeError(f"connect must be callable, not {type(connect).__name__}")
    if url is None:
        if connect is None:
            raise ConfigurationError("give a database URL, or connect= (a callable)")
        return Driver(connect, f"connect={_describe(connect)}")
    parsed = parse_url(url)
    where = _DRIVERS.get(parsed.scheme)
    if where is None:
        schemes = ", ".join(sorted(_DRIVERS))
        raise ConfigurationError(
            f"unsupported database URL scheme {parsed.scheme!r} in {parsed.redacted!r}; "
            f"supported: {schemes}; for any other DB-API driver pass connect="
        )
    module, _, class_name = where.partition(":")
    driver_class = getattr(importlib.import_module(f"{__package__}.{module}"), class_name)
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
    """The secrets ``scrub`` may also mask as whole tokens: long ones (see LONG_SECRET)
    that are not also a part the URL shows (user, host, database, another value).

    Masking a password that equals the database name would only tell the reader so.
    """
    from .urls import LONG_SECRET  # the shortest secret scrub searches for

    found = [url.password] + [
        value for key, value in url.query.items() if key.lower() in SECRET_KEYS
    ]
    shown = {url.scheme, url.username, url.host, str(url.port), url.path.lstrip("/")}
    shown.update((url.host or "").split(","))
    shown.update(value for key, value in url.query.items() if key.lower() not in SECRET_KEYS)
    return tuple(secret for secret in found
                 if secret and len(secret) >= LONG_SECRET and secret not in shown)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _describe(func: Callable[..., Any]) -> str:
    name = getattr(func, "__qualname__", None) or type(func).__name__
    module = getattr(func, "__module__", None) or (inspect.getmodule(func) or "?")
    return f"{module}.{name}"


__all__ = ["BROKEN", "CLOSED", "DIRTY", "UNKNOWN", "IDLE", "Driver", "make_driver", "redact_url"]
