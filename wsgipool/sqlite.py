"""SQLite through the standard library's ``sqlite3``: a file, no server, nothing to install."""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Callable, Dict, Optional

from .drivers import CLOSED, DIRTY, IDLE, Driver, _parse_bool
from .errors import ConfigurationError
from .urls import DatabaseURL


class SQLiteDriver(Driver):
    """SQLite through the standard library: a file, no server, ``in_transaction`` is local.

    After ``fork()`` the generic ``detach`` keeps the parent's handles referenced and
    unused: closing one in a child can checkpoint or delete the WAL under the parent.
    """

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
        self.autocommit_at_connect = "isolation_level" in options and \
            options["isolation_level"] is None
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
        if key == "isolation_level":  # sqlite3 refuses any other only when connecting
            if value.lower() == "none":
                return "None"  # autocommit: becomes None below
            if value.upper() not in ("", "DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
                raise ConfigurationError(
                    f"isolation_level must be DEFERRED, IMMEDIATE, EXCLUSIVE, empty (the "
                    f"same as DEFERRED) or None (autocommit), not {value!r}, in {url.redacted!r}"
                )
        try:
            return kind(value)
        except ValueError:
            raise ConfigurationError(
                f"{key} must be a {kind.__name__}, not {value!r}, in {url.redacted!r}"
            ) from None

    exact_state = True  # in_transaction is SQLite's own flag
    has_server = False  # a file: no server counts the connections

    def autocommit(self, conn: Any) -> Any:
        return conn.isolation_level  # None: autocommit (before Python 3.12's autocommit)


    def restore(self, conn: Any, flags: tuple, everything: bool) -> None:
        if conn.isolation_level != flags[0]:
            conn.isolation_level = flags[0]

    def left_open(self, conn: Any) -> Optional[str]:
        if conn.isolation_level is None:
            return "a transaction begun explicitly in autocommit mode"
        return "it wrote: sqlite3 opens a transaction only before a write"

    def fileno(self, conn: Any) -> Optional[int]:
        return None  # a file, no socket: nothing can stall

    def state(self, conn: Any) -> int:
        try:
            return DIRTY if conn.in_transaction else IDLE
        except sqlite3.ProgrammingError:  # "Cannot operate on a closed database."
            return CLOSED

    def unchanged(self, conn: Any, autocommit: Any) -> bool:
        try:
            return not conn.in_transaction and conn.isolation_level == autocommit
        except sqlite3.ProgrammingError:  # closed
            return False

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
