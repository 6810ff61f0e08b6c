"""What the established pools test about themselves, asked of wsgipool on the real servers.

Each test ports a behaviour from a peer's own suite, named in its docstring as
``file::test``:

- psycopg_pool: ``tests/pool/test_pool.py``, ``test_pool_common.py``, ``test_pool_null.py``
  (psycopg/psycopg);
- SQLAlchemy: ``test/engine/test_pool.py`` (sqlalchemy/sqlalchemy);
- DBUtils: ``tests/test_pooled_db.py`` (WebwareForPython/DBUtils).

The peers mostly test against mock DB-API modules; here every assertion is on something
the server or the pool can be asked about: session ids, rows, ``stats()``. Where our
contract differs from a peer's on purpose, the docstring says so.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
import warnings
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

from wsgipool import ConfigurationError, ConnectError, PoolClosed, PoolError, PoolTimeout
from wsgipool.drivers import make_driver

pytestmark = pytest.mark.timeout(60)

# -- helpers ---------------------------------------------------------------------------------

DRIVERS = {
    "postgresql": "psycopg2", "postgresql+psycopg": "psycopg", "mysql": "mysqldb",
    "mysql+pymysql": "pymysql", "sqlite": "sqlite",
}


def driver(db) -> str:
    return DRIVERS[db.url.partition("://")[0]]


def sid(db, conn):
    """The session behind ``conn``, read locally (no round trip, no transaction opened).

    SQLite has no server: the connection object itself is the session (kept referenced,
    so its identity cannot be reused).
    """
    if db.kind == "postgresql":
        return conn.info.backend_pid
    if db.kind == "mysql":
        return conn.thread_id()
    return conn


def gone(db, session) -> bool:
    """Whether the session is closed: server side for the servers, the handle for SQLite."""
    if db.kind == "sqlite":
        try:
            session.execute("SELECT 1")
        except sqlite3.ProgrammingError:
            return True
        return False
    return not db.live_sessions([session])


def wait_until(predicate, timeout=3.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        time.sleep(0.01)


def wait_gone(db, session, timeout=3.0):
    wait_until(lambda: gone(db, session), timeout, f"session {session!r} closed")


def run(conn, sql):
    """Run one statement on ``conn``; the rows, if it returned any."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else None
    finally:
        cursor.close()


def commit_whatever_is_open(db, conn):
    """Send COMMIT: anything the pool failed to roll back would be made permanent now."""
    if db.kind == "sqlite":
        if conn.in_transaction:
            conn.execute("COMMIT")
    else:
        run(conn, "COMMIT")


def autocommit_on(db, conn) -> bool:
    if db.kind == "postgresql":
        return conn.autocommit
    if db.kind == "mysql":
        return bool(conn.get_autocommit())
    return conn.isolation_level is None


def set_autocommit(db, conn, on: bool):
    if db.kind == "postgresql":
        conn.autocommit = on
    elif db.kind == "mysql":
        conn.autocommit(on)
    else:
        conn.isolation_level = None if on else ""


def with_query(url, **params):
    extra = "&".join(f"{key}={value}" for key, value in params.items())
    return f"{url}{'&' if '?' in url else '?'}{extra}"


def autocommit_pool(db, pools, **options):
    """A pool whose connections are opened in autocommit mode, each driver its own way."""
    if driver(db) == "psycopg2":  # no URL option: connect= keeps the driver's knowledge
        import psycopg2

        def connect():
            conn = psycopg2.connect(db.url)  # libpq reads the URL itself
            conn.autocommit = True
            return conn

        return pools(db.url, connect=connect, **options)
    if db.kind == "sqlite":
        return pools(with_query(db.url, isolation_level="None"), **options)
    return pools(with_query(db.url, autocommit="true"), **options)


def wrong_port(url):
    """``url`` pointed at a local port nothing listens on: every connect is refused."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    hostport = f"{parts.hostname}:1"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{hostport}" if userinfo else hostport))


class Switch:
    """A ``connect=`` callable that can be pointed at a refusing port (``down``) and back."""

    def __init__(self, url):
        self.url = url
        self.good = make_driver(url)
        self.down = False
        self.delay = 0.0  # seconds each connect takes first

    def __call__(self):
        if self.delay:
            time.sleep(self.delay)
        if self.down:
            return make_driver(wrong_port(self.url)).connect()
        return self.good.connect()


def check_books(stats):
    """The identities stats() documents; true at every instant, not only at rest."""
    assert stats["checkouts"] == stats["returns"] + stats["in_use"], stats
    assert stats["size"] == stats["in_use"] + stats["idle"] + stats.get("opening", 0), stats
    assert 0 <= stats["in_use"] <= stats["max_size"], stats
    assert stats["size"] <= stats["max_size"], stats


class Worker(threading.Thread):
    """A daemon thread that keeps what it returned or raised, for the test to assert on."""

    def __init__(self, target, *args, name=None):
        super().__init__(daemon=True, name=name)
        self._fn, self._args = target, args
        self.result = self.error = None

    def run(self):
        try:
            self.result = self._fn(*self._args)
        except BaseException as exc:  # handed to the test
            self.error = exc


def start(target, *args, name=None):
    worker = Worker(target, *args, name=name)
    worker.start()
    return worker


def join(worker, timeout=5.0):
    worker.join(timeout)
    assert not worker.is_alive(), "thread did not finish"
    return worker


def join_ok(worker, timeout=5.0):
    join(worker, timeout)
    assert worker.error is None, repr(worker.error)
    return worker.result


def count_rows(db, table):
    conn = db.admin()
    try:
        return run(conn, f"SELECT COUNT(*) FROM {table}")[0][0]
    finally:
        conn.close()


@pytest.fixture
def table(request):
    """A table of the test's own on whichever database it runs; ask for it before ``pools``."""
    for name in ("db", "any_server_db", "server_db", "any_mariadb"):
        if name in request.fixturenames:
            database = request.getfixturevalue(name)
            break
    else:
        raise LookupError("table needs a database fixture")
    name = f"wsgipool_peer_{uuid.uuid4().hex[:8]}"
    conn = database.admin()
    run(conn, f"CREATE TABLE {name} (n INTEGER)")
    conn.commit()
    conn.close()
    yield name
    conn = database.admin()
    if database.kind == "postgresql":  # a transaction a failed test left open: no hang
        run(conn, "SET lock_timeout = '5s'")
    elif database.kind == "mysql":
        run(conn, "SET SESSION lock_wait_timeout = 5")
    run(conn, f"DROP TABLE IF EXISTS {name}")
    conn.commit()
    conn.close()


