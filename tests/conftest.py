"""Fixtures for the real databases: PostgreSQL, MariaDB (or MySQL) and SQLite.

Server URLs come from the environment (defaults: the local services)::

    WSGIPOOL_TEST_POSTGRESQL_URL=postgresql://postgres@127.0.0.1:5432/test
    WSGIPOOL_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test

A server that does not answer skips its tests with the reason, except under CI (``CI=true``
or ``WSGIPOOL_REQUIRE_SERVERS=1``), where it fails them: CI must prove every driver.
"""

from __future__ import annotations

import functools
import os
import uuid

import pytest

POSTGRESQL_URL = os.environ.get(
    "WSGIPOOL_TEST_POSTGRESQL_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("WSGIPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
REQUIRE_SERVERS = (
    os.environ.get("CI", "").lower() == "true"
    or os.environ.get("WSGIPOOL_REQUIRE_SERVERS", "") not in ("", "0")
)


class Database:
    """One real database under test, with the server-side views the tests assert on."""

    kind = ""
    url = ""

    def admin(self):
        """A plain driver connection of the test's own, outside any pool."""
        raise NotImplementedError

    def session_id(self, conn) -> int:
        """The server's id for the session behind ``conn``."""
        raise NotImplementedError

    def live_sessions(self, ids) -> set:
        """Which of these session ids the server still has open."""
        raise NotImplementedError

    def kill(self, session_id: int) -> None:
        raise NotImplementedError


class PostgreSQL(Database):
    kind = "postgresql"

    def __init__(self) -> None:
        # A unique application_name lets a test find exactly its own sessions.
        self.tag = f"wsgipool-test-{uuid.uuid4().hex[:8]}"
        sep = "&" if "?" in POSTGRESQL_URL else "?"
        self.url = f"{POSTGRESQL_URL}{sep}application_name={self.tag}"

    def admin(self):
        from wsgipool.drivers import make_driver

        conn = make_driver(POSTGRESQL_URL).connect()
        conn.autocommit = True
        return conn

    def session_id(self, conn) -> int:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            return cur.fetchone()[0]

    def live_sessions(self, ids=None) -> set:
        conn = self.admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                            (self.tag,))
                found = {row[0] for row in cur.fetchall()}
        finally:
            conn.close()
        return found if ids is None else found & set(ids)

    def kill(self, session_id: int) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (session_id,))
        conn.close()


class MariaDB(Database):
    kind = "mysql"
    url = MYSQL_URL

    def admin(self):
        from wsgipool.drivers import make_driver

        conn = make_driver(MYSQL_URL).connect()
        conn.autocommit(True)
        return conn

    def session_id(self, conn) -> int:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        return cur.fetchone()[0]

    def live_sessions(self, ids) -> set:
        conn = self.admin()
        try:
            cur = conn.cursor()
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST")
            return {row[0] for row in cur.fetchall()} & set(ids)
        finally:
            conn.close()

    def kill(self, session_id: int) -> None:
        conn = self.admin()
        try:
            conn.cursor().execute("KILL CONNECTION %d" % session_id)
        finally:
            conn.close()

    def status(self, name: str) -> int:
        conn = self.admin()
        try:
            cur = conn.cursor()
            cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            return int(cur.fetchone()[1])
        finally:
            conn.close()


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index("://"):]


class PsycopgPostgreSQL(PostgreSQL):
    """PostgreSQL through psycopg 3 (``postgresql+psycopg://``)."""

    def __init__(self) -> None:
        super().__init__()
        self.url = _with_scheme(self.url, "postgresql+psycopg")


class PyMySQLMariaDB(MariaDB):
    """MariaDB through PyMySQL (``mysql+pymysql://``)."""

    url = _with_scheme(MYSQL_URL, "mysql+pymysql")


class SQLite(Database):
    kind = "sqlite"

    def __init__(self, path) -> None:
        self.url = f"sqlite:///{path}"  # path is absolute: four slashes in all

    def admin(self):
        import sqlite3

        return sqlite3.connect(self.url[len("sqlite:///"):])

    def session_id(self, conn) -> int:
        return id(conn)  # no server: the connection object is the session

    def live_sessions(self, ids) -> set:
        return set()


