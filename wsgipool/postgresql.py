"""PostgreSQL drivers: psycopg2 (``postgresql://``) and psycopg 3 (``postgresql+psycopg://``).

Both wrap libpq, which knows the transaction state without a round trip, so an idle
return costs nothing; both reset a session with ``DISCARD ALL`` and recognise a lost
session by its SQLSTATE.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from .cooperative import cooperate
from .drivers import (
    BROKEN, CLOSED, DIRTY, IDLE, SocketDriver, _first_line, _import, _parse_bool, _secrets,
)
from .errors import ConfigurationError
from .urls import DatabaseURL, scrub

# SQLSTATEs that mean the session is gone: class 08 (connection exception), and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
_GONE_STATES = ("57P01", "57P02", "57P03")


# Option values libpq refuses only when connecting (libpq 17/18, fe-connect.c; the
# comparisons are case-sensitive except the TLS versions). An older libpq may still
# refuse a newer value, when connecting.
_LIBPQ_CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
    "sslcertmode": ("disable", "allow", "require"),
}
_TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_LIBPQ_WHOLE_NUMBERS = ("connect_timeout", "keepalives", "keepalives_idle",
                        "keepalives_interval", "keepalives_count", "tcp_user_timeout")


def _check_libpq_values(options: Dict[str, Any], url: DatabaseURL) -> None:
    """Refuse, naming the option and what it accepts, what libpq would refuse on every
    connect (unknown options are libpq's own parser's to name)."""
    where = f"in {url.redacted!r}"
    for key, accepted in _LIBPQ_CHOICES.items():
        if key in options and options[key] not in accepted:
            raise ConfigurationError(
                f"{key} must be one of {', '.join(accepted)}, not {options[key]!r}, {where}")
    for key in ("ssl_min_protocol_version", "ssl_max_protocol_version"):
        value = options.get(key)
        if value and value.lower() not in [v.lower() for v in _TLS_VERSIONS]:
            raise ConfigurationError(
                f"{key} must be one of {', '.join(_TLS_VERSIONS)}, not {value!r}, {where}")
    for key in _LIBPQ_WHOLE_NUMBERS:
        value = str(options.get(key, "0")).strip()
        if not value.lstrip("-").isdigit():
            raise ConfigurationError(
                f"{key} must be a whole number (of seconds, or a count), not "
                f"{options[key]!r}, {where}")
    ports = [p.strip() for p in str(options.get("port", "")).split(",")]
    if any(p and not (p.isdigit() and 0 < int(p) < 65536) for p in ports):
        raise ConfigurationError(
            f"port must be a number from 1 to 65535 (or a comma-separated list of them, "
            f"one per host), not {options['port']!r}, {where}")
    hosts = str(options.get("host") or options.get("hostaddr") or "").split(",")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConfigurationError(
            f"port lists {len(ports)} ports for {len(hosts)} host(s): give one port for "
            f"all, or one per host, {where}")


def _libpq_options(url: DatabaseURL) -> Dict[str, Any]:
    options: Dict[str, Any] = dict(
        host=url.host, port=url.port, user=url.username,
        password=url.password, dbname=url.path.lstrip("/") or None,
    )
    return {k: v for k, v in options.items() if v is not None}


def _session_options(url: DatabaseURL) -> Dict[str, bool]:
    """The URL's ``autocommit`` and ``read_only`` (ours, not libpq's options)."""
    return {key: _parse_bool(key, value, url) for key, value in url.query.items()
            if key in ("autocommit", "read_only")}


def _apply_read_only(options: Dict[str, Any], read_only: Optional[bool]) -> None:
    """``read_only=true`` as a server default sent at connect: enforced by the server in
    autocommit mode and in transactions alike, kept by ``DISCARD ALL``, no round trip."""
    if read_only:
        setting = "-c default_transaction_read_only=on"
        options["options"] = f"{options['options']} {setting}" if options.get("options") \
            else setting


class _LibpqDriver(SocketDriver):
    """What psycopg2 and psycopg 3 share: libpq options, disconnects, DISCARD ALL."""

    name = "postgresql"
    exact_state = True  # libpq reports the server's transaction status locally
    # Driver-side flags besides autocommit, restored by reset="session".
    _SESSION_FLAGS: tuple = ()

    def _check_libpq_options(self, options: Dict[str, Any], url: DatabaseURL,
                             parse: Callable[[Dict[str, Any]], Any],
                             error: type) -> None:
        try:  # libpq's own parser names an unknown option without connecting
            parse(options)
        except error as exc:
            raise ConfigurationError(
                f"invalid connection option in {url.redacted!r}: "
                f"{scrub(_first_line(exc), *_secrets(url))}"
            ) from None
        _check_libpq_values(options, url)

    def bound_connect_time(self, seconds: int) -> None:
        self._options.setdefault("connect_timeout", max(2, seconds))  # libpq's minimum

    def _lost(self, exc: BaseException) -> bool:
        code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, self._connection_errors) and (
            code.startswith("08") or code in _GONE_STATES
        )

    def ping(self, conn: Any) -> None:
        self._run_outside_transaction(conn, "SELECT 1")

    def rollback(self, conn: Any) -> None:
        conn.rollback()
        if self._in_transaction(conn):
            # In autocommit mode psycopg2's rollback() does nothing, yet a BEGIN the
            # handler ran has opened a transaction: end it with a statement.
            self._run_outside_transaction(conn, "ROLLBACK")

    def autocommit(self, conn: Any) -> Any:
        return conn.autocommit


    def left_open(self, conn: Any) -> Optional[str]:
        # libpq tells a failed transaction apart; our cursors note a write by its
        # command tag (connections from a connect= of the user's cannot tell).
        if conn.autocommit:
            return "a transaction begun explicitly in autocommit mode"
        if self._status(conn) == self._error_status:
            return "a statement failed in it"
        if getattr(conn, "wrote", False):
            return "it wrote, and nothing committed"
        return None

    def flags(self, conn: Any) -> tuple:
        return (conn.autocommit,) + tuple(getattr(conn, flag) for flag in self._SESSION_FLAGS)

    def restore(self, conn: Any, flags: tuple, everything: bool) -> None:
        if conn.autocommit != flags[0]:
            conn.autocommit = flags[0]
        if everything:
            for flag, value in zip(self._SESSION_FLAGS, flags[1:]):
                if getattr(conn, flag) != value:
                    setattr(conn, flag, value)

    def reset_session(self, conn: Any) -> None:
        # DISCARD ALL: RESET ALL (SET ROLE and set_config included), SET SESSION
        # AUTHORIZATION DEFAULT, DEALLOCATE ALL, CLOSE ALL, UNLISTEN *, advisory locks
        # released, temporary tables and cached plans dropped.
        self._run_outside_transaction(conn, "DISCARD ALL")

    @staticmethod
    def _run_outside_transaction(conn: Any, statement: str) -> None:
        # Autocommit for this statement alone, so it opens no transaction to roll back:
        # one round trip instead of two. Both drivers set the flag locally.
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
        finally:
            if not conn.closed:
                conn.autocommit = autocommit


class Psycopg2Driver(_LibpqDriver):
    """PostgreSQL through psycopg2.

    Besides libpq's options the URL may set ``autocommit`` and ``read_only`` (true or
    false), applied to each new connection: a read-mostly app can skip transactions.
    """

    paramstyle = "pyformat"

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        psycopg2 = _import("psycopg2", "postgresql", url)
        from psycopg2 import extensions

        options = _libpq_options(url)
        own = _session_options(url)
        options.update((k, v) for k, v in url.query.items() if k not in own)
        _apply_read_only(options, own.pop("read_only", None))
        self._check_libpq_options(
            options, url, lambda o: extensions.parse_dsn(extensions.make_dsn(**o)),
            psycopg2.ProgrammingError)
        self._psycopg2 = psycopg2
        super().__init__(connect or self._connect_psycopg2, url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        self._own = own
        self.autocommit_at_connect = bool(own.get("autocommit"))
        self._idle_status = extensions.TRANSACTION_STATUS_IDLE
        self._ready = extensions.STATUS_READY
        self._error_status = extensions.TRANSACTION_STATUS_INERROR
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    _SESSION_FLAGS = ("readonly", "isolation_level", "deferrable")

    def connect(self) -> Any:
        cooperate("psycopg2")  # under gevent or eventlet: wait through the hub
        return self._connect()

    def _connect_psycopg2(self) -> Any:
        conn = self._psycopg2.connect(**self._options,
                                      connection_factory=_psycopg2_classes()[0])
        if "autocommit" in self._own:
            conn.autocommit = self._own["autocommit"]
        return conn

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        # psycopg2 marks the connection closed = 2 when it finds the session gone (1 is
        # a close() by the handler); SQLSTATE class 08 and 57P0x say so for the rest.
        return conn.closed == 2 or self._lost(exc)

    def state(self, conn: Any) -> int:
        # Idle on the server, and psycopg2 agrees: after a COMMIT run as a statement it
        # would still think a transaction open and send no BEGIN for the next one. (A
        # closed connection's status is unknown, never idle.)
        if conn.get_transaction_status() == self._idle_status and conn.status == self._ready:
            return IDLE
        if conn.closed:  # 1: closed by a call to close(); 2: psycopg2 found it broken
            return CLOSED if conn.closed == 1 else BROKEN
        return DIRTY

    def unchanged(self, conn: Any, autocommit: Any) -> bool:
        # state() == IDLE and the flag as it was, in one call (a closed connection's
        # status is unknown, never idle).
        return (conn.get_transaction_status() == self._idle_status
                and conn.status == self._ready and conn.autocommit == autocommit)

    def _in_transaction(self, conn: Any) -> bool:
        return conn.get_transaction_status() != self._idle_status

    @staticmethod
    def _status(conn: Any) -> int:
        return conn.get_transaction_status()


class PsycopgDriver(_LibpqDriver):
    """PostgreSQL through psycopg 3 (``postgresql+psycopg://``).

    Besides libpq's options the URL may set psycopg's own ``autocommit``, ``read_only``
    and ``prepare_threshold`` (a number, or ``none`` to prepare nothing). psycopg 3 forgets
    its prepared statements itself when it sees ``DISCARD ALL``.
    """

    paramstyle = "pyformat"
    _OWN_OPTIONS = ("autocommit", "prepare_threshold")

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        psycopg = _import("psycopg", "psycopg", url)
        from psycopg.conninfo import conninfo_to_dict, make_conninfo
        from psycopg.pq import TransactionStatus

        options = _libpq_options(url)
        own: Dict[str, Any] = {}
        session = _session_options(url)
        _apply_read_only(options, session.pop("read_only", None))
        for key, value in url.query.items():
            if key in session:
                own[key] = session[key]
            elif key == "read_only":
                pass  # in the libpq options above
            elif key == "prepare_threshold":
                own[key] = self._threshold(value, url)
            else:
                options[key] = value
        self._check_libpq_options(
            options, url, lambda o: conninfo_to_dict(make_conninfo("", **o)),
            psycopg.ProgrammingError)
        super().__init__(connect or self._connect_psycopg, url.redacted)
        self._psycopg = psycopg
        self.secrets = _secrets(url)
        self._options = options
        self._own = own
        self.autocommit_at_connect = bool(own.get("autocommit"))
        self._idle_status = TransactionStatus.IDLE
        self._unknown_status = TransactionStatus.UNKNOWN
        self._error_status = TransactionStatus.INERROR
        self._connection_errors = (psycopg.OperationalError, psycopg.InterfaceError)

    @staticmethod
    def _threshold(value: str, url: DatabaseURL) -> Optional[int]:
        if value.lower() == "none":
            return None
        if not value.isdigit():
            raise ConfigurationError(
                f"prepare_threshold must be a whole number or none, not {value!r}, "
                f"in {url.redacted!r}"
            )
        return int(value)

    def connect(self) -> Any:
        cooperate("psycopg")  # imported before gevent patched the process: choose again
        return self._connect()

    def _connect_psycopg(self) -> Any:
        connection, cursor = _psycopg_classes()
        conn = connection.connect(**self._options, **self._own, cursor_factory=cursor)
        # psycopg warns when an open connection is garbage collected, unless a pool owns
        # it: a process that exits (or a forked child that drops its parent's) is normal.
        conn._pool = None
        return conn

    def use_transaction_pooling(self) -> None:
        # Behind PgBouncer in transaction mode the next transaction may run on another
        # server connection, where a statement prepared here does not exist.
        if self._own.get("prepare_threshold", None) is not None:
            raise ConfigurationError(
                "transaction_pooling=True prepares no statements, but the URL sets "
                "prepare_threshold; drop it (or use PgBouncer 1.21+ with "
                "max_prepared_statements and transaction_pooling=False)"
            )
        self._own["prepare_threshold"] = None

    _SESSION_FLAGS = ("read_only", "isolation_level", "deferrable")

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.broken) or self._lost(exc)

    def _in_transaction(self, conn: Any) -> bool:
        return conn.info.transaction_status != self._idle_status

    @staticmethod
    def _status(conn: Any) -> int:
        return conn.info.transaction_status

    def state(self, conn: Any) -> int:
        if conn.closed:
            return BROKEN if conn.broken else CLOSED
        status = conn.info.transaction_status
        if status == self._idle_status:
            return IDLE
        return BROKEN if status == self._unknown_status else DIRTY

    def unchanged(self, conn: Any, autocommit: Any) -> bool:
        # A closed connection's status is UNKNOWN, never IDLE.
        # (pgconn's own status: conn.info would build an object per return)
        return (conn.pgconn.transaction_status == self._idle_status
                and conn.autocommit == autocommit)


# Command tags of statements that change no data: a transaction that ran only these may
# be rolled back without a word. Any other tag (INSERT, UPDATE, CREATE...) is a write.
# (By the tag alone, a data-modifying WITH, SELECT INTO, CREATE TABLE AS and a function
# that writes look like reads: they are not seen.)
_READ_TAGS = frozenset({
    "SELECT", "SHOW", "SET", "RESET", "FETCH", "MOVE", "DECLARE", "CLOSE", "BEGIN",
    "START", "SAVEPOINT", "RELEASE", "LISTEN", "UNLISTEN", "EXPLAIN", "PREPARE",
    "DEALLOCATE", "DISCARD", "VALUES", "TABLE", "LOCK",
})
_ENDS = frozenset({"COMMIT", "ROLLBACK"})


def _wrote(conn: Any, cursor: Any) -> None:
    """After a statement: note on ``conn`` if it changed data inside a transaction, or
    forget an earlier write if it ended the transaction (a ``COMMIT`` run as SQL)."""
    tag = cursor.statusmessage
    if tag and not conn.autocommit:
        first = tag.split(None, 1)[0]
        if first in _ENDS:
            conn.wrote = False
        elif first not in _READ_TAGS:
            conn.wrote = True


def _noting(cursor: Any, in_transaction: Callable[[Any], bool], run: Callable[..., Any],
            *args: Any, **kwargs: Any) -> Any:
    """Run a statement, noting whether it wrote. One run with no transaction open starts
    a new one: an earlier write was committed meanwhile, however (SQL, a block)."""
    conn = cursor.connection
    if conn.wrote and not in_transaction(conn):
        conn.wrote = False
    result = run(*args, **kwargs)
    _wrote(conn, cursor)
    return result


def _note_write(conn: Any) -> None:
    """A call that writes whatever it returns (COPY FROM, a procedure)."""
    if not conn.autocommit:
        conn.wrote = True


def _copies_in(statement: Any) -> bool:
    return isinstance(statement, str) and " FROM " in f" {statement.upper()} "


class _ForgetsWritesAtTheEnd:
    """For a connection subclass: ``wrote`` holds until the transaction ends."""

    wrote = False

    def commit(self) -> None:
        super().commit()  # type: ignore[misc]
        self.wrote = False

    def rollback(self) -> None:
        super().rollback()  # type: ignore[misc]
        self.wrote = False


_PSYCOPG2_CLASSES: Optional[tuple] = None


def _psycopg2_classes() -> tuple:
    """psycopg2's connection and cursor, noting writes (``conn.wrote``) until the
    transaction ends; ``conn.cursor(cursor_factory=...)`` of the user's notes nothing."""
    global _PSYCOPG2_CLASSES
    if _PSYCOPG2_CLASSES is None:
        from psycopg2 import extensions

        idle = extensions.TRANSACTION_STATUS_IDLE

        def in_transaction(conn: Any) -> bool:
            return conn.get_transaction_status() != idle

        class WritesNotingCursor(extensions.cursor):
            def execute(self, query: Any, vars: Any = None) -> Any:
                return _noting(self, in_transaction, super().execute, query, vars)

            def executemany(self, query: Any, vars_list: Any) -> Any:
                return _noting(self, in_transaction, super().executemany, query, vars_list)

            def callproc(self, procname: Any, parameters: Any = None) -> Any:
                result = super().callproc(procname, parameters)
                _note_write(self.connection)
                return result

            def copy_from(self, *args: Any, **kwargs: Any) -> Any:
                result = super().copy_from(*args, **kwargs)
                _note_write(self.connection)
                return result

            def copy_expert(self, sql: Any, *args: Any, **kwargs: Any) -> Any:
                result = super().copy_expert(sql, *args, **kwargs)
                if _copies_in(sql):
                    _note_write(self.connection)
                return result

        class WritesNotingConnection(_ForgetsWritesAtTheEnd, extensions.connection):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.cursor_factory = WritesNotingCursor

        _PSYCOPG2_CLASSES = (WritesNotingConnection, WritesNotingCursor)
    return _PSYCOPG2_CLASSES


_PSYCOPG_CLASSES: Optional[tuple] = None


def _psycopg_classes() -> tuple:
    """psycopg 3's connection and cursor, noting writes as psycopg2's do."""
    global _PSYCOPG_CLASSES
    if _PSYCOPG_CLASSES is None:
        import psycopg

        idle = psycopg.pq.TransactionStatus.IDLE

        def in_transaction(conn: Any) -> bool:
            return conn.pgconn.transaction_status != idle

        class WritesNotingCursor(psycopg.Cursor):
            # (A `with conn.transaction():` block commits without commit(): _noting
            # sees no transaction open at the next statement.)
            def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
                return _noting(self, in_transaction, super().execute, query, params,
                               **kwargs)

            def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:
                return _noting(self, in_transaction, super().executemany, query,
                               params_seq, **kwargs)

            def copy(self, statement: Any, *args: Any, **kwargs: Any) -> Any:
                if _copies_in(statement):
                    _note_write(self.connection)
                return super().copy(statement, *args, **kwargs)

        class WritesNotingConnection(_ForgetsWritesAtTheEnd, psycopg.Connection):
            pass

        _PSYCOPG_CLASSES = (WritesNotingConnection, WritesNotingCursor)
    return _PSYCOPG_CLASSES