@pytest.fixture
def counted(db):
    """``db``'s URL made so the server can count this test's sessions, and the counter.

    PostgreSQL: the URL's unique application_name. MariaDB: a user of the test's own.
    SQLite: no server, no counter.
    """
    if db.kind == "sqlite":
        yield db.url, None
        return
    if db.kind == "postgresql":
        yield db.url, lambda: len(db.live_sessions())
        return
    user = f"wsgipool_peer_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(db.url)
    admin = db.admin()
    run(admin, f"CREATE USER '{user}'@'%'")
    run(admin, f"GRANT ALL ON `{parts.path.lstrip('/')}`.* TO '{user}'@'%'")
    admin.close()

    def count():
        conn = db.admin()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                           (user,))
            return cursor.fetchone()[0]
        finally:
            conn.close()

    hostport = parts.netloc.rpartition("@")[2]
    yield urlunsplit(parts._replace(netloc=f"{user}@{hostport}")), count
    admin = db.admin()
    run(admin, f"DROP USER '{user}'@'%'")
    admin.close()


@contextmanager
def held(pool, n):
    """``n`` connections checked out at once, returned at the end."""
    entries = [pool.checkout() for _ in range(n)]
    try:
        yield entries
    finally:
        for entry in entries:
            pool.checkin(entry)


# -- reuse -----------------------------------------------------------------------------------


def test_returned_connection_brings_back_the_same_session(db, pools):
    """psycopg test_pool.py::test_its_really_a_pool, DBUtils test_pooled_db.py::
    test_close_connection: a returned connection is not closed, and the next checkout gets
    one of the sessions already open. We pin which: the most recently returned."""
    pool = pools(db.url, max_size=4)
    with pool.connection() as outer:
        first = sid(db, outer)
        with pool.connection() as inner:
            second = sid(db, inner)
        assert second != first
    assert not gone(db, first) and not gone(db, second)
    with pool.connection() as again:
        assert sid(db, again) == first  # returned last, so reused first
    stats = pool.stats()
    assert (stats["connects"], stats["checkouts"], stats["discards"]) == (2, 3, 0)


def test_exception_in_the_block_does_not_lose_the_connection(db, pools):
    """psycopg test_pool.py::test_connection_not_lost, DBUtils test_pooled_db.py::
    test_context_manager: an exception inside ``with pool.connection()`` propagates, the
    connection still goes back, and the next checkout gets the same session."""
    pool = pools(db.url, max_size=1, timeout=1)
    with pytest.raises(ZeroDivisionError):
        with pool.connection() as conn:
            session = sid(db, conn)
            1 / 0
    with pool.connection() as conn:
        assert sid(db, conn) == session
    stats = pool.stats()
    assert (stats["in_use"], stats["returns"], stats["discards"]) == (0, 2, 0)


def test_most_recently_returned_is_reused_first(db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_lifo (the ``use_lifo=True`` sequence).

    Differs on purpose from SQLAlchemy's default (``test_fifo``) and from psycopg_pool
    (test_pool.py::test_uniform_use), which hand idle connections out oldest first: we
    reuse the most recently returned, so surplus connections age out under max_idle.
    """
    pool = pools(db.url, max_size=3)
    with held(pool, 3) as entries:
        c1, c2, c3 = (sid(db, entry.conn) for entry in entries)
    # Returned in the order c1, c2, c3: the stack's top is c3.
    for _ in range(3):
        a = pool.checkout()
        assert sid(db, a.conn) == c3
        pool.checkin(a)
        a = pool.checkout()
        assert sid(db, a.conn) == c3
        b = pool.checkout()
        assert sid(db, b.conn) == c2
        pool.checkin(b)
        c = pool.checkout()
        assert sid(db, c.conn) == c2
        b = pool.checkout()
        assert sid(db, b.conn) == c1
        pool.checkin(b)  # returned in the order c1, c2, c3 again
        pool.checkin(c)
        pool.checkin(a)
    assert pool.stats()["connects"] == 3


# -- bounds and timeouts ----------------------------------------------------------------------


def test_checkout_times_out_when_all_are_in_use(db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_timeout, DBUtils test_pooled_db.py::
    test_maxconnections: with max_size connections out, one more waits about ``timeout``,
    then PoolTimeout names the pool. Differs from DBUtils, which (unless blocking=True)
    refuses at once with TooManyConnections: we queue for up to ``timeout``."""
    pool = pools(db.url, max_size=2, timeout=0.3, name="peers-timeout")
    with held(pool, 2):
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="peers-timeout"):
            pool.checkout()
        waited = time.monotonic() - started
        stats = pool.stats()
    assert 0.28 <= waited < 2.0
    assert (stats["timeouts"], stats["waiting"], stats["in_use"], stats["size"]) == (1, 0, 2, 2)
    assert stats["connects"] == 2  # the waiter opened nothing beyond max_size


def test_some_waiters_served_others_time_out(db, pools):
    """psycopg test_pool_common.py::test_queue_timeout: four requests on a pool of two with
    a short timeout while the first two hold on: two are served, two raise PoolTimeout after
    about the timeout; the served ones shared the two sessions."""
    pool = pools(db.url, max_size=2, timeout=0.15)
    release = threading.Event()

    def request():
        started = time.monotonic()
        try:
            with pool.connection() as conn:
                release.wait(3)
                return "served", sid(db, conn)
        except PoolTimeout:
            return "timeout", time.monotonic() - started

    holders = [start(request) for _ in range(2)]
    wait_until(lambda: pool.stats()["in_use"] == 2, what="two holders")
    waiters = [start(request) for _ in range(2)]
    results = [join_ok(w) for w in waiters]
    release.set()
    results += [join_ok(h) for h in holders]
    timed_out = [value for kind, value in results if kind == "timeout"]
    served = [value for kind, value in results if kind == "served"]
    assert len(timed_out) == 2 and len(served) == 2
    assert all(0.13 <= seconds < 2.0 for seconds in timed_out), timed_out
    assert len(set(served)) == 2
    assert pool.stats()["timeouts"] == 2


def test_per_checkout_timeout_overrides_the_pool_timeout(db, pools):
    """psycopg test_pool_common.py::test_queue_timeout_override: a checkout given a longer
    timeout than the pool's waits that long, and gets the connection returned meanwhile;
    a shorter one gives up sooner than the pool's."""
    pool = pools(db.url, max_size=1, timeout=0.3)
    entry = pool.checkout()
    session = sid(db, entry.conn)
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.checkout(timeout=0.02)
    assert time.monotonic() - started < 0.25  # its own timeout, not the pool's 0.3 s

    def patient():
        with pool.connection(timeout=3) as conn:
            return sid(db, conn)

    waiter = start(patient)
    wait_until(lambda: pool.stats()["waiting"] == 1, what="a queued waiter")
    time.sleep(0.4)  # past the pool's timeout: the waiter must still be there
    assert waiter.is_alive()
    pool.checkin(entry)
    assert join_ok(waiter) == session
    assert pool.stats()["timeouts"] == 1


