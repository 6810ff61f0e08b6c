"""Pool behaviour on the real databases: laziness, reuse, waiting, return, options, faults."""

import logging
import os
import re
import sys
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from wsgipool import (
    ConfigurationError,
    ConnectError,
    DriverNotInstalled,
    Pool,
    PoolClosed,
    PoolTimeout,
)

# -- helpers ------------------------------------------------------------------------------


class Worker(threading.Thread):
    """A daemon thread that keeps what its target raised, for the test to assert on."""

    def __init__(self, target, *args):
        super().__init__(daemon=True)
        self._target_fn, self._args = target, args
        self.error = None

    def run(self):
        try:
            self._target_fn(*self._args)
        except BaseException as exc:  # handed to the test, which asserts there is none
            self.error = exc


def start(target, *args):
    thread = Worker(target, *args)
    thread.start()
    return thread


def join(thread, timeout=10.0):
    thread.join(timeout)
    assert not thread.is_alive(), "thread did not finish"


def join_ok(thread, timeout=10.0):
    join(thread, timeout)
    assert thread.error is None, repr(thread.error)


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def query_one(conn, sql, params=None):
    cursor = conn.cursor()
    try:
        if params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        return cursor.fetchone()
    finally:
        cursor.close()


def admin_one(db, sql, params=None):
    conn = db.admin()
    try:
        row = query_one(conn, sql, params)
        if db.kind == "sqlite":
            conn.commit()
        return row
    finally:
        conn.close()


@pytest.fixture
def table(db):
    """A table of this test's own (the databases are shared), dropped at the end.

    Ask for it before ``pools``, so the pools are closed before the table is dropped.
    """
    name = f"wsgipool_t_{uuid.uuid4().hex[:8]}"
    conn = db.admin()
    conn.cursor().execute(f"CREATE TABLE {name} (n INTEGER)")
    conn.commit()
    conn.close()
    yield name
    conn = db.admin()
    cursor = conn.cursor()
    # A transaction a failed test left open must not hang the drop.
    if db.kind == "postgresql":
        cursor.execute("SET lock_timeout = '5s'")
    elif db.kind == "mysql":
        cursor.execute("SET SESSION lock_wait_timeout = 5")
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    conn.commit()
    conn.close()


def count_rows(db, name):
    return admin_one(db, f"SELECT COUNT(*) FROM {name}")[0]


def open_transaction(db, sid):
    """Whether the server sees a transaction open in session ``sid`` (servers only).

    MariaDB's INNODB_TRX is a cache that a read refreshes only when it was last read over
    0.1 s ago: so pause before each read, and poll.
    """
    if db.kind == "postgresql":
        return admin_one(db, "SELECT xact_start FROM pg_stat_activity WHERE pid = %s",
                         (sid,))[0] is not None
    time.sleep(0.12)
    return admin_one(db, "SELECT COUNT(*) FROM information_schema.INNODB_TRX "
                         "WHERE trx_mysql_thread_id = %s", (sid,))[0] > 0


def last_command(db, sid):
    """What changes, server side, whenever session ``sid`` sends anything at all.

    PostgreSQL: its last statement and when its state last changed (pg_stat_activity).
    MariaDB: the id of its last command (PROCESSLIST.QUERY_ID; a COM_PING or ROLLBACK moves
    it too). Both are the session's own, so other clients of the server add no noise.
    """
    if db.kind == "postgresql":
        return admin_one(db, "SELECT query, state, state_change FROM pg_stat_activity "
                             "WHERE pid = %s", (sid,))
    return admin_one(db, "SELECT QUERY_ID FROM information_schema.PROCESSLIST WHERE ID = %s",
                     (sid,))


def driver_errors(db):
    """The exceptions ``db``'s driver raises when its session is gone."""
    scheme = db.url.partition("://")[0]
    module = {"postgresql": "psycopg2", "postgresql+psycopg": "psycopg",
              "mysql": "MySQLdb", "mysql+pymysql": "pymysql"}[scheme]
    driver = __import__(module)
    return (driver.OperationalError, driver.InterfaceError)


class Tagged:
    """A URL for ``db`` whose sessions, and only they, can be listed server side."""

    def __init__(self, url, sessions):
        self.url = url
        self.sessions = sessions  # () -> set of session ids; None for SQLite


