"""benchmarks/latency_proxy.py: it adds the latency it claims, forwards bytes intact and
counts statements exactly, against the real PostgreSQL and MariaDB.

The remote-database benchmark rests on these three claims: a round trip through the
proxy costs about 1 ms more (0.5 ms each way), the driver sees exactly what the server
sent (a large value both ways, so replies arrive in many pieces), and N statements are
counted as N, which the server's own counters confirm (MariaDB's session ``Questions``;
PostgreSQL's transactions in a database only this module uses).
"""

import hashlib
import os
import statistics
import sys
import time
import uuid

import pytest

from readme import snippet
from conftest import MYSQL_URL, POSTGRESQL_URL, REQUIRE_SERVERS, server_problem

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks.latency_proxy import LatencyProxy, round_trips  # noqa: E402
from wsgipool.urls import parse_url  # noqa: E402

DELAY = 0.0005  # seconds each way: 1 ms per round trip
# The database whose transaction counter only this module moves (made on first use).
PG_DATABASE = "remote_proxy_test"
KINDS = {"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}


def _connect_args(kind, host=None, port=None, database=None):
    url = parse_url(KINDS[kind])
    name = "dbname" if kind == "postgresql" else "database"
    args = {"host": host or url.host, "port": port or url.port, "user": url.username,
            "password": url.password, name: database or url.path.lstrip("/") or None}
    return {key: value for key, value in args.items() if value is not None}


def _connect(kind, **where):
    if kind == "postgresql":
        import psycopg2

        return psycopg2.connect(**_connect_args(kind, **where))
    import MySQLdb

    return MySQLdb.connect(**_connect_args(kind, **where))


def _started(kind):
    problem = server_problem(kind)
    if problem:
        if REQUIRE_SERVERS:
            pytest.fail(f"CI requires every server: {problem}")
        pytest.skip(problem)
    url = parse_url(KINDS[kind])
    with LatencyProxy((url.host, url.port or {"postgresql": 5432, "mysql": 3306}[kind]),
                      delay=DELAY, protocol=kind) as started:
        started.kind = kind
        yield started


@pytest.fixture(scope="module", params=list(KINDS))
def proxy(request):
    yield from _started(request.param)


@pytest.fixture(scope="module")
def pg_proxy():
    yield from _started("postgresql")


@pytest.fixture(scope="module")
def mysql_proxy():
    yield from _started("mysql")


def test_a_round_trip_costs_about_one_millisecond_more(proxy):
    kind = proxy.kind
    direct = statistics.median(round_trips(lambda: _connect(kind), 60))
    through = statistics.median(round_trips(
        lambda: _connect(kind, host=proxy.host, port=proxy.port), 60))
    added = through - direct
    assert 0.0009 <= added < 0.005, (
        f"{kind}: SELECT 1 direct {direct * 1e3:.3f} ms, through the proxy "
        f"{through * 1e3:.3f} ms: added {added * 1e3:.3f} ms, expected about 1 ms")


def test_large_values_arrive_intact_both_ways(proxy):
    """A 300 kB value up (its MD5 computed by the server) and down (compared here)."""
    sent = (uuid.uuid4().hex * 10_000)[:300_000]
    conn = _connect(proxy.kind, host=proxy.host, port=proxy.port)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT MD5(%s), %s, 'a row'", (sent, sent))
        digest, echoed, row = cursor.fetchone()
        conn.rollback()
    finally:
        conn.close()
    assert digest == hashlib.md5(sent.encode()).hexdigest()
    assert echoed == sent
    assert row == "a row"


def test_mariadb_statements_counted_as_the_server_counts_them(mysql_proxy):
    """Between two reads of the session's Questions, the proxy saw what the server did."""
    proxy = mysql_proxy
    conn = _connect("mysql", host=proxy.host, port=proxy.port)
    try:
        cursor = conn.cursor()

        def questions():
            cursor.execute("SHOW SESSION STATUS LIKE 'Questions'")
            return int(cursor.fetchone()[1])

        server_before = questions()
        before = proxy.counts()
        for n in range(25):
            cursor.execute("SELECT %s", (n,))
            assert cursor.fetchone() == (n,)
        conn.ping()  # a round trip, not a statement
        server_after = questions()
        after = proxy.counts()
    finally:
        conn.close()
    counted = after["statements"] - before["statements"]
    assert counted == server_after - server_before == 26  # 25 SELECTs and the second SHOW
    assert after["round_trips"] - before["round_trips"] == 27  # and the ping
    assert after["by_statement"]["SELECT"] - before["by_statement"].get("SELECT", 0) == 25
    assert after["messages"]["COM_PING"] - before["messages"].get("COM_PING", 0) == 1


def _pg_transactions() -> int:
    conn = _connect("postgresql")
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                       "WHERE datname = %s", (PG_DATABASE,))
        return cursor.fetchone()[0]
    finally:
        conn.close()