def test_a_waiter_that_gives_up_loses_no_connection(db, pools):
    """psycopg test_pool_common.py::test_dead_client: a waiter with a short timeout gives
    up among patient ones; every patient one is served, and afterwards all max_size
    connections can still be held at once (no room was lost with the quitter)."""
    pool = pools(db.url, max_size=2, timeout=3)
    release = threading.Event()
    served = []

    def request(timeout):
        with pool.connection(timeout=timeout):
            served.append(timeout)
            release.wait(0.3)

    holders = [start(request, 3.0) for _ in range(2)]
    wait_until(lambda: pool.stats()["in_use"] == 2, what="two holders")
    quitter = start(request, 0.05)
    wait_until(lambda: pool.stats()["waiting"] == 1 or not quitter.is_alive())
    patient = [start(request, 3.0) for _ in range(2)]
    join(quitter)
    assert isinstance(quitter.error, PoolTimeout)
    release.set()
    for worker in holders + patient:
        join_ok(worker)
    assert sorted(served) == [3.0] * 4
    with held(pool, 2):
        stats = pool.stats()
        assert (stats["in_use"], stats["size"]) == (2, 2)
    assert pool.stats()["connects"] == 2


def test_no_timeout_before_the_deadline_in_a_rush(server_db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_timeout_race: many threads rush a pool
    whose connects are slow; those left without a connection raise PoolTimeout only once
    their full timeout has passed, never early."""
    db = server_db
    switch = Switch(db.url)
    switch.delay = 0.05
    pool = pools(db.url, connect=switch, max_size=3, timeout=0.3)
    barrier = threading.Barrier(8)

    def request():
        barrier.wait(3)
        started = time.monotonic()
        try:
            with pool.connection():
                time.sleep(0.6)
                return "served", None
        except PoolTimeout:
            return "timeout", time.monotonic() - started

    results = [join_ok(w) for w in [start(request) for _ in range(8)]]
    timed_out = [seconds for kind, seconds in results if kind == "timeout"]
    assert len(timed_out) == 5
    assert all(0.29 <= seconds < 2.0 for seconds in timed_out), timed_out
    stats = pool.stats()
    assert stats["timeouts"] == 5 and stats["connects"] == 3


def test_slow_connect_does_not_hold_up_other_checkouts(server_db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_hanging_connect_within_overflow: while
    one checkout waits on a connect that hangs, others open or reuse connections freely."""
    db = server_db
    good = make_driver(db.url)

    def connect():
        if threading.current_thread().name == "slow":
            time.sleep(0.8)
        return good.connect()

    pool = pools(db.url, connect=connect, max_size=3, timeout=3)

    def slow():
        with pool.connection() as conn:
            return sid(db, conn)

    slow_worker = start(slow, name="slow")
    wait_until(lambda: pool.stats()["size"] == 1, what="the slow connect started")
    started = time.monotonic()
    for _ in range(3):
        with pool.connection() as conn:
            run(conn, "SELECT 1")
            conn.rollback()
    assert time.monotonic() - started < 0.5
    assert slow_worker.is_alive()  # still connecting: it held nobody up
    join_ok(slow_worker)
    assert pool.stats()["connects"] == 2


# -- fairness ---------------------------------------------------------------------------------


def test_waiters_are_served_in_queue_order(db, pools):
    """psycopg test_pool_common.py::test_queue, DBUtils test_pooled_db.py::
    test_three_threads_two_connections: requests beyond max_size wait, and are served in
    the order they queued, each with the session just returned (nothing new is opened)."""
    pool = pools(db.url, max_size=1, timeout=5)
    order = []
    holder = pool.checkout()
    session = sid(db, holder.conn)

    def request(n):
        with pool.connection() as conn:
            order.append((n, sid(db, conn)))

    waiters = []
    for n in range(6):
        waiters.append(start(request, n))
        wait_until(lambda: pool.stats()["waiting"] == n + 1, what=f"waiter {n} queued")
    pool.checkin(holder)
    for worker in waiters:
        join_ok(worker)
    assert [n for n, _ in order] == list(range(6))
    assert {s for _, s in order} == {session}
    stats = pool.stats()
    assert (stats["connects"], stats["waits"], stats["peak_waiting"]) == (1, 6, 6)


def test_room_of_a_discarded_connection_goes_to_the_oldest_waiter(db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_notify_waiters and test_waiters_handled:
    five requests wait on a pool of one; the holder's connection is discarded (closed by the
    handler) instead of returned: the oldest waiter opens exactly one replacement, and all
    five are served in queue order."""
    pool = pools(db.url, max_size=1, timeout=5)
    order = []
    holder = pool.checkout()
    first = sid(db, holder.conn)

    def request(n):
        with pool.connection() as conn:
            order.append((n, sid(db, conn)))
            time.sleep(0.01)

    waiters = []
    for n in range(5):
        waiters.append(start(request, n))
        wait_until(lambda: pool.stats()["waiting"] == n + 1, what=f"waiter {n} queued")
    holder.conn.close()
    pool.checkin(holder)
    for worker in waiters:
        join_ok(worker)
    assert [n for n, _ in order] == list(range(5))
    sessions = {s for _, s in order}
    assert len(sessions) == 1 and first not in sessions
    stats = pool.stats()
    assert (stats["connects"], stats["discard_reasons"]["closed"]) == (2, 1)


# -- closed and broken connections ------------------------------------------------------------


def test_connection_closed_by_the_handler_is_replaced(db, pools):
    """psycopg test_pool_common.py::test_broken_reconnect and test_stats_usage
    (``returns_bad``): a connection the handler closed is discarded on return (reason
    ``closed``) and the next checkout gets a new session."""
    pool = pools(db.url, max_size=1, timeout=1)
    with pool.connection() as conn:
        first = sid(db, conn)
        conn.close()
    with pool.connection() as conn:
        second = sid(db, conn)
        run(conn, "SELECT 1")
        conn.rollback()
    assert second != first
    wait_gone(db, first)
    stats = pool.stats()
    assert stats["discard_reasons"]["closed"] == 1 and stats["discards"] == 1
    assert (stats["connects"], stats["in_use"], stats["size"]) == (2, 0, 1)


def test_session_killed_under_a_checkout_is_discarded_on_return(any_server_db, pools):
    """psycopg test_pool.py::test_connect_no_check, SQLAlchemy test_pool.py::QueuePoolTest::
    test_invalidate / test_reconnect: without pre_ping a session killed while idle is
    handed out and fails its request; on return it is discarded (``broken``), and the next
    checkout opens a new session."""
    db = any_server_db
    pool = pools(db.url, max_size=1, timeout=1)
    with pool.connection() as conn:
        first = sid(db, conn)
    db.kill(first)
    wait_gone(db, first)
    with pytest.raises(Exception):
        with pool.connection() as conn:
            run(conn, "SELECT 1")
    with pool.connection() as conn:
        second = sid(db, conn)
        assert run(conn, "SELECT 1") == [(1,)]
        conn.rollback()
    assert second != first
    stats = pool.stats()
    assert stats["discard_reasons"]["broken"] == 1
    assert (stats["in_use"], stats["size"], stats["connects"]) == (0, 1, 2)


def test_session_killed_inside_a_transaction_is_discarded_on_return(any_server_db, table,
                                                                    pools):
    """psycopg test_pool.py::test_fail_rollback_close: a connection whose rollback fails on
    return (its session was killed mid-transaction) is discarded, not reused, and its
    checkout still counts as returned."""
    db = any_server_db
    pool = pools(db.url, max_size=1, timeout=1)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    run(entry.conn, f"INSERT INTO {table} VALUES (1)")
    db.kill(first)
    wait_gone(db, first)
    pool.checkin(entry)  # the rollback fails: no exception reaches the caller
    with pool.connection() as conn:
        assert sid(db, conn) != first
        conn.rollback()
    stats = pool.stats()
    reasons = {k: v for k, v in stats["discard_reasons"].items() if v}
    assert sum(reasons.values()) == 1 and set(reasons) <= {"broken", "rollback_failed"}
    assert stats["checkouts"] == stats["returns"] == 2
    assert count_rows(db, table) == 0


def test_return_in_the_middle_of_a_copy_is_discarded(psycopg_postgresql, pools):
    """psycopg test_pool.py::test_active_close: a connection returned while a COPY is still
    streaming cannot be rolled back: it is discarded and the next checkout gets a fresh,
    idle session."""
    from psycopg.pq import TransactionStatus

    db = psycopg_postgresql
    pool = pools(db.url, max_size=1, timeout=2)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    entry.conn.pgconn.exec_(b"COPY (SELECT * FROM generate_series(1, 10)) TO STDOUT")
    assert entry.conn.info.transaction_status == TransactionStatus.ACTIVE
    join_ok(start(pool.checkin, entry))
    with pool.connection() as conn:
        assert sid(db, conn) != first
        assert conn.info.transaction_status == TransactionStatus.IDLE
    wait_gone(db, first)
    stats = pool.stats()
    assert stats["discards"] == 1 and stats["in_use"] == 0


# -- transaction states on return -------------------------------------------------------------


def test_open_transaction_is_rolled_back_and_the_session_kept(db, table, pools):
    """psycopg test_pool.py::test_intrans_rollback (and test_pool_null.py's), DBUtils
    test_pooled_db.py::test_rollback: an uncommitted insert is rolled back on return, the
    same session comes back, and a COMMIT on it now makes nothing permanent."""
    pool = pools(db.url, max_size=1, timeout=1)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    run(entry.conn, f"INSERT INTO {table} VALUES (1)")
    pool.checkin(entry)
    assert pool.stats()["rollbacks"] == 1
    with pool.connection() as conn:
        assert sid(db, conn) == first
        commit_whatever_is_open(db, conn)
    assert count_rows(db, table) == 0


def test_error_state_is_rolled_back_and_the_session_kept(db, table, pools):
    """psycopg test_pool.py::test_inerror_rollback: a statement failed inside a transaction
    (PostgreSQL: the transaction is aborted, INERROR); on return it is rolled back, the same
    session comes back usable, and the work before the error is gone."""
    pool = pools(db.url, max_size=1, timeout=1)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    run(entry.conn, f"INSERT INTO {table} VALUES (1)")
    with pytest.raises(Exception):
        run(entry.conn, "SELECT * FROM wsgipool_no_such_table")
    pool.checkin(entry)
    with pool.connection() as conn:
        assert sid(db, conn) == first
        assert run(conn, "SELECT 1") == [(1,)]  # an aborted transaction would refuse this
        commit_whatever_is_open(db, conn)
    assert count_rows(db, table) == 0
    assert pool.stats()["discards"] == 0


def test_clean_return_is_not_rolled_back(db, table, pools):
    """SQLAlchemy test_pool.py::ResetOnReturnTest::test_plain_rollback, DBUtils
    test_pooled_db.py::test_reset_transaction. Differs on purpose: their pools roll back on
    every return; we roll back only a transaction left open, so a request that committed
    costs no round trip on return (PostgreSQL's last statement stays the COMMIT)."""
    pool = pools(db.url, max_size=1, timeout=1)
    for n in range(3):
        with pool.connection() as conn:
            run(conn, f"INSERT INTO {table} VALUES ({n})")
            conn.commit()
            session = sid(db, conn)
    stats = pool.stats()
    assert stats["rollbacks"] == 0 and stats["returns"] == 3
    assert count_rows(db, table) == 3
    if db.kind == "postgresql":
        admin = db.admin()
        try:
            cursor = admin.cursor()
            cursor.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (session,))
            assert cursor.fetchone()[0].strip().upper() == "COMMIT"
        finally:
            admin.close()


def test_autocommit_work_stays_and_the_mode_is_kept(db, table, pools):
    """psycopg test_pool.py::test_connect_check[autocommit=True], SQLAlchemy
    test_pool.py::ResetOnReturnTest::test_plain_none: in autocommit mode each statement is
    its own transaction; a return keeps it, keeps the session and keeps the mode, with no
    rollback. (mysqlclient reads the server's "in transaction" flag through MariaDB
    Connector/C; linked with a library that cannot report it, it rolls back, quietly.)"""
    pool = autocommit_pool(db, pools, max_size=1, timeout=1)
    with pool.connection() as conn:
        first = sid(db, conn)
        assert autocommit_on(db, conn)
        run(conn, f"INSERT INTO {table} VALUES (1)")
    with pool.connection() as conn:
        assert sid(db, conn) == first
        assert autocommit_on(db, conn)
        stats = pool.stats()  # the first return's figures
        if driver(db) == "mysqldb":
            from wsgipool.mysql import _bind_server_status

            tells = _bind_server_status(conn)(conn) is not None
        else:
            tells = True
    assert count_rows(db, table) == 1
    assert stats["discards"] == 0
    assert stats["rollbacks"] == (0 if tells else 1)


def test_begin_in_autocommit_mode_is_rolled_back(db, table, pools):
    """DBUtils test_pooled_db.py::test_reset_transaction (``begin()`` then close), psycopg
    test_pool.py::test_intrans_rollback on an autocommit connection: a transaction opened
    with BEGIN on an autocommit connection is rolled back on return (psycopg2's own
    rollback() does nothing in autocommit mode), and the connection keeps its mode."""
    pool = autocommit_pool(db, pools, max_size=1, timeout=1)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    run(entry.conn, "BEGIN")
    run(entry.conn, f"INSERT INTO {table} VALUES (1)")
    pool.checkin(entry)
    with pool.connection() as conn:
        assert sid(db, conn) == first
        commit_whatever_is_open(db, conn)
        assert autocommit_on(db, conn)
    assert count_rows(db, table) == 0


@pytest.mark.parametrize("how", ["begin()", "SET autocommit=0"])
def test_mariadb_transaction_opened_in_autocommit_mode_is_rolled_back(any_mariadb, table,
                                                                      pools, how):
    """DBUtils test_pooled_db.py::test_reset_transaction, on MariaDB's other ways out of
    autocommit: the driver's begin() (PyMySQL's bypasses its own query()) and SET
    autocommit=0. The work is rolled back on return and autocommit is back on."""
    db = any_mariadb
    pool = autocommit_pool(db, pools, max_size=1, timeout=1)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    if how == "begin()":
        entry.conn.begin()
    else:
        run(entry.conn, how)
    run(entry.conn, f"INSERT INTO {table} VALUES (1)")
    pool.checkin(entry)
    with pool.connection() as conn:
        assert sid(db, conn) == first
        commit_whatever_is_open(db, conn)
        mode = autocommit_on(db, conn)
    assert count_rows(db, table) == 0
    assert mode, "the connection came back out of its connect-time autocommit mode"


def test_autocommit_changed_by_the_handler_is_put_back(db, pools):
    """psycopg test_pool.py::test_reset (a reset undoes what a request changed in its
    session): a handler that switched autocommit on must not hand the next request an
    autocommit connection; the connect-time mode is restored on return."""
    pool = pools(db.url, max_size=1, timeout=1)
    with pool.connection() as conn:
        first = sid(db, conn)
        assert not autocommit_on(db, conn)
        set_autocommit(db, conn, True)
    with pool.connection() as conn:
        assert sid(db, conn) == first
        assert not autocommit_on(db, conn)


# -- lifetime and idle retirement -------------------------------------------------------------


def test_max_lifetime_retires_the_connection(db, pools):
    """psycopg test_pool.py::test_max_lifetime, SQLAlchemy test_pool.py::QueuePoolTest::
    test_recycle: within max_lifetime the same session comes back; past it a new one is
    opened, the old one is closed on the server, and the reason is ``lifetime``."""
    pool = pools(db.url, max_size=1, timeout=1, max_lifetime=0.3)
    with pool.connection() as conn:
        first = sid(db, conn)
    with pool.connection() as conn:
        assert sid(db, conn) == first
    time.sleep(0.4)
    with pool.connection() as conn:
        assert sid(db, conn) != first
    wait_gone(db, first)
    assert pool.stats()["discard_reasons"]["lifetime"] == 1


def test_max_idle_closes_a_connection_left_idle(db, pools):
    """psycopg test_pool.py::test_shrink (idle connections closed after max_idle): a
    connection in steady use stays (each return restarts its idle time); one left idle past
    max_idle is closed and replaced, with reason ``idle``."""
    pool = pools(db.url, max_size=1, timeout=1, max_idle=0.25)
    with pool.connection() as conn:
        first = sid(db, conn)
    for _ in range(4):  # 0.4 s of use, never idle for 0.25 s
        time.sleep(0.1)
        with pool.connection() as conn:
            assert sid(db, conn) == first
    time.sleep(0.35)
    with pool.connection() as conn:
        assert sid(db, conn) != first
    wait_gone(db, first)
    assert pool.stats()["discard_reasons"]["idle"] == 1


@pytest.mark.parametrize("option, reason", [
    pytest.param("max_idle", "idle", id="max_idle"),
    pytest.param("max_lifetime", "lifetime", id="max_lifetime"),
])
def test_expired_idle_connections_close_without_traffic(server_db, pools, option, reason):
    """psycopg test_pool.py::test_shrink and test_check_max_lifetime: an idle connection
    past max_idle (or max_lifetime) is closed on the server even when no further request
    comes, within the option plus 10%, and the pool then holds nothing."""
    db = server_db
    pool = pools(db.url, max_size=2, timeout=1, **{option: 0.5})
    with held(pool, 2) as entries:
        sessions = [sid(db, entry.conn) for entry in entries]
    returned = time.monotonic()
    wait_until(lambda: not db.live_sessions(sessions), timeout=0.5 * 1.1 + 1.0,
               what="idle sessions closed without traffic")
    assert time.monotonic() - returned >= 0.45  # not before their time
    stats = pool.stats()
    assert (stats["size"], stats["idle"]) == (0, 0)
    assert stats["discard_reasons"][reason] == 2


# -- pre-ping ---------------------------------------------------------------------------------


@pytest.mark.parametrize("autocommit", [False, True], ids=["transactions", "autocommit"])
def test_pre_ping_replaces_a_killed_session_unseen(any_server_db, pools, autocommit):
    """psycopg test_pool.py::test_connect_check / test_getconn_check (both autocommit
    modes) and test_stats_check: with pre_ping a session killed while idle is found at
    checkout and replaced; the request never sees it, the live session is kept, the ping
    leaves no transaction open, and the loss is counted (``broken``)."""
    db = any_server_db
    options = dict(max_size=2, timeout=2, pre_ping=True)
    pool = autocommit_pool(db, pools, **options) if autocommit else pools(db.url, **options)
    with held(pool, 2) as entries:
        dead, alive = (sid(db, entry.conn) for entry in reversed(entries))
    # Returned in order: ``dead`` last, so it is the first one handed out next.
    db.kill(dead)
    wait_gone(db, dead)
    with pool.connection() as conn:
        if driver(db) == "psycopg2":
            assert conn.get_transaction_status() == 0  # idle: the ping left nothing open
        elif driver(db) == "psycopg":
            assert conn.info.transaction_status == 0
        assert run(conn, "SELECT 1") == [(1,)]
        conn.rollback()
        with pool.connection() as conn2:
            sessions = {sid(db, conn), sid(db, conn2)}
    assert alive in sessions and dead not in sessions
    stats = pool.stats()
    assert stats["discard_reasons"]["broken"] == 1
    assert stats["pings"] >= 1 and stats["connects"] == 3


def test_pre_ping_seconds_pings_only_after_that_idle_time(db, pools):
    """DBUtils test_pooled_db.py::test_ping_check (ping only when asked for): pre_ping=0.3
    sends no ping for a connection reused at once, and one for a connection idle longer;
    either way the same session comes back."""
    pool = pools(db.url, max_size=1, timeout=1, pre_ping=0.3)
    with pool.connection() as conn:
        first = sid(db, conn)
    for _ in range(3):
        with pool.connection() as conn:
            assert sid(db, conn) == first
    assert pool.stats()["pings"] == 0
    time.sleep(0.35)
    with pool.connection() as conn:
        assert sid(db, conn) == first
    assert pool.stats()["pings"] == 1


# -- close ------------------------------------------------------------------------------------


def test_close_with_connections_out_and_a_waiter_queued(db, pools):
    """psycopg test_pool_common.py::test_closed_queue and test_close_connection_on_pool_close:
    close() fails the queued waiter with PoolClosed at once; connections out keep working
    until returned, and are closed when they are. Differs from SQLAlchemy
    (test_pool.py::QueuePoolTest::test_dispose_closes_pooled), whose dispose() lets
    connections out come back into the pool and be reused."""
    pool = pools(db.url, max_size=2, timeout=5, name="peers-close")
    a, b = pool.checkout(), pool.checkout()
    sessions = [sid(db, a.conn), sid(db, b.conn)]
    waiter = start(pool.checkout)
    wait_until(lambda: pool.stats()["waiting"] == 1, what="a queued waiter")
    started = time.monotonic()
    pool.close()
    join(waiter, timeout=2)
    assert time.monotonic() - started < 1.0
    assert isinstance(waiter.error, PoolClosed) and "peers-close" in str(waiter.error)
    assert run(a.conn, "SELECT 1") == [(1,)]  # still the holder's to use
    a.conn.rollback()
    assert not gone(db, sessions[0])
    pool.checkin(a)
    pool.checkin(b)
    for session in sessions:
        wait_gone(db, session)
    stats = pool.stats()
    assert stats["discard_reasons"]["pool_closed"] == 2
    assert (stats["in_use"], stats["size"], stats["idle"], stats["waiting"]) == (0, 0, 0, 0)
    with pytest.raises(PoolClosed):
        pool.checkout()


def test_close_ends_idle_sessions_and_refuses_checkouts(db, pools):
    """DBUtils test_pooled_db.py::test_close_all, psycopg test_pool_common.py::
    test_closed_getconn and test_wait_closed: close() closes every idle session at once;
    a second close() changes nothing; checkout() and connection() then raise PoolClosed."""
    pool = pools(db.url, max_size=3, timeout=1)
    with held(pool, 3) as entries:
        sessions = [sid(db, entry.conn) for entry in entries]
    pool.close()
    for session in sessions:
        wait_gone(db, session)
    stats = pool.stats()
    assert (stats["closes"], stats["size"], stats["idle"]) == (3, 0, 0)
    pool.close()
    assert pool.stats() == stats
    with pytest.raises(PoolClosed):
        pool.checkout()
    with pytest.raises(PoolClosed):
        with pool.connection():
            pass  # pragma: no cover
    assert pool.stats()["connects"] == 3


# -- failed connects --------------------------------------------------------------------------


def test_refused_connect_raises_connect_error_and_loses_no_slot(any_server_db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_overflow_reset_on_failed_connect,
    psycopg test_pool.py::test_stats_connect (``connections_errors``): a connect refused
    (wrong port) raises ConnectError with the driver's error as its cause, frees the room it
    had taken, and is counted; once the database answers, all max_size connections can be
    held again, and no more."""
    db = any_server_db
    switch = Switch(db.url)
    pool = pools(db.url, connect=switch, max_size=2, timeout=0.5)
    first = pool.checkout()
    switch.down = True
    with pytest.raises(ConnectError) as raised:
        pool.checkout()
    assert raised.value.__cause__ is not None
    stats = pool.stats()
    assert stats["connect_errors"] == 1
    assert (stats["size"], stats["in_use"], stats["waiting"]) == (1, 1, 0)
    check_books(stats)
    switch.down = False
    deadline = time.monotonic() + 5
    while True:  # a back-off after a refusal may fail the next few attempts at once
        try:
            second = pool.checkout()
            break
        except ConnectError:
            assert time.monotonic() < deadline, "the pool never connected again"
            time.sleep(0.05)
    with pytest.raises(PoolTimeout):
        pool.checkout(timeout=0.1)
    pool.checkin(second)
    pool.checkin(first)
    stats = pool.stats()
    assert (stats["size"], stats["connects"], stats["in_use"]) == (2, 2, 0)
    check_books(stats)


@pytest.mark.parametrize("why", ["lifetime", "killed"])
def test_failed_replacement_of_a_stale_connection_leaks_nothing(server_db, pools, why):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_error_on_pooled_reconnect_cleanup_recycle
    and ..._invalidate: the pool's only connection must be replaced (past max_lifetime, or
    its session killed and found by pre_ping) while the database refuses connects: the
    checkout fails with ConnectError, nothing stays counted as open or in use, and once the
    database answers the pool serves max_size connections again."""
    db = server_db
    switch = Switch(db.url)
    options = dict(max_lifetime=0.2) if why == "lifetime" else dict(pre_ping=True)
    pool = pools(db.url, connect=switch, max_size=1, timeout=0.5, **options)
    with pool.connection() as conn:
        first = sid(db, conn)
    if why == "lifetime":
        time.sleep(0.25)
    else:
        db.kill(first)
        wait_gone(db, first)
    switch.down = True
    with pytest.raises(ConnectError):
        pool.checkout()
    stats = pool.stats()
    assert (stats["size"], stats["in_use"], stats["idle"]) == (0, 0, 0)
    assert stats["checkouts"] == stats["returns"] == 1
    assert stats["discards"] == 1
    switch.down = False
    deadline = time.monotonic() + 5
    while True:
        try:
            entry = pool.checkout()
            break
        except ConnectError:
            assert time.monotonic() < deadline, "the pool never connected again"
            time.sleep(0.05)
    assert sid(db, entry.conn) != first
    with pytest.raises(PoolTimeout):
        pool.checkout(timeout=0.1)  # still max_size=1: no room was double counted
    pool.checkin(entry)
    check_books(pool.stats())


# -- reset callables --------------------------------------------------------------------------

SESSION_SETTING = {
    "postgresql": ("SET TimeZone TO 'Asia/Tokyo'", "SET TimeZone TO 'UTC'", "SHOW TimeZone",
                   "UTC"),
    "mysql": ("SET time_zone = '+09:00'", "SET time_zone = '+00:00'",
              "SELECT @@session.time_zone", "+00:00"),
}


def test_reset_callable_runs_on_every_return(any_server_db, pools):
    """psycopg test_pool.py::test_reset (and test_pool_null.py::test_reset): a reset= callable
    runs once per return and undoes the session setting a request changed; the next request
    on the same session sees the reset value."""
    db = any_server_db
    change, undo, show, expected = SESSION_SETTING[db.kind]
    resets = []

    def reset(conn):
        resets.append(sid(db, conn))
        run(conn, undo)
        conn.commit()  # leave no transaction open: the pool would discard the connection

    pool = pools(db.url, max_size=1, timeout=1, reset=reset)
    with pool.connection() as conn:
        first = sid(db, conn)
        assert resets == []
        run(conn, change)
        conn.commit()
    assert resets == [first]
    with pool.connection() as conn:
        assert sid(db, conn) == first
        assert run(conn, show) == [(expected,)]
        conn.rollback()
    assert resets == [first, first]
    assert pool.stats()["discards"] == 0


def test_reset_runs_after_the_rollback(db, table, pools):
    """SQLAlchemy test_pool.py::ResetOnReturnTest::test_custom_via_engine (the rollback, then
    the custom reset): the reset= callable is given a connection whose open transaction has
    already been rolled back."""
    seen = []

    def reset(conn):
        seen.append(run(conn, f"SELECT COUNT(*) FROM {table}")[0][0])
        conn.rollback()

    pool = pools(db.url, max_size=1, timeout=1, reset=reset)
    with pool.connection() as conn:
        run(conn, f"INSERT INTO {table} VALUES (1)")  # left open
    assert seen == [0]  # its own uncommitted row would count 1
    stats = pool.stats()
    assert stats["rollbacks"] == 1 and stats["discards"] == 0


def test_failing_reset_discards_the_connection(db, pools):
    """psycopg test_pool.py::test_reset_broken: a reset= callable that raises costs the
    connection (reason ``reset_failed``), not the request: checkin does not raise, the
    session is closed, and the next checkout opens a new one."""
    def reset(conn):
        run(conn, "THIS IS NOT SQL")

    pool = pools(db.url, max_size=1, timeout=1, reset=reset)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    pool.checkin(entry)
    wait_gone(db, first)
    entry = pool.checkout()
    assert sid(db, entry.conn) != first
    stats = pool.stats()
    assert stats["discard_reasons"]["reset_failed"] == 1
    assert (stats["in_use"], stats["returns"], stats["checkouts"]) == (1, 1, 2)
    pool.checkin(entry)


def test_reset_that_leaves_a_transaction_open_hands_on_no_transaction(any_server_db, table,
                                                                     pools):
    """psycopg test_pool.py::test_reset_badstate (INTRANS after the reset: discarded): a
    reset= callable that writes in a transaction and leaves it open must not pass that
    transaction to the next request. On PostgreSQL, whose drivers know the transaction
    state exactly, the connection is discarded, as psycopg_pool does. Differs on MariaDB on
    purpose: its drivers cannot tell a SET from a transaction, so the pool rolls back after
    the reset instead; either way nothing the reset wrote survives a COMMIT by the next
    request."""
    db = any_server_db

    def reset(conn):
        if db.kind == "mysql":
            run(conn, "START TRANSACTION")
        run(conn, f"INSERT INTO {table} VALUES (1)")

    pool = pools(db.url, max_size=1, timeout=1, reset=reset)
    with pool.connection() as conn:
        first = sid(db, conn)
    with pool.connection() as conn:
        second = sid(db, conn)
        commit_whatever_is_open(db, conn)
    assert count_rows(db, table) == 0
    if db.kind == "postgresql":
        assert second != first
        wait_gone(db, first)
        assert pool.stats()["discards"] >= 1


def test_reset_is_not_run_for_a_discarded_connection(db, pools):
    """SQLAlchemy test_pool.py::ResetOnReturnTest::test_custom[invalidate]: a connection the
    handler closed is discarded without calling the reset= callable on it."""
    calls = []
    pool = pools(db.url, max_size=1, timeout=1, reset=calls.append)
    with pool.connection() as conn:
        conn.close()
    assert calls == []
    with pool.connection():
        pass
    assert len(calls) == 1
    assert pool.stats()["discard_reasons"]["closed"] == 1


class Interrupt(BaseException):
    """Stands for a KeyboardInterrupt or a gevent Timeout arriving inside the reset."""


def test_interrupted_reset_loses_no_slot(db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::
    test_error_on_pooled_reconnect_cleanup_wcheckout_event[base_exception]: a BaseException
    inside the pool's own work on a connection (here the reset) may propagate, but the
    connection is discarded (reason ``interrupted``) and the books balance: the checkout
    counts as returned and max_size connections can be held again."""
    interrupt = [True]

    def reset(conn):
        if interrupt.pop() if interrupt else False:
            raise Interrupt()

    pool = pools(db.url, max_size=2, timeout=0.5, reset=reset)
    entry = pool.checkout()
    first = sid(db, entry.conn)
    try:
        pool.checkin(entry)
    except Interrupt:
        pass
    stats = pool.stats()
    check_books(stats)
    assert stats["in_use"] == 0
    assert stats["discard_reasons"].get("interrupted") == 1
    with held(pool, 2) as entries:
        assert first not in {sid(db, e.conn) for e in entries}


# -- stats ------------------------------------------------------------------------------------


def test_stats_step_by_step(db, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_queuepool_close (size, checked in,
    checked out after each step), psycopg test_pool_common.py::test_stats_measures: after
    every checkout and return, size / idle / in_use and the counters are exact."""
    pool = pools(db.url, max_size=3, timeout=1)

    def figures():
        stats = pool.stats()
        check_books(stats)
        return stats["size"], stats["idle"], stats["in_use"], stats["checkouts"]

    assert figures() == (0, 0, 0, 0)
    c1 = pool.checkout()
    assert figures() == (1, 0, 1, 1)
    c2, c3 = pool.checkout(), pool.checkout()
    assert figures() == (3, 0, 3, 3)
    pool.checkin(c3)
    pool.checkin(c2)
    assert figures() == (3, 2, 1, 3)
    pool.checkin(c1)
    assert figures() == (3, 3, 0, 3)
    c1, c2 = pool.checkout(), pool.checkout()
    assert figures() == (3, 1, 2, 5)
    pool.checkin(c2)
    assert figures() == (3, 2, 1, 5)
    pool.checkin(c1)
    stats = pool.stats()
    assert (stats["connects"], stats["returns"], stats["peak_in_use"]) == (3, 5, 3)
    assert stats["reuse_ratio"] == round(5 / 3, 2)


def test_stats_measure_waits_holds_and_timeouts(db, pools):
    """psycopg test_pool_common.py::test_stats_usage (requests_num, requests_queued,
    requests_errors, requests_wait_ms, usage_ms): one request queued behind a 0.3 s holder,
    one that gave up; the counts and the wait and hold times say exactly that."""
    pool = pools(db.url, max_size=1, timeout=3)
    holder = pool.checkout()
    patient = start(lambda: pool.checkin(pool.checkout()))
    wait_until(lambda: pool.stats()["waiting"] == 1, what="a queued waiter")
    quitter = start(pool.checkout, 0.05)
    join(quitter)
    assert isinstance(quitter.error, PoolTimeout)
    time.sleep(0.3)
    pool.checkin(holder)
    join_ok(patient)
    stats = pool.stats()
    check_books(stats)
    assert (stats["checkouts"], stats["returns"], stats["timeouts"]) == (2, 2, 1)
    assert 1 <= stats["waits"] <= 2 and stats["peak_waiting"] == 2
    assert 0.3 <= stats["wait_seconds"]["max"] < 2.0
    assert 0.3 <= stats["hold_seconds"]["max"] < 2.0
    assert stats["connects"] == 1


def test_stats_identities_hold_at_every_instant(db, pools):
    """psycopg test_pool_common.py::test_stats_measures (sampled while workers run),
    SQLAlchemy test_pool.py::QueuePoolTest::_test_overflow (peaks sampled under load):
    read while 6 threads check out, return, and force reconnects (every third request
    closes its connection), stats() always satisfies checkouts == returns + in_use and
    size == in_use + idle (+ opening)."""
    pool = pools(db.url, max_size=3, timeout=5)
    stop = threading.Event()
    samples = []

    def request(n):
        for i in range(12):
            with pool.connection() as conn:
                if (n + i) % 3 == 0:
                    conn.close()

    def sampler():
        while not stop.is_set():
            stats = pool.stats()
            samples.append(stats)
            check_books(stats)

    watcher = start(sampler)
    workers = [start(request, n) for n in range(6)]
    for worker in workers:
        join_ok(worker, timeout=20)
    stop.set()
    join_ok(watcher)
    assert len(samples) > 50
    stats = pool.stats()
    assert stats["checkouts"] == stats["returns"] == 72
    assert stats["discard_reasons"]["closed"] == 24


# -- concurrency ------------------------------------------------------------------------------


def test_many_threads_never_exceed_max_size_sessions(db, counted, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_no_overflow, DBUtils test_pooled_db.py::
    test_maxconnections, psycopg test_pool.py::test_spike: 16 threads share a pool of 4:
    no session is ever held by two requests at once, the server never sees more than 4 of
    the pool's sessions, and nothing beyond 4 is ever opened."""
    url, server_count = counted
    pool = pools(url, max_size=4, timeout=10)
    lock = threading.Lock()
    holding = set()
    problems = []
    server_peaks = []
    stop = threading.Event()

    def request():
        for _ in range(15):
            with pool.connection() as conn:
                session = sid(db, conn) if db.kind != "sqlite" else id(conn)
                with lock:
                    if session in holding:
                        problems.append(f"session {session} handed out twice")
                    holding.add(session)
                run(conn, "SELECT 1")
                conn.rollback()
                with lock:
                    holding.discard(session)

    def watch_server():
        while not stop.is_set():
            server_peaks.append(server_count())
            time.sleep(0.02)

    watcher = start(watch_server) if server_count else None
    workers = [start(request) for _ in range(16)]
    for worker in workers:
        join_ok(worker, timeout=30)
    stop.set()
    if watcher:
        join_ok(watcher)
        assert server_peaks and max(server_peaks) <= 4, server_peaks
    assert problems == []
    stats = pool.stats()
    assert stats["connects"] <= 4 and stats["peak_in_use"] <= 4
    assert stats["checkouts"] == stats["returns"] == 16 * 15
    assert stats["in_use"] == 0


# -- misuse and options -----------------------------------------------------------------------


def test_second_checkin_of_one_checkout_never_shares_a_connection(sqlite, pools):
    """SQLAlchemy test_pool.py::QueuePoolTest::test_no_double_checkin: giving a checkout back
    twice may be refused (an exception or a warning) or ignored, but must not put the
    connection in the pool twice, where two requests would then get it at once. Pool
    bookkeeping only: one database is enough."""
    pool = pools(sqlite.url, max_size=2, timeout=0.5)
    entry = pool.checkout()
    pool.checkin(entry)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            pool.checkin(entry)
        except (PoolError, ValueError, RuntimeError):
            pass
    check_books(pool.stats())
    with held(pool, 2) as entries:
        assert entries[0].conn is not entries[1].conn
    stats = pool.stats()
    check_books(stats)
    assert stats["returns"] == stats["checkouts"] == 3


def test_checkin_into_another_pool_is_refused(sqlite, pools):
    """psycopg test_pool_common.py::test_putconn_wrong_pool: a connection checked out of one
    pool and given to another is refused, and neither pool's books are upset."""
    first = pools(sqlite.url, max_size=1, timeout=0.2, name="peers-first")
    second = pools(sqlite.url, max_size=1, timeout=0.2, name="peers-second")
    entry = first.checkout()
    with pytest.raises((PoolError, ValueError)):
        second.checkin(entry)
    check_books(second.stats())
    with second.connection() as conn:
        assert conn is not entry.conn
    first.checkin(entry)
    check_books(first.stats())
    assert second.stats()["idle"] == 1


@pytest.mark.parametrize("options, error", [
    pytest.param(dict(max_size=0), ValueError, id="max_size-0"),
    pytest.param(dict(max_size=-1), ValueError, id="max_size-negative"),
    pytest.param(dict(timeout=0), ValueError, id="timeout-0"),
    pytest.param(dict(reset="commit"), ValueError, id="reset-commit"),
    pytest.param(dict(autocommit=True), TypeError, id="unknown-option"),
    pytest.param(dict(min_cached=2), TypeError, id="dbutils-option"),
])
def test_bad_or_unknown_options_are_refused(sqlite, options, error):
    """psycopg test_pool.py::test_bad_size (a bad size is a ValueError: our
    ConfigurationError is one) and test_pool_common.py::test_kwargs. Differs on purpose:
    psycopg passes unknown keyword arguments on to connect(), SQLAlchemy accepts
    reset_on_return="commit"; we refuse any option we do not know, when the pool is made."""
    from wsgipool import Pool

    with pytest.raises(error) as raised:
        Pool(sqlite.url, **options)
    assert next(iter(options)) in str(raised.value)
    if error is ValueError:
        assert isinstance(raised.value, ConfigurationError)