@pytest.fixture
def tagged(db):
    """``db``'s URL, made so the server can list this test's sessions and no others.

    Ask for it before ``pools``, so the pools are closed before the tag goes away.
    """
    if db.kind == "postgresql":  # the URL carries a unique application_name
        yield Tagged(db.url, lambda: db.live_sessions())
        return
    if db.kind == "sqlite":
        yield Tagged(db.url, None)
        return
    # MariaDB has no application_name without performance_schema: a user of our own.
    user = f"wsgipool_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(db.url)
    database = parts.path.lstrip("/")
    hostport = parts.netloc.rpartition("@")[2]
    admin = db.admin()
    admin.cursor().execute(f"CREATE USER '{user}'@'%'")
    admin.cursor().execute(f"GRANT ALL ON `{database}`.* TO '{user}'@'%'")
    admin.close()

    def sessions():
        return {row[0] for row in _all_rows(db, "SELECT ID FROM information_schema.PROCESSLIST "
                                                "WHERE USER = %s", (user,))}

    yield Tagged(urlunsplit(parts._replace(netloc=f"{user}@{hostport}")), sessions)
    admin = db.admin()
    admin.cursor().execute(f"DROP USER '{user}'@'%'")
    admin.close()


def _all_rows(db, sql, params):
    conn = db.admin()
    try:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        conn.close()


def sqlite_path(db):
    return db.url[len("sqlite:///"):]


# -- 1. lazy, and bounded by max_size ---------------------------------------------------


def test_constructing_a_pool_opens_no_connection(tagged, db, pools):
    """Pool() connects to nothing; the first checkout opens exactly one session."""
    pool = pools(tagged.url, max_size=3)
    time.sleep(0.1)  # room for any background opener to betray itself
    stats = pool.stats()
    assert (stats["connects"], stats["size"], stats["idle"]) == (0, 0, 0)
    if tagged.sessions is None:
        assert not os.path.exists(sqlite_path(db))  # sqlite3.connect would create it
    else:
        assert tagged.sessions() == set()
    with pool.connection() as conn:  # the probe sees a session when there is one
        sid = db.session_id(conn)
        conn.rollback()
        if tagged.sessions is None:
            assert os.path.exists(sqlite_path(db))
        else:
            assert tagged.sessions() == {sid}
    assert pool.stats()["connects"] == 1


def test_opens_up_to_max_size_and_no_further(tagged, db, pools):
    """Three checkouts held by three threads open three sessions; a fourth times out."""
    pool = pools(tagged.url, max_size=3, timeout=5)
    release = threading.Event()
    sids, guard = [], threading.Lock()

    def holder():
        with pool.connection() as conn:
            sid = db.session_id(conn)
            with guard:
                sids.append(sid)
            release.wait(10)
            conn.rollback()

    threads = [start(holder) for _ in range(3)]
    try:
        wait_until(lambda: len(sids) == 3)
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="max_size=3"):
            pool.checkout(timeout=0.2)
        assert time.monotonic() - started >= 0.18
        stats = pool.stats()
        assert (stats["connects"], stats["size"], stats["in_use"]) == (3, 3, 3)
        assert (stats["timeouts"], stats["waiting"]) == (1, 0)
        assert len(set(sids)) == 3
        if tagged.sessions is not None:
            assert tagged.sessions() == set(sids)  # no fourth session on the server
    finally:
        release.set()
    for thread in threads:
        join_ok(thread)
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["checkouts"], stats["returns"]) == (0, 3, 3, 3)


# -- 2. reuse, most recently returned first ------------------------------------------------


def test_reuses_most_recently_returned_first(db, pools):
    """Return A then B: the next checkouts get B, then A (the same server sessions)."""
    pool = pools(db.url, max_size=2)
    a, b = pool.checkout(), pool.checkout()
    id_a, id_b = db.session_id(a.conn), db.session_id(b.conn)
    a.conn.rollback()
    b.conn.rollback()
    assert id_a != id_b
    pool.checkin(a)
    pool.checkin(b)
    first = pool.checkout()
    assert db.session_id(first.conn) == id_b
    second = pool.checkout()
    assert db.session_id(second.conn) == id_a
    first.conn.rollback()
    second.conn.rollback()
    pool.checkin(first)
    pool.checkin(second)
    assert pool.stats()["connects"] == 2


