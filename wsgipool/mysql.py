"""MariaDB and MySQL drivers: mysqlclient (``mysql://``) and PyMySQL (``mysql+pymysql://``).

Neither module can tell whether a transaction is open: the server's "in transaction"
flag stays off for a read-only transaction, whose REPEATABLE READ snapshot would
still carry over to the next request. So each connection comes from a subclass that
notes when a statement runs; a request that ran none is returned without a word to the
server, any other is rolled back. In autocommit mode a transaction opens only explicitly
(``BEGIN``, ``START TRANSACTION``, ``XA START``, in a procedure too), which sets the flag:
there the flag decides, read locally from the last reply (PyMySQL keeps it; for
mysqlclient it is read from MariaDB Connector/C, see :func:`_bind_server_status`).
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Callable, Dict, Optional

from .cooperative import cooperate
from .drivers import (
    BROKEN, CLOSED, DIRTY, IDLE, UNKNOWN, SocketDriver, _blind, _import, _parse_bool, _secrets,
)
from .errors import ConfigurationError
from .urls import DatabaseURL

# Client and server error codes that mean the session is gone: server has gone away,
# lost connection, server lost, client inactivity timeout, connection killed, shutdown.
DISCONNECT_CODES = frozenset({2006, 2013, 2055, 4031, 1927, 1053})

# COM_RESET_CONNECTION (MariaDB 10.2+, MySQL 5.7+); PyMySQL has no name for it.
_COM_RESET_CONNECTION = 0x1F
# The server's status flag "a transaction is open", in every OK and EOF packet.
_SERVER_STATUS_IN_TRANS = 0x0001
# "More results follow" (a multi-statement string, a CALL): the last reply is not the last.
_SERVER_MORE_RESULTS_EXIST = 0x0008
# MariaDB Connector/C: enum mariadb_value's MARIADB_CONNECTION_SERVER_STATUS (mysql.h),
# and the name mysqlclient (2.1+) gives the capsule holding its MYSQL*.
_MARIADB_CONNECTION_SERVER_STATUS = 30
_CAPSULE_NAME = b"_mysql.connection.native_connection"

log = logging.getLogger(__name__)


def _tracking(base: type, statement_methods: tuple,
              wrote: Optional[Callable[[Any], bool]] = None) -> type:
    """A subclass of ``base`` that notes whether a statement ran since commit/rollback,
    and (with ``wrote``, asked after each ``query()``) whether one changed data."""

    def wrap(name: str) -> Callable[..., Any]:
        original = getattr(base, name)

        def run_statement(self: Any, *args: Any, **kwargs: Any) -> Any:
            self._wsgipool_dirty = self._wsgipool_used = True
            result = original(self, *args, **kwargs)
            if name == "query" and wrote is not None and wrote(self):
                self._wsgipool_wrote = True
            return result

        run_statement.__name__ = name
        return run_statement

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        self._wsgipool_pid = os.getpid()
        self._wsgipool_dirty = False  # a statement ran since commit or rollback
        self._wsgipool_wrote = False  # and changed rows, inside a transaction
        self._wsgipool_used = False  # a statement ran since the session was reset
        base.__init__(self, *args, **kwargs)
        # The constructor's own SET statements open nothing and are part of the setup.
        self._wsgipool_dirty = self._wsgipool_used = False

    def commit(self: Any) -> None:
        base.commit(self)
        self._wsgipool_dirty = self._wsgipool_wrote = False

    def rollback(self: Any) -> None:
        base.rollback(self)
        self._wsgipool_dirty = self._wsgipool_wrote = False

    namespace: Dict[str, Any] = {name: wrap(name) for name in statement_methods}
    namespace.update(__init__=__init__, commit=commit, rollback=rollback,
                     __module__=__name__, __doc__=_tracking.__doc__)
    return type(f"Tracked{base.__name__}", (base,), namespace)


class _MySQLDriver(SocketDriver):
    """What both MySQL drivers share: URL options, states, disconnect codes."""

    name = "mysql"
    paramstyle = "format"
    # URL query values arrive as text; these are the connect options that are not.
    _INT_OPTIONS = frozenset(
        {"connect_timeout", "read_timeout", "write_timeout", "client_flag", "port"}
    )
    _BOOL_OPTIONS = frozenset({"autocommit", "compress", "local_infile", "use_unicode"})
    _STR_OPTIONS = frozenset({
        "charset", "collation", "unix_socket", "init_command", "sql_mode", "ssl_mode",
        "auth_plugin", "server_public_key_path", "read_default_file",
        "read_default_group", "named_pipe", "host", "user", "password", "database",
    })
    _module = ""  # the DB-API module, for messages

    def _url_options(self, url: DatabaseURL) -> Dict[str, Any]:
        options: Dict[str, Any] = dict(
            host=url.host, port=url.port, user=url.username,
            password=url.password, database=url.path.lstrip("/") or None,
        )
        options = {k: v for k, v in options.items() if v is not None}
        for key, value in url.query.items():
            options[key] = self._coerce(key, value, url)
        return options

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
            f"unknown {self._module} option {key!r} in {url.redacted!r}; known: {known}"
        )

    def bound_connect_time(self, seconds: int) -> None:
        self._options.setdefault("connect_timeout", seconds)

    def autocommit(self, conn: Any) -> Any:
        # Both read the server's own flag from the last reply: a SET autocommit=0 run as
        # a statement shows too.
        return conn.get_autocommit()


    def flags(self, conn: Any) -> tuple:
        return (conn.get_autocommit(), self._charset(conn))

    def restore(self, conn: Any, flags: tuple, everything: bool) -> None:
        if conn.get_autocommit() != flags[0]:
            conn.autocommit(flags[0])
        if everything and self._charset(conn) != flags[1]:
            conn.set_character_set(flags[1])

    def session_reset_problem(self) -> Optional[str]:
        return None

    def left_open(self, conn: Any) -> Optional[str]:
        if getattr(conn, "_wsgipool_wrote", False):
            return "it wrote, and nothing committed"
        return None

    def state(self, conn: Any) -> int:
        if not conn.open:
            return CLOSED
        dirty = getattr(conn, "_wsgipool_dirty", None)
        if dirty is None:  # a plain connection, from connect=: it cannot tell
            return UNKNOWN
        if dirty and conn.get_autocommit():  # autocommit: open only after an explicit BEGIN
            return self._autocommit_state(conn)
        return DIRTY if dirty else IDLE

    def _autocommit_state(self, conn: Any) -> int:
        """A tracked connection in autocommit mode that ran a statement."""
        return UNKNOWN

    def _code(self, exc: BaseException) -> Optional[int]:
        if isinstance(exc, self._operational_error) and exc.args:
            return exc.args[0]
        return None

    def _restore_setup(self, conn: Any, charset: str) -> None:
        """After a session reset, set up again what the driver set up at connect
        (autocommit is the pool's to restore, to its connect-time value)."""
        conn.set_character_set(charset)
        if "sql_mode" in self._options:
            conn.query(f"SET SESSION sql_mode='{self._options['sql_mode']}'")
        if "init_command" in self._options:
            conn.query(self._options["init_command"])
        conn._wsgipool_used = conn._wsgipool_dirty = False


class MySQLdbDriver(_MySQLDriver):
    """MariaDB and MySQL through mysqlclient (``MySQLdb``).

    A tracked connection finalized in a process other than its opener (after ``fork()``)
    first blinds its socket, so the ``COM_QUIT`` mysqlclient sends cannot end the
    parent's session.
    """

    _module = "mysqlclient"

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        _import("MySQLdb", "mysql", url)
        options = self._url_options(url)
        tracked = tracked_mysql_connection_class()
        super().__init__(connect or (lambda: tracked(**options)), url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        self.autocommit_at_connect = bool(options.get("autocommit"))
        self._custom_connect = connect is not None
        import MySQLdb

        self._operational_error = MySQLdb.OperationalError

    def connect(self) -> Any:
        cooperate("MySQLdb")  # under gevent or eventlet: it cannot; say so, once
        return self._connect()

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        if not conn.open:  # closed by the handler: MySQLdb then raises 2006 too
            return False
        return self._code(exc) in DISCONNECT_CODES

    @staticmethod
    def _charset(conn: Any) -> str:
        return conn.character_set_name()

    def session_reset_problem(self) -> Optional[str]:
        if "user" not in self._options and not self._custom_connect:
            return (f"on {self.description} needs the user in the URL: mysqlclient "
                    "resets a session by logging in again (COM_CHANGE_USER)")
        return None

    def _autocommit_state(self, conn: Any) -> int:
        # A result left unread (or a call that failed midway) would make the next
        # command fail "out of sync": only a rollback finds out, and then discards.
        # SET TRANSACTION's characteristics wait for the next transaction, shown by no
        # flag; a rollback clears them.
        if conn._wsgipool_unsure or conn._wsgipool_pending_characteristics:
            return UNKNOWN
        flags = _server_status(conn)
        if flags is None:  # no Connector/C reader: roll back, as a precaution
            return UNKNOWN
        return DIRTY if flags & (_SERVER_STATUS_IN_TRANS | _SERVER_MORE_RESULTS_EXIST) else IDLE

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
        charset = conn.character_set_name()
        conn.change_user(self._options["user"], self._options.get("password", ""),
                         self._options.get("database"))
        self._restore_setup(conn, charset)


def _bind_server_status(conn: Any) -> Callable[[Any], Optional[int]]:
    """A reader of the status flags that came with a mysqlclient connection's last reply,
    with no round trip: MariaDB Connector/C's ``mariadb_get_infov()`` on the ``MYSQL*``
    that mysqlclient 2.1+ hands out in a capsule. Looked up in the client library the
    loaded ``_mysql`` extension itself uses, tried on ``conn``. Where any part is missing
    (Oracle's libmysqlclient, an older mysqlclient, another capsule name) the reader
    answers ``None``: the caller then rolls back, as before."""
    import ctypes

    from MySQLdb import _mysql

    def unavailable(_conn: Any) -> None:
        return None

    if not hasattr(_mysql.connection, "_get_native_connection"):
        log.debug("mysqlclient %s has no _get_native_connection(): a return after a "
                  "statement in autocommit mode rolls back", getattr(_mysql, "version_info", "?"))
        return unavailable
    try:
        # The extension's own handle: dlsym() searches the libraries it was linked with.
        library = ctypes.CDLL(_mysql.__file__, mode=os.RTLD_NOLOAD)
        # Neither call releases the GIL, and their prototypes stay private (not pythonapi's).
        get_info = ctypes.PYFUNCTYPE(ctypes.c_byte, ctypes.c_void_p, ctypes.c_int,
                                     ctypes.c_void_p)(("mariadb_get_infov", library))
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi))
    except (OSError, AttributeError) as exc:
        log.debug("mysqlclient's client library has no mariadb_get_infov() (%s): a return "
                  "after a statement in autocommit mode rolls back", exc)
        return unavailable
    uint = ctypes.c_uint
    byref = ctypes.byref

    def read(conn: Any) -> Optional[int]:
        flags = uint()
        if get_info(get_pointer(conn._get_native_connection(), _CAPSULE_NAME),
                    _MARIADB_CONNECTION_SERVER_STATUS, byref(flags)):
            return None
        return flags.value

    try:
        if read(conn) is None:
            raise ValueError("mariadb_get_infov() refused MARIADB_CONNECTION_SERVER_STATUS")
    except ValueError as exc:  # PyCapsule_GetPointer: another name
        log.debug("cannot read mysqlclient's server status (%s): a return after a "
                  "statement in autocommit mode rolls back", exc)
        return unavailable
    log.debug("mysqlclient: the server status is read locally through mariadb_get_infov()")
    return read


