"""Pool behaviour on the real databases: laziness, reuse, waiting, return, options."""

import logging
import sys
import threading
import time

import pytest

from wsgipool import ConfigurationError, ConnectError, DriverNotInstalled, Pool, PoolClosed, PoolTimeout


def start(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join(thread, timeout=10):
    thread.join(timeout)
    assert not thread.is_alive(), "thread did not finish"


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def make_table(db, name):
    conn = db.admin()
    cursor = conn.cursor()
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    cursor.execute(f"CREATE TABLE {name} (n INTEGER)")
    conn.commit()
    conn.close()


def count_rows(db, name):
    conn = db.admin()
    cursor = conn.cursor()
    cursor.execute(f"SELECT COUNT(*) FROM {name}")
    (count,) = cursor.fetchone()
    conn.close()
    return count


# -- 1. lazy, bounded, most recently used first ----------------------------------------

def test_opens_nothing_until_asked(db, pools):
    pool = pools(db.url, max_size=3)
    assert pool.stats()["connects"] == 0
    assert pool.stats()["size"] == 0
    if db.kind == "postgresql":
        assert db.live_sessions() == set()


def test_opens_up_to_max_size_then_times_out(db, pools):
    pool = pools(db.url, max_size=3, timeout=0.2)
    held = [pool.checkout() for _ in range(3)]
    assert len({db.session_id(e.conn) for e in held}) == 3
    with pytest.raises(PoolTimeout, match="max_size=3"):
        pool.checkout()
    stats = pool.stats()
    assert (stats["connects"], stats["in_use"], stats["timeouts"]) == (3, 3, 1)
    for entry in held:
        pool.checkin(entry)
    assert pool.stats()["in_use"] == 0


def test_reuses_most_recently_returned_first(db, pools):
    pool = pools(db.url, max_size=2)
    a, b = pool.checkout(), pool.checkout()
    id_a, id_b = db.session_id(a.conn), db.session_id(b.conn)
    pool.checkin(a)
    pool.checkin(b)
    first = pool.checkout()
    assert db.session_id(first.conn) == id_b
    second = pool.checkout()
    assert db.session_id(second.conn) == id_a
    pool.checkin(first)
    pool.checkin(second)


def test_sequential_checkouts_share_one_session(db, pools):
    pool = pools(db.url, max_size=4)
    seen = set()
    for _ in range(100):
        with pool.connection() as conn:
            seen.add(db.session_id(conn))
            conn.rollback()
    stats = pool.stats()
    assert len(seen) == 1
    assert (stats["connects"], stats["checkouts"], stats["reuse_ratio"]) == (1, 100, 100)


def test_never_hands_one_connection_to_two_checkouts(db, pools):
    pool = pools(db.url, max_size=3, timeout=10)
    held, guard, errors, sessions = set(), threading.Lock(), [], set()

    def worker():
        for _ in range(40):
            with pool.connection() as conn:
                sid = db.session_id(conn)
                conn.rollback()
                with guard:
                    if sid in held:
                        errors.append(sid)
                    held.add(sid)
                    sessions.add(sid)
                time.sleep(0.0005)
                with guard:
                    held.discard(sid)

    threads = [start(worker) for _ in range(8)]
    for thread in threads:
        join(thread, 60)
    stats = pool.stats()
    assert errors == []
    assert len(sessions) <= 3
    assert stats["checkouts"] == stats["returns"] + stats["in_use"] == 320
    assert stats["in_use"] == 0 and stats["peak_in_use"] <= 3


# -- 2. waiting: first come, first served, then PoolTimeout -------------------------------

def test_waiters_are_served_in_arrival_order(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, timeout=10)
    holder = pool.checkout()
    order, threads = [], []
    for i in range(5):
        def waiter(i=i):
            with pool.connection():
                order.append(i)
        threads.append(start(waiter))
        wait_until(lambda: pool.stats()["waiting"] == i + 1)
    pool.checkin(holder)
    for thread in threads:
        join(thread)
    assert order == [0, 1, 2, 3, 4]
    assert pool.stats()["waits"] == 5


def test_no_thread_starves_while_others_reacquire(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, timeout=10)
    counts = [0] * 4
    stop = threading.Event()

    def hammer(i):
        while not stop.is_set():
            with pool.connection():
                counts[i] += 1

    threads = [start(hammer, i) for i in range(4)]
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        join(thread)
    mean = sum(counts) / len(counts)
    assert min(counts) >= 0.5 * mean, counts


def test_timeout_then_pool_still_works(db, pools):
    pool = pools(db.url, max_size=1, timeout=0.3)
    holder = pool.checkout()
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        pool.checkout()
    waited = time.monotonic() - started
    assert 0.27 <= waited < 2.3
    assert pool.stats()["waiting"] == 0
    pool.checkin(holder)
    with pool.connection() as conn:
        assert db.session_id(conn) == db.session_id(holder.conn)
    assert pool.stats()["timeouts"] == 1


def test_checkout_timeout_argument_overrides_the_pool(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, timeout=30)
    with pool.connection():
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            pool.checkout(timeout=0.1)
        assert time.monotonic() - started < 2


# -- 4. on return: rollback, discard, no round trip when idle ------------------------------

def test_open_transaction_is_rolled_back_on_return(db, pools, caplog):
    make_table(db, "wsgipool_rollback")
    pool = pools(db.url, max_size=1)
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        with pool.connection() as conn:
            sid = db.session_id(conn)
            conn.cursor().execute("INSERT INTO wsgipool_rollback VALUES (1)")
    assert count_rows(db, "wsgipool_rollback") == 0
    assert pool.stats()["rollbacks"] == 1
    assert any("rolled back" in r.getMessage() for r in caplog.records)
    with pool.connection() as conn:
        assert pool._driver.state(conn) == 0  # IDLE: the next request starts clean
        assert db.session_id(conn) == sid
        conn.rollback()


def test_committed_work_survives_return(db, pools):
    make_table(db, "wsgipool_commit")
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        conn.cursor().execute("INSERT INTO wsgipool_commit VALUES (1)")
        conn.commit()
    assert count_rows(db, "wsgipool_commit") == 1
    assert pool.stats()["rollbacks"] == 0


def test_idle_return_sends_nothing_to_postgresql(postgresql, pools):
    pool = pools(postgresql.url, max_size=1)
    with pool.connection():
        pass
    admin = postgresql.admin()

    def rollbacks():
        with admin.cursor() as cur:
            cur.execute("SELECT pg_stat_clear_snapshot()")
            cur.execute("SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()")
            return cur.fetchone()[0]

    before = rollbacks()
    for _ in range(20):
        with pool.connection():
            pass
    time.sleep(0.6)  # the statistics collector reports with a short delay
    assert rollbacks() - before < 5
    assert pool.stats()["rollbacks"] == 0
    admin.close()


def test_idle_return_sends_nothing_to_mariadb(mariadb, pools):
    pool = pools(mariadb.url, max_size=1)
    with pool.connection():
        pass
    admin = mariadb.admin()
    cursor = admin.cursor()

    def counters():
        cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_rollback', 'Questions')")
        return dict(cursor.fetchall())

    before = counters()
    for _ in range(20):
        with pool.connection():
            pass
    after = counters()
    admin.close()
    assert int(after["Com_rollback"]) - int(before["Com_rollback"]) == 0
    # The second SHOW is one question; twenty ROLLBACKs or pings would be twenty more.
    assert int(after["Questions"]) - int(before["Questions"]) <= 2
    assert pool.stats()["rollbacks"] == 0


def test_mariadb_statement_then_return_rolls_back(mariadb, pools):
    pool = pools(mariadb.url, max_size=1)
    before = mariadb.status("Com_rollback")
    with pool.connection() as conn:
        conn.cursor().execute("SELECT 1")
    assert mariadb.status("Com_rollback") - before == 1
    assert pool.stats()["rollbacks"] == 1


def test_connection_closed_by_handler_is_replaced(db, pools):
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        first = db.session_id(conn)
        conn.close()
    with pool.connection() as conn:
        second = db.session_id(conn)
        conn.rollback()
    stats = pool.stats()
    assert stats["discard_reasons"]["closed"] == 1
    assert stats["connects"] == 2
    if db.kind != "sqlite":
        assert second != first


def test_killed_session_costs_one_failure_then_is_discarded(server_db, pools, caplog):
    pool = pools(server_db.url, max_size=1)
    with pool.connection() as conn:
        victim = server_db.session_id(conn)
        conn.rollback()
    server_db.kill(victim)
    time.sleep(0.2)
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        with pytest.raises(Exception):
            with pool.connection() as conn:
                server_db.session_id(conn)
    stats = pool.stats()
    assert stats["discard_reasons"]["broken"] == 1, stats["discard_reasons"]
    assert stats["in_use"] == 0 and stats["idle"] == 0
    with pool.connection() as conn:
        assert server_db.session_id(conn) != victim
        conn.rollback()
    assert any("broken" in r.getMessage() for r in caplog.records)


# -- 8. max_lifetime, max_idle, pre_ping ---------------------------------------------------

@pytest.mark.parametrize("option, reason", [
    pytest.param("max_lifetime", "lifetime", id="max_lifetime"),
    pytest.param("max_idle", "idle", id="max_idle"),
])
def test_old_or_idle_connections_are_replaced(db, pools, option, reason):
    pool = pools(db.url, max_size=1, **{option: 0.2})
    with pool.connection() as conn:
        first = db.session_id(conn)
        conn.rollback()
    time.sleep(0.3)
    with pool.connection() as conn:
        second = db.session_id(conn)
        conn.rollback()
    stats = pool.stats()
    assert stats["discard_reasons"][reason] == 1
    assert stats["connects"] == 2
    if db.kind != "sqlite":
        assert second != first
        wait_until(lambda: db.live_sessions([first]) == set())


def test_pre_ping_replaces_a_dead_connection_unnoticed(server_db, pools):
    pool = pools(server_db.url, max_size=1, pre_ping=True)
    with pool.connection() as conn:
        victim = server_db.session_id(conn)
        conn.rollback()
    server_db.kill(victim)
    time.sleep(0.2)
    with pool.connection() as conn:
        assert server_db.session_id(conn) != victim
        conn.rollback()
    stats = pool.stats()
    assert stats["discard_reasons"]["broken"] == 1
    assert stats["rollbacks"] == 0


def test_pre_ping_works_on_sqlite_and_leaves_no_transaction(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, pre_ping=True)
    for _ in range(3):
        with pool.connection() as conn:
            assert not conn.in_transaction
    stats = pool.stats()
    assert stats["pings"] == 2  # not the first: a new connection needs no ping
    assert stats["rollbacks"] == 0


def test_pre_ping_seconds_pings_only_after_that_idle_time(db, pools):
    pool = pools(db.url, max_size=1, pre_ping=0.2)
    for _ in range(3):
        with pool.connection() as conn:
            conn.rollback()
    assert pool.stats()["pings"] == 0
    time.sleep(0.25)
    with pool.connection() as conn:
        conn.rollback()
    assert pool.stats()["pings"] == 1


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
    pytest.param({"max_lifetime": "1"}, TypeError, "max_lifetime", id="lifetime-str"),
    pytest.param({"max_idle": -5}, ConfigurationError, "max_idle", id="idle-negative"),
    pytest.param({"pre_ping": "yes"}, TypeError, "pre_ping", id="pre_ping-str"),
    pytest.param({"pre_ping": -1}, ConfigurationError, "pre_ping", id="pre_ping-negative"),
    pytest.param({"name": 3}, TypeError, "name", id="name-int"),
    pytest.param({"connect": "nope"}, TypeError, "connect", id="connect-not-callable"),
    pytest.param({"max_sise": 3}, TypeError, "max_sise", id="unknown-option"),
])
def test_bad_options_are_rejected_by_name(options, error, names):
    with pytest.raises(error, match=names):
        Pool("sqlite://", **options)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        Pool("sqlite://", 3)