def test_sequential_checkouts_share_one_session(db, pools):
    """100 requests one after another use one connection: connects 1, reuse ratio 100."""
    pool = pools(db.url, max_size=4)
    seen = set()
    for _ in range(100):
        with pool.connection() as conn:
            seen.add(db.session_id(conn))
            conn.rollback()
    stats = pool.stats()
    assert len(seen) == 1
    assert (stats["connects"], stats["checkouts"], stats["reuse_ratio"]) == (1, 100, 100)
    assert (stats["size"], stats["idle"], stats["rollbacks"]) == (1, 1, 0)


# -- 3. one checkout per connection at a time ----------------------------------------------


def test_never_hands_one_connection_to_two_checkouts(db, pools):
    """8 threads on a pool of 3: no session is ever held twice; the books balance."""
    pool = pools(db.url, max_size=3, timeout=10)
    held, guard, clashes, sessions = set(), threading.Lock(), [], set()

    def worker(i):
        for n in range(40):
            if n >= 20:  # second half: pauses, so idle connections pile up too
                time.sleep(0.001 * (i % 4))
            with pool.connection() as conn:
                sid = db.session_id(conn)
                conn.rollback()
                with guard:
                    if sid in held:
                        clashes.append(sid)
                    held.add(sid)
                    sessions.add(sid)
                time.sleep(0.0005)
                with guard:
                    held.discard(sid)

    threads = [start(worker, i) for i in range(8)]
    for thread in threads:
        join_ok(thread, 60)
    stats = pool.stats()
    assert clashes == []
    assert 1 <= len(sessions) <= 3
    assert stats["connects"] <= 3 and stats["peak_in_use"] <= 3
    assert stats["checkouts"] == stats["returns"] + stats["in_use"] == 320
    assert stats["in_use"] == 0


# -- 4. waiting: first come, first served, then PoolTimeout -----------------------------------


def test_waiters_are_served_in_arrival_order(db, pools):
    """With the only connection held, five queued waiters get it in the order they came."""
    pool = pools(db.url, max_size=1, timeout=10)
    holder = pool.checkout()
    order, threads = [], []
    for i in range(5):
        def waiter(i=i):
            with pool.connection() as conn:
                order.append((i, conn))
        threads.append(start(waiter))
        wait_until(lambda: pool.stats()["waiting"] == i + 1)  # queued before the next starts
    pool.checkin(holder)
    for thread in threads:
        join_ok(thread)
    assert [i for i, _ in order] == [0, 1, 2, 3, 4]
    assert all(conn is holder.conn for _, conn in order)
    stats = pool.stats()
    assert (stats["waits"], stats["connects"], stats["waiting"], stats["in_use"]) == (5, 1, 0, 0)


def test_no_thread_starves_while_others_reacquire(db, pools):
    """4 threads hammering a pool of 1: each gets its turn (a barging pool fails this)."""
    pool = pools(db.url, max_size=1, timeout=10)
    counts = [0] * 4
    stop = threading.Event()

    def hammer(i):
        while not stop.is_set():
            with pool.connection():
                counts[i] += 1
                if counts[i] >= 300:
                    stop.set()

    holder = pool.checkout()  # all four queue first, so all four are in the race
    threads = [start(hammer, i) for i in range(4)]
    wait_until(lambda: pool.stats()["waiting"] == 4)
    pool.checkin(holder)
    stop.wait(10)
    stop.set()
    for thread in threads:
        join_ok(thread)
    mean = sum(counts) / len(counts)
    assert max(counts) >= 300
    assert min(counts) >= 0.5 * mean, counts
    stats = pool.stats()
    assert stats["checkouts"] == stats["returns"] == sum(counts) + 1
    assert stats["connects"] == 1


def test_waiter_times_out_then_pool_still_works(db, pools):
    """A waiter raises PoolTimeout after about the timeout, leaves the queue, and the
    connection still serves the next checkout."""
    pool = pools(db.url, max_size=1, timeout=0.3)
    holder = pool.checkout()
    sid = db.session_id(holder.conn)
    holder.conn.rollback()
    outcome = {}

    def waiter():
        started = time.monotonic()
        try:
            pool.checkout()
        except PoolTimeout as exc:
            outcome["error"] = exc
        outcome["waited"] = time.monotonic() - started

    thread = start(waiter)
    wait_until(lambda: pool.stats()["waiting"] == 1)  # it queued
    join_ok(thread)
    assert isinstance(outcome.get("error"), PoolTimeout)
    assert 0.9 * 0.3 <= outcome["waited"] <= 0.3 + 2
    stats = pool.stats()
    assert (stats["waiting"], stats["timeouts"], stats["in_use"]) == (0, 1, 1)
    pool.checkin(holder)
    with pool.connection() as conn:
        assert db.session_id(conn) == sid
        conn.rollback()
    assert pool.stats()["checkouts"] == 2