def _server_status(conn: Any) -> Optional[int]:
    """The status flags of ``conn``'s last reply, or ``None``; binds the reader on first
    use, once per process (the module-level name is replaced)."""
    global _server_status
    _server_status = _bind_server_status(conn)
    return _server_status(conn)


# What may set the next transaction's characteristics, which no status flag shows and a
# rollback clears: SET TRANSACTION (after a comment too), SET @@tx_read_only or
# @@transaction_isolation..., a procedure (CALL), a prepared statement (EXECUTE, maybe
# prepared by an earlier request). Searched anywhere in the statement: a false match (a
# table named "transactions") costs only a rollback. A statement longer than
# _SCAN_LIMIT (a bulk INSERT) is not searched (21 ms a megabyte): it is rolled back after.
_PENDING_WORDS = r"\b(?:TRANSACTION|tx_|CALL\b|EXECUTE\b)"
_SET_TRANSACTION = (re.compile(_PENDING_WORDS, re.IGNORECASE).search,
                    re.compile(_PENDING_WORDS.encode(), re.IGNORECASE).search)
_SCAN_LIMIT = 4096


def _query_settles(conn: Any, args: tuple, result: Any) -> bool:
    sql = args[0] if args else b""
    if len(sql) > _SCAN_LIMIT or _SET_TRANSACTION[not isinstance(sql, str)](sql):
        conn._wsgipool_pending_characteristics = True
    return not conn.field_count()