def _pg_database() -> None:
    conn = _connect("postgresql")
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PG_DATABASE,))
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE DATABASE {PG_DATABASE}")
    finally:
        conn.close()


def test_postgresql_statements_counted_as_the_server_counts_them(pg_proxy):
    """Autocommit statements in a database only this test uses: one transaction each.

    The server also counts one transaction of its own per session (the backend's
    start-up reads the catalogs; measured: connect and close alone count 1), and a
    session's counts reach pg_stat_database when it ends.
    """
    proxy = pg_proxy
    _pg_database()
    server_before = _pg_transactions()
    before = proxy.counts()
    conn = _connect("postgresql", host=proxy.host, port=proxy.port, database=PG_DATABASE)
    try:
        conn.autocommit = True
        cursor = conn.cursor()
        for n in range(20):
            cursor.execute("SELECT %s", (n,))
            assert cursor.fetchone() == (n,)
    finally:
        conn.close()
    counted = proxy.counts()["statements"] - before["statements"]
    deadline = time.monotonic() + 10
    while _pg_transactions() - server_before < counted + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # anything more would show by now
    assert counted == 20
    assert _pg_transactions() - server_before == counted + 1


def test_postgresql_extended_protocol_counted_once_prepared(pg_proxy):
    """psycopg 3 prepares a statement after 5 runs: Execute without Parse still counts."""
    proxy = pg_proxy
    psycopg = pytest.importorskip("psycopg")
    args = _connect_args("postgresql", host=proxy.host, port=proxy.port)
    before = proxy.counts()
    with psycopg.connect(**args, autocommit=True) as conn:
        for n in range(12):
            assert conn.execute("SELECT %s::int", (n,)).fetchone() == (n,)
    after = proxy.counts()
    parsed = after["messages"].get("P", 0) - before["messages"].get("P", 0)
    assert after["statements"] - before["statements"] == 12
    assert after["by_statement"]["SELECT"] - before["by_statement"].get("SELECT", 0) == 12
    assert parsed < 12, f"every run sent a Parse ({parsed}): nothing was prepared"
    # a Sync for each run, and one for the Parse that prepared the statement on its own
    assert after["round_trips"] - before["round_trips"] == 12 + 1


def test_close_ends_the_sessions(proxy):
    """Closing the proxy closes its sockets: the server ends the session behind them."""
    kind = proxy.kind
    url = parse_url(KINDS[kind])
    target = (url.host, url.port or {"postgresql": 5432, "mysql": 3306}[kind])
    own = LatencyProxy(target, delay=DELAY, protocol=kind)
    conn = _connect(kind, host=own.host, port=own.port)
    cursor = conn.cursor()
    cursor.execute("SELECT pg_backend_pid()" if kind == "postgresql" else "SELECT CONNECTION_ID()")
    session = cursor.fetchone()[0]
    own.close()
    admin = _connect(kind)
    try:
        query = ("SELECT count(*) FROM pg_stat_activity WHERE pid = %s" if kind == "postgresql"
                 else "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = %s")
        deadline = time.monotonic() + 5
        while True:
            admin_cursor = admin.cursor()
            admin_cursor.execute(query, (session,))
            alive = admin_cursor.fetchone()[0]
            admin.rollback()
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        admin.close()
        conn.close()
    assert alive == 0, f"{kind} session {session} outlived the proxy"


def test_the_docs_snippet_counts_a_checkout_as_the_handler_needs(pg_proxy, capsys):
    """docs/remote.rst: through the proxy, a wsgipool request reading one row makes 3
    round trips on psycopg2 (BEGIN, SELECT, the pool's ROLLBACK) and nothing more."""
    url = parse_url(POSTGRESQL_URL)
    code = (snippet("remote-round-trips")
            .replace('("127.0.0.1", 5432)', repr((url.host, url.port or 5432)))
            .replace("postgresql://postgres@127.0.0.1:5432/test", POSTGRESQL_URL))
    namespace = {}
    exec(code, namespace)
    assert namespace["sent"] == {"BEGIN": 1, "SELECT": 1, "ROLLBACK": 1}
    assert capsys.readouterr().out == (
        "3 round trips: {'BEGIN': 1, 'SELECT': 1, 'ROLLBACK': 1}\n")