# -- 5. on return: rollback, discard, no round trip when idle --------------------------------


def test_open_transaction_is_rolled_back_on_return(db, table, pools, caplog):
    """An uncommitted insert is rolled back on return: nobody sees the row, the session
    is reused with no transaction open, and a warning says it wrote (each driver tells
    a write locally: SQLite opens a transaction only for one, the others note the
    statement's command tag or affected rows)."""
    pool = pools(db.url, max_size=1)
    with caplog.at_level(logging.DEBUG, logger="wsgipool.pool"):
        with pool.connection() as conn:
            sid = db.session_id(conn)
            conn.cursor().execute(f"INSERT INTO {table} VALUES (1)")
            assert query_one(conn, f"SELECT COUNT(*) FROM {table}")[0] == 1
            if db.kind != "sqlite":
                wait_until(lambda: open_transaction(db, sid))  # the probe sees one open
    assert count_rows(db, table) == 0
    if db.kind != "sqlite":
        wait_until(lambda: not open_transaction(db, sid))
    assert pool.stats()["rollbacks"] == 1
    rolled = [r for r in caplog.records
              if r.name == "wsgipool.pool" and "rolled back" in r.getMessage()]
    assert len(rolled) == 1, rolled
    assert rolled[0].levelno == logging.WARNING, rolled[0]
    with pool.connection() as conn:
        if db.kind == "postgresql":  # libpq's own view, through either driver
            status = (conn.info.transaction_status if hasattr(conn, "info")
                      else conn.get_transaction_status())
            assert status == 0  # idle
        if db.kind == "sqlite":
            assert not conn.in_transaction
        assert db.session_id(conn) == sid
        # An open transaction would show the session its own uncommitted row.
        assert query_one(conn, f"SELECT COUNT(*) FROM {table}")[0] == 0
        conn.rollback()
    stats = pool.stats()
    assert (stats["connects"], stats["rollbacks"]) == (1, 1)


def test_committed_work_survives_return(db, table, pools):
    """A committed insert stays, and a clean return rolls nothing back."""
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        conn.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        conn.commit()
    assert count_rows(db, table) == 1
    assert pool.stats()["rollbacks"] == 0


def test_idle_return_sends_nothing(db, table, pools):
    """20 checkouts that ran nothing return without a ROLLBACK or any other round trip;
    one that left an insert uncommitted does send its ROLLBACK (so the probe sees one)."""
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        sid = db.session_id(conn)
        conn.commit()
    sent = []
    if db.kind == "sqlite":  # no server: the driver's own trace of what it executes
        conn.set_trace_callback(sent.append)

    def probe():
        return len(sent) if db.kind == "sqlite" else last_command(db, sid)

    before = probe()
    for _ in range(20):
        with pool.connection() as again:
            assert again is conn
    assert probe() == before
    stats = pool.stats()
    assert (stats["rollbacks"], stats["checkouts"], stats["connects"]) == (0, 21, 1)
    # Control: an insert left uncommitted is rolled back, and the probe notices.
    with pool.connection() as again:
        again.cursor().execute(f"INSERT INTO {table} VALUES (1)")
        during = probe()
    after = probe()
    assert after != during
    if db.kind == "postgresql":
        assert after[:2] == ("ROLLBACK", "idle")
    if db.kind == "sqlite":
        assert sent[-1] == "ROLLBACK"
    assert pool.stats()["rollbacks"] == 1


def test_connection_closed_by_handler_is_replaced(db, pools):
    """A connection the handler closed is discarded on return; the next checkout gets a
    new one that works."""
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        first = db.session_id(conn)
        old = conn  # kept, so SQLite's id(conn) cannot be reused by the new connection
        conn.close()
    with pool.connection() as conn:
        assert conn is not old
        second = db.session_id(conn)
        assert query_one(conn, "SELECT 1")[0] == 1
        conn.rollback()
    stats = pool.stats()
    assert stats["discard_reasons"]["closed"] == 1
    assert (stats["connects"], stats["discards"], stats["in_use"]) == (2, 1, 0)
    assert second != first