def _ended(conn: Any, args: tuple, result: Any) -> bool:
    conn._wsgipool_pending_characteristics = False
    return True


# What each mysqlclient call, once it returned, says of the session: True: in step,
# nothing left to read; False: a result set (or a reply) may still be on the wire; None:
# no news (next_result() answers "no more" from the last reply, even on a lost session;
# store_result() answers None when there was nothing to store).
_SETTLES: Dict[str, Callable[[Any, tuple, Any], Optional[bool]]] = {
    "query": _query_settles,
    "read_query_result": lambda conn, args, result: not conn.field_count(),
    "send_query": lambda conn, args, result: False,
    "store_result": lambda conn, args, result: None if result is None else True,
    "discard_result": lambda conn, args, result: True,
    "use_result": lambda conn, args, result: False,  # rows stream: their end is not seen
    "next_result": lambda conn, args, result: None if result else not conn.field_count(),
    "commit": _ended,
    "rollback": _ended,
}


def _settling(cls: type, name: str) -> Callable[..., Any]:
    """``cls.name``, noting whether the session is in step after it: a call that raised
    leaves ``_wsgipool_unsure`` set, one with no news leaves it as it was."""
    original = getattr(cls, name)
    settles = _SETTLES[name]

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        was, self._wsgipool_unsure = self._wsgipool_unsure, True
        result = original(self, *args, **kwargs)
        settled = settles(self, args, result)
        self._wsgipool_unsure = was if settled is None else not settled
        return result

    method.__name__ = name
    return method