def test_unknown_scheme_names_it_and_hides_the_password():
    with pytest.raises(ConfigurationError, match="'oracle'") as caught:
        Pool("oracle://scott:tiger@db/orcl")
    assert "tiger" not in str(caught.value)
    assert "connect=" in str(caught.value)


@pytest.mark.parametrize("url, module, extra", [
    pytest.param("mysql://u:pw@h/db", "MySQLdb", "mysql", id="mysql"),
    pytest.param("postgresql://u:pw@h/db", "psycopg2", "postgresql", id="postgresql"),
])
def test_missing_driver_says_what_to_install(monkeypatch, url, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # no server can uninstall a package
    with pytest.raises(DriverNotInstalled, match=rf"pip install wsgipool\[{extra}\]") as caught:
        Pool(url)
    assert "pw" not in str(caught.value).replace("wsgipool", "")


# -- 7. no password anywhere ----------------------------------------------------------

@pytest.mark.parametrize("url", [
    pytest.param("postgresql://someone:s3cr3t@127.0.0.1:1/db", id="postgresql"),
    pytest.param("mysql://someone:s3cr3t@127.0.0.1:1/db", id="mysql"),
])
def test_password_never_shown(url, pools, caplog):
    pool = pools(url, max_size=1, timeout=1)
    with caplog.at_level(logging.DEBUG, logger="wsgipool"):
        with pytest.raises(ConnectError) as caught:
            pool.checkout()
    shown = [repr(pool), pool.name, str(caught.value), repr(caught.value)]
    shown += [record.getMessage() for record in caplog.records]
    assert caplog.records, "the failure was logged"
    for text in shown:
        assert "s3cr3t" not in text
    assert "***" in pool.name


# -- connect failures: back off, then retry ---------------------------------------------

def test_connect_failure_backs_off_then_retries(pools):
    pool = pools("postgresql://postgres@127.0.0.1:1/test", max_size=2, timeout=1)
    with pytest.raises(ConnectError):
        pool.checkout()
    started = time.monotonic()
    with pytest.raises(ConnectError, match="next attempt in"):
        pool.checkout()
    assert time.monotonic() - started < 0.5
    assert pool.stats()["connect_errors"] == 1
    time.sleep(0.15)  # the first back-off is 0.1 s
    with pytest.raises(ConnectError, match="cannot connect"):
        pool.checkout()
    stats = pool.stats()
    assert stats["connect_errors"] == 2
    assert stats["size"] == 0 and stats["in_use"] == 0


def test_closed_pool_refuses_checkouts(db, pools):
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


def test_close_wakes_waiters_with_pool_closed(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, timeout=10)
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
    join(thread)
    assert len(failures) == 1
    pool.checkin(holder)  # returned after close: closed, not kept
    assert pool.stats()["size"] == 0