def test_killed_session_fails_its_request_then_is_discarded(any_server_db, pools, caplog):
    """A backend killed under a checkout fails that request; on return the connection is
    discarded and never handed out again."""
    pool = pools(any_server_db.url, max_size=1)
    with pool.connection() as conn:
        victim = any_server_db.session_id(conn)
        conn.rollback()
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        with pytest.raises(driver_errors(any_server_db)):
            with pool.connection() as conn:
                any_server_db.kill(victim)
                wait_until(lambda: any_server_db.live_sessions([victim]) == set())
                any_server_db.session_id(conn)
    stats = pool.stats()
    reasons = stats["discard_reasons"]
    assert reasons["broken"] + reasons["rollback_failed"] == 1, reasons
    assert (stats["in_use"], stats["idle"], stats["size"]) == (0, 0, 0)
    for _ in range(3):
        with pool.connection() as conn:
            assert any_server_db.session_id(conn) != victim
            conn.rollback()
    stats = pool.stats()
    assert (stats["connects"], stats["discards"]) == (2, 1)
    assert any("discarded" in r.getMessage() for r in caplog.records
               if r.name == "wsgipool.pool")


# -- 6. options are checked when the pool is made ------------------------------------------


@pytest.mark.parametrize("options, error, names", [
    pytest.param({"max_size": 0}, ConfigurationError, "max_size", id="max_size-0"),
    pytest.param({"max_size": -1}, ConfigurationError, "max_size", id="max_size-negative"),
    pytest.param({"max_size": 1.5}, TypeError, "max_size", id="max_size-float"),
    pytest.param({"max_size": "3"}, TypeError, "max_size", id="max_size-str"),
    pytest.param({"max_size": True}, TypeError, "max_size", id="max_size-bool"),
    pytest.param({"timeout": 0}, ConfigurationError, "timeout", id="timeout-0"),
    pytest.param({"timeout": -1}, ConfigurationError, "timeout", id="timeout-negative"),
    pytest.param({"timeout": "x"}, TypeError, "timeout", id="timeout-str"),
    pytest.param({"timeout": None}, TypeError, "timeout", id="timeout-none"),
    pytest.param({"timeout": float("nan")}, ConfigurationError, "timeout", id="timeout-nan"),
    pytest.param({"max_lifetime": 0}, ConfigurationError, "max_lifetime", id="lifetime-0"),
    pytest.param({"max_lifetime": -5}, ConfigurationError, "max_lifetime",
                 id="lifetime-negative"),
    pytest.param({"max_lifetime": "1"}, TypeError, "max_lifetime", id="lifetime-str"),
    pytest.param({"max_idle": 0}, ConfigurationError, "max_idle", id="idle-0"),
    pytest.param({"max_idle": -5}, ConfigurationError, "max_idle", id="idle-negative"),
    pytest.param({"pre_ping": "yes"}, TypeError, "pre_ping", id="pre_ping-str"),
    pytest.param({"pre_ping": -1}, ConfigurationError, "pre_ping", id="pre_ping-negative"),
    pytest.param({"name": 3}, TypeError, "name", id="name-int"),
    pytest.param({"connect": "nope"}, TypeError, "connect", id="connect-not-callable"),
    pytest.param({"max_sise": 3}, TypeError, "max_sise", id="unknown-option"),
])
def test_bad_options_are_rejected_by_name(db, options, error, names):
    """Each bad option fails Pool() with the right exception type, naming the option."""
    with pytest.raises((TypeError, ValueError)) as caught:
        Pool(db.url, **options)
    assert caught.type is error, caught.value
    assert names in str(caught.value)
    if db.kind == "sqlite":
        assert not os.path.exists(sqlite_path(db))  # rejected before any connection


def test_options_are_keyword_only():
    """max_size and friends cannot be passed by position."""
    with pytest.raises(TypeError):
        Pool("sqlite://", 3)


def test_unknown_scheme_names_it_and_hides_the_password():
    """An unknown URL scheme is a ConfigurationError naming the scheme, without the password."""
    with pytest.raises(ConfigurationError, match="'oracle'") as caught:
        Pool("oracle://scott:tiger@db/orcl")
    assert "tiger" not in str(caught.value)
    assert "connect=" in str(caught.value)