_TRACKED_MYSQLDB = None


def tracked_mysql_connection_class() -> type:
    """The ``MySQLdb`` connection subclass that tracks statements and its opener's pid."""
    global _TRACKED_MYSQLDB
    if _TRACKED_MYSQLDB is None:
        from MySQLdb.connections import Connection

        def __del__(self: Any) -> None:
            if self._wsgipool_pid != os.getpid() and self.open:
                _blind(self.fileno())

        # A statement with no result set that changed rows, outside autocommit.
        tracked = _tracking(Connection, ("query", "send_query"), lambda conn: (
            not conn.field_count() and conn.affected_rows() > 0
            and not conn.get_autocommit()))
        tracked.__del__ = __del__
        tracked._wsgipool_unsure = True  # until a call settles it
        tracked._wsgipool_pending_characteristics = False
        for name in _SETTLES:
            setattr(tracked, name, _settling(tracked, name))
        _TRACKED_MYSQLDB = tracked
    return _TRACKED_MYSQLDB


class PyMySQLDriver(_MySQLDriver):
    """MariaDB and MySQL through PyMySQL (``mysql+pymysql://``), pure Python.

    PyMySQL's finalizer closes the socket without ``COM_QUIT``, so a forked child that
    drops its parent's connections says nothing; only an explicit ``close()`` would, and
    the fork hook blinds the socket first.
    """

    _module = "PyMySQL"
    _TRACKED = None

    def __init__(self, url: DatabaseURL, connect: Optional[Callable[[], Any]] = None) -> None:
        pymysql = _import("pymysql", "pymysql", url)
        options = self._url_options(url)
        if PyMySQLDriver._TRACKED is None:
            # begin() sends its BEGIN without query(): it opens a transaction too.
            PyMySQLDriver._TRACKED = _tracking(
                pymysql.connections.Connection, ("query", "begin"), lambda conn: (
                    bool(conn._affected_rows) and not conn._result.field_count
                    and not conn.get_autocommit()))
        self._tracked = PyMySQLDriver._TRACKED
        super().__init__(connect or self._connect_pymysql, url.redacted)
        self.secrets = _secrets(url)
        self._options = options
        self.autocommit_at_connect = bool(options.get("autocommit"))
        self._operational_error = pymysql.OperationalError

    def _connect_pymysql(self) -> Any:
        # PyMySQL's connect_timeout bounds only the TCP connect; the handshake that follows
        # reads with read_timeout, None by default: a stalled server would hang it. Bound
        # the handshake by connect_timeout too, then read without a limit, as asked.
        options = self._options
        if "read_timeout" in options or "connect_timeout" not in options:
            return self._tracked(**options)
        conn = self._tracked(read_timeout=options["connect_timeout"], **options)
        conn._read_timeout = None  # the next read sets the socket's timeout back
        return conn

    def is_disconnect(self, conn: Any, exc: BaseException) -> bool:
        # A handler's close() makes PyMySQL raise InterfaceError, never these codes.
        return self._code(exc) in DISCONNECT_CODES

    def state(self, conn: Any) -> int:
        if not conn.open and not conn._closed:  # PyMySQL dropped the socket: lost
            return BROKEN
        state = super().state(conn)
        if state == UNKNOWN and getattr(conn, "_wsgipool_dirty", None) is not None:
            # Autocommit, and a statement ran: PyMySQL keeps the server's own "in
            # transaction" flag, which an explicit BEGIN or begin() sets.
            return DIRTY if conn.server_status & _SERVER_STATUS_IN_TRANS else IDLE
        return state

    def left_open(self, conn: Any) -> Optional[str]:
        if conn.get_autocommit():
            return "a transaction begun explicitly in autocommit mode"
        return super().left_open(conn)

    def ping(self, conn: Any) -> None:
        conn.ping(reconnect=False)  # COM_PING; never silently a new session

    def reset_session(self, conn: Any) -> None:
        # COM_RESET_CONNECTION clears variables, temporary tables, prepared statements
        # and GET_LOCK locks, and sets session variables back to the server's defaults.
        if not getattr(conn, "_wsgipool_used", True):
            return
        charset = conn.charset
        conn._execute_command(_COM_RESET_CONNECTION, b"")
        conn._read_ok_packet()
        self._restore_setup(conn, charset)

    @staticmethod
    def _charset(conn: Any) -> str:
        return conn.charset

    def fileno(self, conn: Any) -> Optional[int]:
        sock = getattr(conn, "_sock", None)
        return None if sock is None else sock.fileno()

    def detach(self, conn: Any) -> None:
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            _blind(sock.fileno())