@functools.lru_cache(maxsize=None)
def server_problem(kind: str):
    """Why the server for ``kind`` cannot be used here, or ``None`` when it answers."""
    url = POSTGRESQL_URL if kind == "postgresql" else MYSQL_URL
    try:
        from wsgipool.drivers import make_driver

        make_driver(url).connect().close()
    except Exception as exc:  # not installed, not running, refused...
        hint = ("WSGIPOOL_TEST_POSTGRESQL_URL" if kind == "postgresql"
                else "WSGIPOOL_TEST_MYSQL_URL")
        return f"{kind} server unusable at {url} ({type(exc).__name__}: {exc}); set {hint}"
    return None


def _require(kind: str) -> None:
    problem = server_problem(kind)
    if problem:
        if REQUIRE_SERVERS:
            pytest.fail(f"CI requires every server: {problem}")
        pytest.skip(problem)


@pytest.fixture
def postgresql() -> PostgreSQL:
    _require("postgresql")
    return PostgreSQL()


@pytest.fixture
def mariadb() -> MariaDB:
    _require("mysql")
    return MariaDB()


@pytest.fixture
def sqlite(tmp_path) -> SQLite:
    return SQLite(tmp_path / "test.db")


def _needs_module(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        why = f"{module} is not installed: pip install -e '.[test]'"
        if REQUIRE_SERVERS:
            pytest.fail(f"CI requires every driver: {why}")
        pytest.skip(why)


@pytest.fixture
def psycopg_postgresql() -> PostgreSQL:
    _require("postgresql")
    _needs_module("psycopg")
    return PsycopgPostgreSQL()


@pytest.fixture
def pymysql_mariadb() -> MariaDB:
    _require("mysql")
    _needs_module("pymysql")
    return PyMySQLMariaDB()


# Fixture names by parameter: the default driver of each database, then the others.
_BY_PARAM = {"mysql": "mariadb", "psycopg": "psycopg_postgresql", "pymysql": "pymysql_mariadb"}


@pytest.fixture(params=["postgresql", "psycopg", "mysql", "pymysql", "sqlite"])
def db(request) -> Database:
    """Each real database in turn, through each driver wsgipool has for it."""
    return request.getfixturevalue(_BY_PARAM.get(request.param, request.param))


@pytest.fixture(params=["postgresql", "mysql"])
def server_db(request) -> Database:
    """Each database that runs as a server (it has sessions to count and kill)."""
    return request.getfixturevalue(_BY_PARAM.get(request.param, request.param))


@pytest.fixture(params=["postgresql", "psycopg", "mysql", "pymysql"])
def any_server_db(request) -> Database:
    """Each server database through each of its drivers."""
    return request.getfixturevalue(_BY_PARAM.get(request.param, request.param))


@pytest.fixture(params=["postgresql", "psycopg"])
def any_postgresql(request) -> PostgreSQL:
    return request.getfixturevalue(_BY_PARAM.get(request.param, request.param))


@pytest.fixture(params=["mysql", "pymysql"])
def any_mariadb(request) -> MariaDB:
    return request.getfixturevalue(_BY_PARAM.get(request.param, request.param))


@pytest.fixture
def pools():
    """Pools a test makes; all are closed at the end, so no session outlives its test."""
    from wsgipool import Pool

    made = []

    def make(*args, **kwargs):
        pool = Pool(*args, **kwargs)
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.close()


# -- make test: most files in parallel, these alone -------------------------------------

# Files whose tests read a server-wide figure (MariaDB's Aborted_clients or Questions,
# PgBouncer's sessions), restart a server, time the housekeeping thread or thread
# switches closely (test_edges), or share server databases and files by name with
# another file (the two Django ones): run beside other tests they would see the others'
# effects. ``make test`` runs the other files in parallel (pytest-xdist, one file per
# worker at a time), then these, one at a time; plain ``pytest`` runs all in order.
SERIAL = {"test_faults.py", "test_apache.py", "test_uwsgi.py", "test_gunicorn.py",
          "test_isolation.py", "test_many_machines.py", "test_edges.py", "test_django.py",
          "test_django_review.py"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in SERIAL:
            item.add_marker(pytest.mark.serial)