@pytest.mark.parametrize("url, module, extra", [
    pytest.param("mysql://u:pw@h/db", "MySQLdb", "mysql", id="mysql"),
    pytest.param("postgresql://u:pw@h/db", "psycopg2", "postgresql", id="postgresql"),
])
def test_missing_driver_says_what_to_install(monkeypatch, url, module, extra):
    """A missing driver module is DriverNotInstalled naming the pip extra to install."""
    monkeypatch.setitem(sys.modules, module, None)  # no server can uninstall a package
    with pytest.raises(DriverNotInstalled) as caught:
        Pool(url)
    assert f"pip install wsgipool[{extra}]" in str(caught.value)
    assert ":pw@" not in str(caught.value)


# -- 7. max_lifetime, max_idle, pre_ping ---------------------------------------------------


@pytest.mark.parametrize("option, reason", [
    pytest.param("max_lifetime", "lifetime", id="max_lifetime"),
    pytest.param("max_idle", "idle", id="max_idle"),
])
def test_old_or_idle_connections_are_replaced(db, pools, option, reason):
    """A connection past max_lifetime / max_idle is closed at checkout and replaced."""
    pool = pools(db.url, max_size=1, **{option: 0.2})
    with pool.connection() as conn:
        first = db.session_id(conn)
        old = conn  # kept, so SQLite's id(conn) cannot be reused
        conn.rollback()
    time.sleep(0.3)
    with pool.connection() as conn:
        assert conn is not old
        second = db.session_id(conn)
        assert query_one(conn, "SELECT 1")[0] == 1
        conn.rollback()
    stats = pool.stats()
    assert stats["discard_reasons"][reason] >= 1
    assert stats["connects"] == 2
    assert second != first
    if db.kind != "sqlite":
        wait_until(lambda: db.live_sessions([first]) == set())


def test_pre_ping_replaces_a_dead_connection_unnoticed(any_server_db, pools):
    """pre_ping=True: a killed idle backend is found at checkout and replaced; no request
    fails."""
    pool = pools(any_server_db.url, max_size=1, pre_ping=True)
    with pool.connection() as conn:
        victim = any_server_db.session_id(conn)
        conn.rollback()
    any_server_db.kill(victim)
    wait_until(lambda: any_server_db.live_sessions([victim]) == set())
    failures = 0
    for _ in range(5):
        try:
            with pool.connection() as conn:
                assert any_server_db.session_id(conn) != victim
                conn.rollback()
        except driver_errors(any_server_db):
            failures += 1
    stats = pool.stats()
    assert failures == 0
    assert stats["discard_reasons"]["broken"] == 1
    assert stats["pings"] >= 1
    assert (stats["connects"], stats["rollbacks"]) == (2, 0)


def test_pre_ping_on_sqlite_pings_reused_connections_and_leaves_no_transaction(sqlite, pools):
    """pre_ping=True on SQLite: every reuse is pinged (not a new connection), and the
    ping leaves no transaction open."""
    pool = pools(sqlite.url, max_size=1, pre_ping=True)
    for _ in range(3):
        with pool.connection() as conn:
            assert not conn.in_transaction
    stats = pool.stats()
    assert (stats["pings"], stats["rollbacks"], stats["connects"]) == (2, 0, 1)


def test_pre_ping_seconds_pings_only_after_that_idle_time(db, pools):
    """pre_ping=0.2: connections idle less than that are not pinged, longer ones are."""
    pool = pools(db.url, max_size=1, pre_ping=0.2)
    for _ in range(3):
        with pool.connection() as conn:
            conn.rollback()
    assert pool.stats()["pings"] == 0
    time.sleep(0.25)
    with pool.connection() as conn:
        assert query_one(conn, "SELECT 1")[0] == 1
        conn.rollback()
    stats = pool.stats()
    assert (stats["pings"], stats["connects"]) == (1, 1)


