"""Review of the speed work (hot path, fork mark, mysqlclient's status flag): reproducers.

mysqlclient in autocommit mode: a return is rolled back only if the last reply's flag
shows a transaction, or ``SET TRANSACTION`` was seen. Pending next-transaction
characteristics show in no flag, and rollback used to clear them; every way of setting
them must still be cleared, or the next request runs read-only. Proven on the real
MariaDB by the next request's INSERT and the session's ``Com_rollback``.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import MYSQL_URL

pytest.importorskip("MySQLdb")

TABLE = "review_speed_t"
PROCEDURE = "review_speed_set_tx"


@pytest.fixture(scope="module")
def admin():
    from wsgipool.drivers import make_driver

    conn = make_driver(MYSQL_URL).connect()
    conn.autocommit(True)
    cursor = conn.cursor()
    cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (x INT) ENGINE=InnoDB")
    cursor.execute(f"DROP PROCEDURE IF EXISTS {PROCEDURE}")
    cursor.execute(f"CREATE PROCEDURE {PROCEDURE}() BEGIN SET TRANSACTION READ ONLY; END")
    yield conn
    cursor = conn.cursor()
    cursor.execute(f"DROP PROCEDURE IF EXISTS {PROCEDURE}")
    cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
    conn.close()


def _rollbacks(conn) -> int:
    cursor = conn.cursor()
    cursor.execute("SHOW SESSION STATUS LIKE 'Com_rollback'")
    value = int(cursor.fetchone()[1])
    cursor.close()
    return value


@pytest.mark.parametrize("run", [
    pytest.param(lambda conn: conn.cursor().execute("/* app */ SET TRANSACTION READ ONLY"),
                 id="leading-comment"),
    pytest.param(lambda conn: conn.cursor().execute("SET @@tx_read_only = 1"),
                 id="at-at-variable"),
    pytest.param(lambda conn: conn.cursor().callproc(PROCEDURE), id="callproc"),
    pytest.param(lambda conn: conn.query(f"CALL {PROCEDURE}()"), id="query-call"),
    pytest.param(lambda conn: conn.cursor().execute("SELECT 1; SET TRANSACTION READ ONLY"),
                 id="multi-statement"),
    pytest.param(lambda conn: (conn.query("PREPARE review_speed_s FROM 'SET TRANSACTION "
                                          "READ ONLY'"), conn.query("EXECUTE review_speed_s")),
                 id="prepare-execute"),
])
def test_autocommit_pending_characteristics_never_carry_over(admin, run):
    from wsgipool import Pool

    with Pool(MYSQL_URL + "?autocommit=true", max_size=1) as pool:
        with pool.connection() as conn:
            before = _rollbacks(conn)
            run(conn)
            cursor = conn.cursor()
            cursor.close()  # reads what a CALL left (its final OK)
            while conn.next_result() == 0:
                conn.discard_result()
        with pool.connection() as conn:
            after = _rollbacks(conn)
            cursor = conn.cursor()
            cursor.execute(f"INSERT INTO {TABLE} VALUES (1)")  # 1792 if carried over
            assert cursor.rowcount == 1
        assert after - before == 1


def test_autocommit_prepared_set_transaction_executed_by_a_later_request(admin):
    """A prepared statement outlives the request that prepared it (it is the session's):
    the ``EXECUTE`` in a later request sets the characteristics, its text never shows."""
    from wsgipool import Pool

    with Pool(MYSQL_URL + "?autocommit=true", max_size=1) as pool:
        with pool.connection() as conn:
            conn.query("PREPARE review_speed_s2 FROM 'SET TRANSACTION READ ONLY'")
        with pool.connection() as conn:
            before = _rollbacks(conn)
            conn.query("EXECUTE review_speed_s2")
        with pool.connection() as conn:
            after = _rollbacks(conn)
            cursor = conn.cursor()
            cursor.execute(f"INSERT INTO {TABLE} VALUES (1)")  # 1792 if carried over
            assert cursor.rowcount == 1
        assert after - before == 1


# -- a connection returned dirty, in every mode, through Driver.unchanged ---------------

def _autocommit_url(db) -> str:
    if db.kind == "sqlite":
        return db.url + "?isolation_level=None"
    return db.url + ("&" if "?" in db.url else "?") + "autocommit=true"


def _begin(conn, db, how):
    if how == "driver-begin" and hasattr(conn, "begin"):  # mysqlclient, PyMySQL
        conn.begin()
    elif how == "read-only":
        _execute(conn, "START TRANSACTION READ ONLY" if db.kind == "mysql"
                 else "BEGIN READ ONLY" if db.kind == "postgresql" else "BEGIN")
    else:
        _execute(conn, "BEGIN")


def _execute(conn, sql):
    cursor = conn.cursor()
    cursor.execute(sql)
    if cursor.description:
        cursor.fetchall()
    cursor.close()


def _in_transaction(conn, db) -> bool:
    """Ground truth, asked of the server (SQLite: the library) on the same session."""
    if db.kind == "sqlite":
        return conn.in_transaction
    cursor = conn.cursor()
    cursor.execute("SELECT @@in_transaction" if db.kind == "mysql" else
                   "SELECT now() <> statement_timestamp()")  # a transaction carried over
    value = bool(cursor.fetchone()[0])
    cursor.close()
    return value


@pytest.mark.parametrize("how", ["begin", "driver-begin", "read-only", "flip-and-back"])
def test_autocommit_return_left_in_a_transaction_is_rolled_back(db, how):
    """An autocommit pool: whatever opened the transaction, the one-call check on return
    sees it; the next checkout gets the same session outside any transaction."""
    from wsgipool import Pool

    table = "review_speed_dirty"
    with Pool(_autocommit_url(db), max_size=1) as pool:
        with pool.connection() as conn:
            session = db.session_id(conn)
            _execute(conn, f"CREATE TABLE IF NOT EXISTS {table} (x INT)")
            if how == "flip-and-back":  # the handler leaves autocommit as it found it
                _flip(conn)
                _execute(conn, "SELECT 1")
                _flip(conn)  # turning autocommit back on commits (every driver)
                _begin(conn, db, "begin")
            else:
                _begin(conn, db, how)
            _execute(conn, f"SELECT COUNT(*) FROM {table}")
        with pool.connection() as conn:
            assert db.session_id(conn) == session
            assert not _in_transaction(conn, db)
        stats = pool.stats()
        assert stats["rollbacks"] == 1
        assert stats["checkouts"] == stats["returns"] + stats["in_use"] == 2
        with pool.connection() as conn:
            _execute(conn, f"DROP TABLE {table}")


def _flip(conn) -> None:
    if hasattr(conn, "in_transaction") and hasattr(conn, "isolation_level"):  # sqlite3
        conn.isolation_level = None if conn.isolation_level is not None else ""
    elif hasattr(conn, "get_autocommit"):  # mysqlclient, PyMySQL
        conn.autocommit(not conn.get_autocommit())
    else:  # psycopg2, psycopg 3
        if not conn.autocommit:
            conn.rollback()
        conn.autocommit = not conn.autocommit


# -- fork: a grandchild, hooks or none, the lock held at the fork, the fallback mark -----

FORK_SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "speed_review_fork.py")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.parametrize("mode, child, grandchild, detection", [
    pytest.param("kernel", "fork", "cfork", "kernel", id="page-fork-then-c-fork"),
    pytest.param("kernel", "cfork", "cfork", "kernel", id="page-c-fork-twice"),
    pytest.param("nommap", "fork", "fork", "fork hook", id="mmap-fails-fork-twice"),
    pytest.param("uwsgi", "cfork", "cfork", "getpid", id="embedded-getpid-c-fork-twice"),
])
def test_grandchild_opens_its_own_session(postgresql, mode, child, grandchild, detection):
    import wsgipool

    if mode == "kernel" and wsgipool.process.FORK_DETECTION != "kernel":
        pytest.skip("no MADV_WIPEONFORK here")
    under_test = os.path.dirname(os.path.dirname(os.path.abspath(wsgipool.__file__)))
    done = subprocess.run(
        [sys.executable, FORK_SCRIPT, mode, child, grandchild, postgresql.url],
        env=dict(os.environ, PYTHONPATH=under_test), capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["detection"] == detection
    kid = seen["child"]
    grand = kid["grand"]
    assert "error" not in kid and "error" not in grand, seen
    pids = [seen["parent"], kid["mine"], kid["p2"], grand["mine"], grand["p2"]]
    assert len(set(pids)) == 5, seen  # every process its own sessions
    for one in (kid, grand):
        assert one["stats"] == {"connects": 1, "checkouts": 1, "returns": 1, "size": 1}
    assert kid["mine_after"] == kid["mine"]  # the grandchild left the child's alone
    assert seen["parent_after"] == seen["parent"]


# -- hammering: the figures stay whole whatever is interrupted where ----------------------

class _Boom(BaseException):
    """An interrupt at a random point (as gevent.Timeout or KeyboardInterrupt would)."""


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_stats_identities_under_hammering(request, kind, tmp_path):
    import random
    import threading
    import time

    from wsgipool import ConnectError, Pool, PoolClosed, PoolTimeout

    url = (request.getfixturevalue("postgresql").url if kind == "postgresql"
           else f"sqlite:///{tmp_path}/hammer.db")
    armed = [True]

    def maybe(chance):
        if armed[0] and random.random() < chance:
            raise _Boom()

    pool = Pool(url, max_size=3, timeout=0.05, max_lifetime=0.05, pre_ping=0.001)
    driver = pool._driver
    for name in ("rollback", "ping", "connect", "close"):
        def interrupted(*args, _original=getattr(driver, name), **kwargs):
            maybe(0.03)
            return _original(*args, **kwargs)
        setattr(driver, name, interrupted)
    unchanged, state = pool._unchanged, pool._state
    pool._unchanged = lambda *args: maybe(0.02) or unchanged(*args)
    pool._state = lambda *args: maybe(0.02) or state(*args)
    stop = time.monotonic() + 0.5
    unexpected = []

    def work():
        while time.monotonic() < stop:
            try:
                with pool.connection(timeout=random.choice([0.001, 0.05])) as conn:
                    chance = random.random()
                    cursor = conn.cursor()
                    if chance < 0.2:
                        cursor.execute("BEGIN")
                    cursor.execute("SELECT 1")
                    if chance > 0.9:
                        conn.close()
                    elif chance > 0.85:
                        raise _Boom()
            except (PoolTimeout, PoolClosed, ConnectError, _Boom):
                pass
            except Exception as exc:  # noqa: BLE001 (anything else is a finding)
                unexpected.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    stats = pool.stats()
    assert unexpected == []
    assert stats["discard_reasons"]["interrupted"] > 0  # the interrupts did land
    assert stats["timeouts"] > 0 and stats["checkouts"] > 100
    assert (stats["in_use"], stats["waiting"], stats["opening"]) == (0, 0, 0), stats
    assert stats["checkouts"] == stats["returns"] + stats["in_use"], stats
    assert stats["connects"] == stats["closes"] + stats["size"], stats
    armed[0] = False
    pool.close()
    stats = pool.stats()
    assert stats["size"] == 0 and stats["connects"] == stats["closes"], stats


# -- a waiter served under the lock: lifetime and pre_ping at the hand-over -------------

@pytest.mark.parametrize("expired", [True, False], ids=["past-lifetime", "fresh"])
def test_waiter_handed_a_returned_connection(postgresql, expired):
    """A connection past max_lifetime is never handed to the waiter (it gets room and a
    new session); a fresh one goes to it as it is, with no ping (pre_ping=seconds: it
    was in use, not idle)."""
    import threading
    import time

    from wsgipool import Pool

    with Pool(postgresql.url, max_size=1, pre_ping=0.01, timeout=5) as pool:
        entry = pool.checkout()
        first = postgresql.session_id(entry.conn)
        got = {}

        def waiter():
            with pool.connection() as conn:
                got["session"] = postgresql.session_id(conn)

        thread = threading.Thread(target=waiter)
        thread.start()
        deadline = time.monotonic() + 5
        while pool.stats()["waiting"] != 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.02)  # past pre_ping since its checkout: it was held, not idle
        if expired:
            entry.expires = time.monotonic()
        pool.checkin(entry)
        thread.join(5)
        stats = pool.stats()
        assert (got["session"] != first) is expired
        assert stats["discard_reasons"]["lifetime"] == int(expired)
        assert stats["connects"] == 1 + int(expired)
        assert stats["pings"] == 0
        assert stats["checkouts"] == stats["returns"] == 2 and stats["in_use"] == 0
        assert stats["waits"] == 1  # the waiter's wait, counted once


# -- a log handler interrupted on return (a gevent.Timeout in a blocking handler) --------

@pytest.mark.parametrize("line", ["held for", "rolled back a transaction"])
def test_interrupt_in_a_log_line_on_return_keeps_the_slot(tmp_path, line):
    """The return logs a hold warning, or the rollback it made; an interrupt raised by the
    log handler reaches the caller, and the connection's room is not lost."""
    import logging
    import time

    from wsgipool import Pool

    class Handler(logging.Handler):
        def emit(self, record):
            if line in record.getMessage():
                raise _Boom()

    logger = logging.getLogger("wsgipool")
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with Pool(f"sqlite:///{tmp_path}/log.db", max_size=1, hold_warning=0.01,
                  timeout=0.2) as pool:
            with pytest.raises(_Boom):
                with pool.connection() as conn:
                    conn.execute("BEGIN")
                    conn.execute("SELECT 1").fetchall()
                    time.sleep(0.02)
            stats = pool.stats()
            assert (stats["in_use"], stats["checkouts"], stats["returns"]) == (0, 1, 1), stats
            with pool.connection() as conn:  # PoolTimeout if its room was lost
                assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# -- a leaked checkout's room, while others wait -----------------------------------------

def test_leaked_checkouts_room_reaches_a_waiter_at_the_next_return(tmp_path):
    """A checkout abandoned by garbage collection (a response never closed) while two
    requests wait: the next return serves the first waiter, and the leaked room must go
    to the second, not sit unused until its timeout (nothing else comes by)."""
    import threading
    import time

    from wsgipool import Pool, PoolTimeout

    with Pool(f"sqlite:///{tmp_path}/leak.db", max_size=2, timeout=0.3) as pool:
        leaked, held = pool.checkout(), pool.checkout()
        outcomes = []

        def waiter():
            try:
                with pool.connection():
                    outcomes.append("served")
                    time.sleep(0.4)  # the first one served holds past the other's timeout
            except PoolTimeout:
                outcomes.append("timed out")

        threads = [threading.Thread(target=waiter) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 5
        while len(pool._waiters) != 2 and time.monotonic() < deadline:  # no stats(): it reaps
            time.sleep(0.001)
        pool.abandon(leaked)  # what the middleware does from garbage collection
        pool.checkin(held)
        for thread in threads:
            thread.join(5)
        stats = pool.stats()
        assert outcomes == ["served", "served"], outcomes
        assert stats["discard_reasons"]["leaked"] == 1
        assert stats["checkouts"] == stats["returns"] + stats["in_use"] == 4


def test_autocommit_long_statement_is_rolled_back_after_unsearched(admin):
    """A statement too long to search for the words cheaply (a bulk INSERT) is followed
    by a rollback on return, whatever it said."""
    from wsgipool import Pool

    padding = "/*" + "x" * 5000 + "*/"
    with Pool(MYSQL_URL + "?autocommit=true", max_size=1) as pool:
        with pool.connection() as conn:
            before = _rollbacks(conn)
            conn.cursor().execute(f"SET TRANSACTION READ ONLY {padding}")
        with pool.connection() as conn:
            after = _rollbacks(conn)
            cursor = conn.cursor()
            cursor.execute(f"INSERT INTO {TABLE} VALUES (1)")  # 1792 if carried over
        assert after - before == 1


# -- the process's list of pools, read while another thread makes a pool --------------

def test_pools_listed_while_another_thread_makes_one():
    """``notice_fork()`` (a child's first checkout) and ``live_pools()`` (exporters) copy
    the process's pools while other threads may be making new ones (a lazily made pool):
    the copy must not fail with "Set changed size during iteration"."""
    import logging
    import threading
    import time

    from wsgipool import Pool, process

    stop = time.monotonic() + 0.5
    kept, failures, copies = [], [], [0]

    def make():
        made = 0
        while time.monotonic() < stop:
            kept.append(Pool("sqlite:///:memory:", name=f"review-speed-{made}"))
            made += 1
            del kept[:-20]

    def look():
        while time.monotonic() < stop:
            try:
                process.live_pools()
                process.notice_fork()
                copies[0] += 1
            except RuntimeError as exc:
                failures.append(repr(exc))

    logger = logging.getLogger("wsgipool")
    level = logger.level
    logger.setLevel(logging.WARNING)  # a line per pool made would dominate the time
    try:
        threads = [threading.Thread(target=make), threading.Thread(target=look)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        logger.setLevel(level)
        for pool in kept:
            pool.close()
    assert copies[0] > 100
    assert failures == []
