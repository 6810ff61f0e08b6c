"""PostgreSQL drivers: psycopg2 (``postgresql://``) and psycopg 3 (``postgresql+psycopg://``).

Both wrap libpq, which knows the transaction state without a round trip, so an idle
return costs nothing; both reset a session with ``DISCARD ALL`` and recognise a lost
session by its SQLSTATE.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from .drivers import (
    BROKEN, CLOSED, DIRTY, IDLE, SocketDriver, _first_line, _import, _parse_bool, _secrets,
)
from .errors import ConfigurationError
from .urls import DatabaseURL

# SQLSTATEs that mean the session is gone: class 08 (connection exception), and
# 57P01-57P03 (admin shutdown, crash shutdown, cannot connect now).
_GONE_STATES = ("57P01", "57P02", "57P03")


def _libpq_options(url: DatabaseURL) -> Dict[str, Any]:
    options: Dict[str, Any] = dict(
        host=url.host, port=url.port, user=url.username,
        password=url.password, dbname=url.path.lstrip("/") or None,
    )
    return {k: v for k, v in options.items() if v is not None}


class _LibpqDriver(SocketDriver):
    """What psycopg2 and psycopg 3 share: libpq options, disconnects, DISCARD ALL."""

    name = "postgresql"

    def _check_libpq_options(self, options: Dict[str, Any], url: DatabaseURL,
                             parse: Callable[[Dict[str, Any]], Any],
                             error: type) -> None:
        try:  # libpq's own parser names an unknown option without connecting
            parse(options)
        except error as exc:
            raise ConfigurationError(
                f"invalid connection option in {url.redacted!r}: {_first_line(exc)}"
            ) from None

    def bound_connect_time(self, seconds: int) -> None:
        self._options.setdefault("connect_timeout", max(2, seconds))  # libpq's minimum

    def _lost(self, exc: BaseException) -> bool:
        code = getattr(exc, "pgcode", None) or getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, self._connection_errors) and (
            code.startswith("08") or code in _GONE_STATES
        )

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
    """PostgreSQL through psycopg2."""

    paramstyle = "pyformat"

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        psycopg2 = _import("psycopg2", "postgresql", url)
        from psycopg2 import extensions

        options = _libpq_options(url)
        options.update(url.query)
        self._check_libpq_options(
            options, url, lambda o: extensions.parse_dsn(extensions.make_dsn(**o)),
            psycopg2.ProgrammingError)
        super().__init__(connect or (lambda: psycopg2.connect(**options)), url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        self._idle_status = extensions.TRANSACTION_STATUS_IDLE
        self._connection_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        # psycopg2 marks the connection closed = 2 when it finds the session gone (1 is
        # a close() by the handler); SQLSTATE class 08 and 57P0x say so for the rest.
        return conn.closed == 2 or self._lost(exc)

    def state(self, conn: Any) -> int:
        if conn.closed:  # 1: closed by a call to close(); 2: psycopg2 found it broken
            return CLOSED if conn.closed == 1 else BROKEN
        return IDLE if conn.get_transaction_status() == self._idle_status else DIRTY


class PsycopgDriver(_LibpqDriver):
    """PostgreSQL through psycopg 3 (``postgresql+psycopg://``).

    Besides libpq's options the URL may set psycopg's own ``autocommit`` and
    ``prepare_threshold`` (a number, or ``none`` to prepare nothing). psycopg 3 forgets
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
        for key, value in url.query.items():
            if key == "autocommit":
                own[key] = _parse_bool(key, value, url)
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
        self._idle_status = TransactionStatus.IDLE
        self._unknown_status = TransactionStatus.UNKNOWN
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

    def _connect_psycopg(self) -> Any:
        conn = self._psycopg.connect(**self._options, **self._own)
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

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        return bool(conn.broken) or self._lost(exc)

    def state(self, conn: Any) -> int:
        if conn.closed:
            return BROKEN if conn.broken else CLOSED
        status = conn.info.transaction_status
        if status == self._idle_status:
            return IDLE
        return BROKEN if status == self._unknown_status else DIRTY