# -- 8. no password anywhere; closed pools ----------------------------------------------


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://someone:s3cr3t@127.0.0.1:1/db", id="postgresql"),
    pytest.param("mysql://someone:s3cr3t@127.0.0.1:1/db", id="mysql"),
])
def test_password_never_shown(url, pools, caplog):
    """The password is absent from the pool's repr and name, the ConnectError and the logs."""
    with caplog.at_level(logging.DEBUG, logger="wsgipool"):
        pool = pools(url, max_size=1, timeout=1)
        with pytest.raises(ConnectError) as caught:
            pool.checkout()
    shown = [repr(pool), pool.name, str(caught.value), repr(caught.value)]
    shown += [record.getMessage() for record in caplog.records]
    assert any(r.levelno >= logging.ERROR for r in caplog.records), "the failure was logged"
    for text in shown:
        assert "s3cr3t" not in text
    assert "***" in pool.name
    assert pool.stats()["connect_errors"] == 1


def test_closed_pool_refuses_checkouts(db, pools):
    """After close(), checkout raises PoolClosed and the idle sessions are gone."""
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        sid = db.session_id(conn)
        conn.rollback()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.checkout()
    assert pool.stats()["discard_reasons"]["pool_closed"] == 1
    if db.kind != "sqlite":
        wait_until(lambda: db.live_sessions([sid]) == set())


def test_close_wakes_waiters_with_pool_closed(db, pools):
    """close() fails queued waiters with PoolClosed; a connection returned later is closed."""
    pool = pools(db.url, max_size=1, timeout=10)
    holder = pool.checkout()
    failures = []

    def waiter():
        try:
            pool.checkout()
        except PoolClosed as exc:
            failures.append(exc)

    thread = start(waiter)
    wait_until(lambda: pool.stats()["waiting"] == 1)
    pool.close()
    join_ok(thread)
    assert len(failures) == 1
    pool.checkin(holder)  # returned after close: closed, not kept
    stats = pool.stats()
    assert (stats["size"], stats["idle"]) == (0, 0)
    assert stats["discard_reasons"]["pool_closed"] == 1


# -- 9. connect failures: back off, then retry --------------------------------------------


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://postgres@127.0.0.1:1/test", id="postgresql"),
    pytest.param("mysql://root@127.0.0.1:1/test", id="mysql"),
])
def test_connect_failure_backs_off_then_retries(url, pools):
    """After a refused connect, checkouts fail at once without trying again until the
    back-off has passed; then one real attempt is made (and the back-off doubles)."""
    pool = pools(url, max_size=2, timeout=1)
    with pytest.raises(ConnectError, match="cannot connect"):
        pool.checkout()
    started = time.monotonic()
    with pytest.raises(ConnectError, match=r"next attempt in \d+\.\d+ s"):
        pool.checkout()
    assert time.monotonic() - started < 0.5
    assert pool.stats()["connect_errors"] == 1
    time.sleep(0.15)  # the first back-off is 0.1 s
    with pytest.raises(ConnectError, match="cannot connect"):
        pool.checkout()
    assert pool.stats()["connect_errors"] == 2
    with pytest.raises(ConnectError) as caught:
        pool.checkout()
    next_in = float(re.search(r"next attempt in (\d+\.\d+) s", str(caught.value)).group(1))
    assert 0.1 < next_in <= 0.2  # doubled
    stats = pool.stats()
    assert (stats["connect_errors"], stats["size"], stats["in_use"]) == (2, 0, 0)


def test_waiter_handed_a_dead_connection_keeps_its_place(postgresql, pools):
    """B waits first, then C. A returns a connection whose session was killed: B finds
    it dead (pre_ping) and opens a new one in its room, still served before C."""
    pool = pools(postgresql.url, max_size=1, pre_ping=True, timeout=10)
    held = pool.checkout()
    victim = postgresql.session_id(held.conn)
    held.conn.rollback()
    served = []

    def wait_then_note(name):
        with pool.connection() as conn:
            served.append((name, postgresql.session_id(conn)))
            conn.rollback()
            time.sleep(0.05)

    threads = {}
    for name, waiting in (("B", 1), ("C", 2)):
        threads[name] = threading.Thread(target=wait_then_note, args=(name,))
        threads[name].start()
        wait_until(lambda: pool.stats()["waiting"] == waiting)
    postgresql.kill(victim)
    wait_until(lambda: postgresql.live_sessions([victim]) == set())
    pool.checkin(held)
    for thread in threads.values():
        thread.join(10)
    assert [name for name, _ in served] == ["B", "C"]
    assert victim not in {sid for _, sid in served}
    stats = pool.stats()
    assert stats["discard_reasons"]["broken"] == 1 and stats["in_use"] == 0
