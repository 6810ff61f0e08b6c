"""Edge cases of issue 13, on the real servers: what a connection carries back into the pool.

Each test states a contract of the pool's public API (``Pool``, ``PoolMiddleware``,
``checkout()``/``checkin()``, ``connection()``, ``stats()``) and checks it from outside:
server-side transaction state seen from an admin connection, rows another connection can
see, live server sessions, and the pool's own figures. Only interrupts (a ``BaseException``
in the middle of a round trip) are faked, by a proxy in front of a real connection: no
server raises one on demand.
"""

import ctypes
import sys
import threading
import time
import uuid
from wsgiref.validate import validator

import pytest

from test_middleware import Response, environ_for
from wsgipool import PoolClosed, PoolMiddleware, PoolTimeout
from wsgipool.drivers import make_driver


class Interrupted(BaseException):
    """What gevent.Timeout or KeyboardInterrupt look like to the pool: not an Exception."""


# -- helpers ----------------------------------------------------------------------------


def run(conn, sql, params=()):
    """Run one statement on ``conn``; its rows when it returns any."""
    cursor = conn.cursor()
    try:
        cursor.execute(sql, params) if params else cursor.execute(sql)
        return cursor.fetchall() if cursor.description else None
    finally:
        cursor.close()


def driver_of(database):
    """The URL scheme: postgresql, postgresql+psycopg, mysql, mysql+pymysql or sqlite."""
    return database.url.split("://", 1)[0]


def with_query(url, option):
    return url + ("&" if "?" in url else "?") + option


def warm_up(pool, database):
    """Open (or reuse) a connection, note its server session id, give it back idle."""
    with pool.connection() as conn:
        return database.session_id(conn)


def open_transaction(database, sid):
    """What the server says about a transaction open in session ``sid``; None if none."""
    if database.kind == "sqlite":
        return None
    admin = database.admin()
    try:
        if database.kind == "postgresql":
            found = run(admin, "SELECT state, xact_start FROM pg_stat_activity WHERE pid = %s",
                        (sid,))
            if found and (found[0][1] is not None or found[0][0].startswith("idle in")):
                return f"pg_stat_activity state={found[0][0]!r} xact_start={found[0][1]}"
            return None
        found = run(admin, "SELECT trx_id, trx_state, trx_started FROM "
                           "information_schema.INNODB_TRX WHERE trx_mysql_thread_id = %s",
                    (sid,))
        if found:
            return "INNODB_TRX trx_id=%s state=%s started=%s" % found[0]
        return None
    finally:
        admin.close()


def rows(database, table):
    admin = database.admin()
    try:
        return sorted(n for (n,) in run(admin, f"SELECT n FROM {table}"))
    finally:
        admin.close()


def insert_elsewhere(database, table, n):
    """Commit a row from a connection of the test's own."""
    admin = database.admin()
    try:
        run(admin, f"INSERT INTO {table} VALUES ({n})")
        admin.commit()
    finally:
        admin.close()


def retired(database, sid):
    """Whether the pool closed session ``sid`` (SQLite has no sessions: never)."""
    return database.kind != "sqlite" and not database.live_sessions([sid])


@pytest.fixture
def scratch():
    """Tables unique to the test, dropped at its end (after the pools: list it first)."""
    made = []

    def make(database):
        name = f"wsgipool_edge_{uuid.uuid4().hex[:10]}"
        admin = database.admin()
        try:
            run(admin, f"CREATE TABLE {name} (n INTEGER)")
            admin.commit()
        finally:
            admin.close()
        made.append((database, name))
        return name

    yield make
    for database, name in made:
        admin = database.admin()
        try:  # a session the test left inside a transaction must not hang the drop
            if database.kind == "postgresql":
                run(admin, "SET lock_timeout = '5s'")
            elif database.kind == "mysql":
                run(admin, "SET SESSION lock_wait_timeout = 5")
            run(admin, f"DROP TABLE IF EXISTS {name}")
            admin.commit()
        finally:
            admin.close()


# -- 1. autocommit plus an explicit transaction -------------------------------------------


def test_autocommit_begin_is_not_carried_into_the_next_checkout(any_postgresql, scratch, pools):
    """A handler in autocommit that runs BEGIN: rollback() alone is a no-op for psycopg2."""
    db = any_postgresql
    table = scratch(db)
    pool = pools(db.url, max_size=1)
    sid = warm_up(pool, db)
    with pool.connection() as conn:
        conn.autocommit = True
        run(conn, "BEGIN")
        run(conn, f"INSERT INTO {table} VALUES (1)")
    left = open_transaction(db, sid) if not retired(db, sid) else None
    with pool.connection() as conn:  # the next request commits its own write
        run(conn, f"INSERT INTO {table} VALUES (2)")
        conn.commit()
    pool.close()
    final = rows(db, table)
    problems = []
    if left is not None:
        problems.append(f"returned inside the handler's transaction ({left})")
    if final != [2]:
        problems.append(f"rows after close {final}, expected [2] (the next request's "
                        f"committed row)")
    assert not problems, f"{driver_of(db)}: " + "; ".join(problems)


# -- 2. every way a MariaDB driver can open a transaction -----------------------------------


def _begin_method(conn, table):
    conn.begin()
    run(conn, f"INSERT INTO {table} VALUES (1)")


def _begin_method_only(conn, table):
    conn.begin()


def _start_transaction(conn, table):
    run(conn, "START TRANSACTION")
    run(conn, f"INSERT INTO {table} VALUES (1)")


def _begin_statement(conn, table):
    run(conn, "BEGIN")
    run(conn, f"INSERT INTO {table} VALUES (1)")


def _set_autocommit_off(conn, table):
    run(conn, "SET autocommit=0")
    run(conn, f"INSERT INTO {table} VALUES (1)")


def _repeatable_read(conn, table):
    run(conn, f"SELECT COUNT(*) FROM {table}")  # a consistent snapshot, if in a transaction


def _consistent_snapshot(conn, table):
    run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT")


MYSQL_WAYS = [
    pytest.param(_begin_method, id="begin()+insert"),
    pytest.param(_begin_method_only, id="begin()-only"),
    pytest.param(_start_transaction, id="START-TRANSACTION"),
    pytest.param(_begin_statement, id="BEGIN"),
    pytest.param(_set_autocommit_off, id="SET-autocommit-0"),
    pytest.param(_repeatable_read, id="repeatable-read"),
    pytest.param(_consistent_snapshot, id="consistent-snapshot"),
]


@pytest.mark.parametrize("autocommit", [False, True], ids=["url-default", "url-autocommit"])
@pytest.mark.parametrize("handler", MYSQL_WAYS)
def test_mysql_transaction_never_outlives_the_checkout(any_mariadb, scratch, pools, handler,
                                                       autocommit):
    """Whatever opened it, the next checkout starts outside the handler's transaction."""
    db = any_mariadb
    table = scratch(db)
    url = with_query(db.url, "autocommit=true") if autocommit else db.url
    pool = pools(url, max_size=1)
    sid = warm_up(pool, db)
    with pool.connection() as conn:
        handler(conn, table)
    left = open_transaction(db, sid) if not retired(db, sid) else None
    insert_elsewhere(db, table, 100)
    with pool.connection() as conn:
        seen = run(conn, f"SELECT COUNT(*) FROM {table} WHERE n = 100")[0][0]
        run(conn, f"INSERT INTO {table} VALUES (2)")
        if not autocommit:  # with ?autocommit=true the URL promised each write commits
            conn.commit()
    pool.close()
    final = rows(db, table)
    problems = []
    if left is not None:
        problems.append(f"returned inside a transaction ({left})")
    if seen != 1:
        problems.append("the next checkout did not see a row committed meanwhile "
                        "(stale snapshot)")
    if final != [2, 100]:
        problems.append(f"rows after close {final}, expected [2, 100] (the next request's "
                        f"write {'autocommitted' if autocommit else 'committed'})")
    assert not problems, f"{driver_of(db)} {handler.__name__}: " + "; ".join(problems)


# -- 3. a reset callable that opens a transaction -----------------------------------------


def test_reset_callable_leaving_a_transaction_is_not_reused_inside_it(any_server_db, scratch,
                                                                      pools):
    """psycopg opens a transaction for RESET; a read opens a snapshot on MariaDB."""
    db = any_server_db
    table = scratch(db)

    def reset(conn):
        if db.kind == "postgresql":
            run(conn, "RESET app.tenant")
        else:
            run(conn, f"SELECT COUNT(*) FROM {table}")

    pool = pools(db.url, max_size=1, reset=reset)
    sid = warm_up(pool, db)  # its return runs the reset
    left = open_transaction(db, sid)
    insert_elsewhere(db, table, 100)
    time.sleep(0.2)
    with pool.connection() as conn:
        seen = run(conn, f"SELECT COUNT(*) FROM {table} WHERE n = 100")[0][0]
        age = (run(conn, "SELECT EXTRACT(EPOCH FROM clock_timestamp() - now())")[0][0]
               if db.kind == "postgresql" else None)
    discarded = pool.stats()["discard_reasons"]["reset_failed"]
    if discarded and retired(db, sid):
        return  # the contract's other outcome: the connection was not kept
    problems = []
    if left is not None:
        problems.append(f"idle in the pool inside the reset's transaction ({left}); "
                        f"reset_failed discards: {discarded}")
    if seen != 1:
        problems.append("the next checkout did not see a row committed meanwhile")
    if age is not None and float(age) > 0.15:
        problems.append(f"the next checkout ran in a transaction opened {float(age):.2f} s "
                        f"earlier")
    assert not problems, f"{driver_of(db)}: " + "; ".join(problems)


# -- 4. driver-side flags and reset="session" --------------------------------------------


def _psycopg2_flags(conn):
    return dict(autocommit=conn.autocommit, readonly=conn.readonly,
                isolation_level=conn.isolation_level, deferrable=conn.deferrable)


def _psycopg2_change(conn):
    conn.set_session(isolation_level="SERIALIZABLE", readonly=True, deferrable=True,
                     autocommit=True)


def _psycopg_flags(conn):
    return dict(autocommit=conn.autocommit, read_only=conn.read_only,
                isolation_level=conn.isolation_level, deferrable=conn.deferrable)


def _psycopg_change(conn):
    import psycopg

    conn.autocommit = True
    conn.read_only = True
    conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
    conn.deferrable = True


def _mysql_flags(conn):
    flags = dict(autocommit=bool(conn.get_autocommit()))
    isolation, read_only = run(conn, "SELECT @@tx_isolation, @@tx_read_only")[0]
    flags.update(tx_isolation=isolation, tx_read_only=int(read_only))
    conn.rollback()
    return flags


def _mysql_change(conn):
    conn.autocommit(not conn.get_autocommit())
    run(conn, "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    run(conn, "SET SESSION TRANSACTION READ ONLY")


def _sqlite_flags(conn):
    return dict(isolation_level=conn.isolation_level)


def _sqlite_change(conn):
    conn.isolation_level = None  # autocommit


FLAGS = {
    "postgresql": (_psycopg2_flags, _psycopg2_change),
    "postgresql+psycopg": (_psycopg_flags, _psycopg_change),
    "mysql": (_mysql_flags, _mysql_change),
    "mysql+pymysql": (_mysql_flags, _mysql_change),
    "sqlite": (_sqlite_flags, _sqlite_change),
}


def _autocommit_on(conn, driver):
    if driver.startswith("postgresql"):
        conn.autocommit = True
    elif driver.startswith("mysql"):
        conn.autocommit(True)
    else:
        conn.isolation_level = None


def test_session_reset_restores_connect_time_flags(db, pools):
    """reset="session": the next checkout sees every driver flag as it was at connect."""
    read, change = FLAGS[driver_of(db)]
    pool = pools(db.url, max_size=1, reset="session")
    with pool.connection() as conn:
        at_connect = read(conn)
    with pool.connection() as conn:
        change(conn)
        changed = read(conn)
    assert changed != at_connect, f"the test failed to change any flag: {changed}"
    with pool.connection() as conn:
        after = read(conn)
    differ = {key: (at_connect[key], after[key]) for key in at_connect
              if at_connect[key] != after[key]}
    assert not differ, (
        f"{driver_of(db)}: after reset='session' the next checkout has "
        + ", ".join(f"{key}={now!r} (at connect {then!r})" for key, (then, now) in differ.items()))


def test_autocommit_switched_on_does_not_commit_a_later_failed_request(db, scratch):
    """transaction=True: a 500 rolls back, even after an earlier request set autocommit."""
    table = scratch(db)
    driver = driver_of(db)

    def app(environ, start_response):
        conn = environ["db.conn"]
        if environ["PATH_INFO"] == "/autocommit":
            _autocommit_on(conn, driver)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"switched"]
        run(conn, f"INSERT INTO {table} VALUES (2)")
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"failed"]

    middleware = PoolMiddleware(app, db.url, transaction=True, max_size=1)
    try:
        assert Response(validator(middleware), environ_for("/autocommit")).status == "200 OK"
        failed = Response(validator(middleware), environ_for("/write"))
        assert failed.status.startswith("500")
    finally:
        middleware.pool.close()
    assert rows(db, table) == [], (
        f"{driver}: a request that answered 500 committed its write {rows(db, table)}, "
        f"because an earlier request left autocommit on")


# -- 5. interrupts (BaseException) in the pool's own round trips ---------------------------


class Trap:
    """Which connection methods raise ``Interrupted`` now, and which did."""

    def __init__(self):
        self.armed = set()
        self.sprung = []


class InterruptingConnection:
    """A real connection behind a proxy whose armed methods raise ``Interrupted``."""

    def __init__(self, conn, trap):
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_trap", trap)

    def __getattr__(self, name):
        attribute = getattr(self._conn, name)
        if name in self._trap.armed and callable(attribute):
            def interrupted(*args, **kwargs):
                self._trap.sprung.append(name)
                raise Interrupted(f"interrupted in {name}()")
            return interrupted
        return attribute

    def __setattr__(self, name, value):
        setattr(self._conn, name, value)


def _dirty(conn, database):
    """Leave a transaction open, so the return must roll back."""
    run(conn, "BEGIN" if database.kind == "sqlite" else "SELECT 1")


# phase -> (methods armed, how one interrupted round goes)
def _round_ping(pool, database, trap):
    warm_up(pool, database)
    trap.armed = {"cursor", "ping", "execute"}
    try:
        entry = pool.checkout(timeout=1)
    except Interrupted:
        return
    finally:
        trap.armed = set()
    pool.checkin(entry)


def _round_rollback(pool, database, trap):
    entry = pool.checkout(timeout=1)
    _dirty(entry.conn, database)
    trap.armed = {"rollback"}
    try:
        pool.checkin(entry)
    except Interrupted:
        pass
    finally:
        trap.armed = set()


def _round_reset(pool, database, trap):
    entry = pool.checkout(timeout=1)
    trap.armed = {"reset"}
    try:
        pool.checkin(entry)
    except Interrupted:
        pass
    finally:
        trap.armed = set()


def _round_close(pool, database, trap):
    entry = pool.checkout(timeout=1)
    trap.armed = {"reset-fails", "close"}  # the reset fails: the discard's close() is cut
    try:
        pool.checkin(entry)
    except Interrupted:
        pass
    finally:
        trap.armed = set()


@pytest.mark.parametrize("one_round", [
    pytest.param(_round_ping, id="pre-ping"),
    pytest.param(_round_rollback, id="rollback-on-return"),
    pytest.param(_round_reset, id="reset-callable"),
    pytest.param(_round_close, id="close-of-discarded"),
])
def test_interrupt_in_a_round_trip_loses_no_slot(db, one_round):
    """max_size interrupts in a row, then the pool must still serve and close."""
    trap = Trap()
    real = make_driver(db.url)
    opened = []

    def connect():
        conn = InterruptingConnection(real.connect(), trap)
        opened.append(conn)
        return conn

    def reset(conn):
        if "reset" in trap.armed:
            trap.sprung.append("reset")
            raise Interrupted("interrupted in reset")
        if "reset-fails" in trap.armed:
            raise RuntimeError("the reset failed")

    from wsgipool import Pool

    pool = Pool(db.url, connect=connect, max_size=2, timeout=1, pre_ping=True, reset=reset)
    try:
        for _ in range(pool.max_size):
            one_round(pool, db, trap)
        assert trap.sprung, "no interrupt was raised: the test did not reach the round trip"
        stats = pool.stats()
        taken, problem = [], None
        try:
            for _ in range(pool.max_size):
                taken.append(pool.checkout(timeout=1))
        except PoolTimeout as exc:
            problem = f"a later checkout timed out: {exc}"
        sids = {db.session_id(entry.conn) for entry in taken}
        conns = {id(entry.conn) for entry in taken}
        for entry in taken:
            pool.checkin(entry)
        assert stats["in_use"] == 0 and problem is None, (
            f"{driver_of(db)} after {pool.max_size} interrupts ({', '.join(trap.sprung)}): "
            f"in_use={stats['in_use']} size={stats['size']} idle={stats['idle']}"
            + (f"; {problem}" if problem else ""))
        assert len(conns) == len(taken) and (db.kind == "sqlite" or len(sids) == len(taken)), (
            f"the same connection was handed out twice: {len(taken)} checkouts, "
            f"{len(conns)} connections, {len(sids)} sessions")
    finally:
        closer = threading.Thread(target=pool.close, daemon=True)
        closer.start()
        closer.join(5)
        for conn in opened:  # whatever the pool lost track of
            try:
                conn._conn.close()
            except Exception:
                pass
    assert not closer.is_alive(), "pool.close() hung: the pool lock stayed held"


# -- 7. housekeeping: max_idle, min_size, max_lifetime while idle ---------------------------

MAX_IDLE = 0.5


def _bound(seconds):
    """How late housekeeping may act: 10% of the setting, plus half a second."""
    return seconds * 1.1 + 0.5


def _sessions_of(pool, database, count):
    """Check ``count`` connections out at once, then return them all; their session ids."""
    entries = [pool.checkout(timeout=5) for _ in range(count)]
    sids = [database.session_id(entry.conn) for entry in entries]
    for entry in entries:
        pool.checkin(entry)
    return sids


@pytest.mark.parametrize("traffic", [False, True], ids=["no-traffic", "with-traffic"])
def test_idle_connections_close_on_time(any_server_db, pools, traffic):
    """Idle past max_idle: closed on the server, whether or not requests keep coming."""
    db = any_server_db
    pool = pools(db.url, max_size=3, max_idle=MAX_IDLE)
    sids = _sessions_of(pool, db, 3)
    returned = time.monotonic()
    stop = threading.Event()

    def requests():
        while not stop.is_set():
            with pool.connection(timeout=5) as conn:
                run(conn, "SELECT 1")
                conn.rollback()
            time.sleep(0.05)

    worker = threading.Thread(target=requests, daemon=True)
    if traffic:
        worker.start()
    try:
        time.sleep(max(0.0, returned + _bound(MAX_IDLE) - time.monotonic()))
        watched = sids[:-1] if traffic else sids  # the last returned is reused first
        still = db.live_sessions(watched)
    finally:
        stop.set()
        if traffic:
            worker.join(5)
    assert not worker.is_alive(), "the traffic thread hung"
    assert not still, (
        f"{driver_of(db)}: {len(still)} of {len(watched)} idle sessions still open on the "
        f"server {_bound(MAX_IDLE):.2f} s after their return (max_idle={MAX_IDLE}, "
        f"{'with' if traffic else 'without'} traffic); stats idle={pool.stats()['idle']}")


def test_min_size_keeps_connections_open(any_server_db, pools):
    """min_size=2: two open from the start, and still two after max_idle has passed."""
    db = any_server_db
    try:
        pool = pools(db.url, min_size=2, max_size=4, max_idle=MAX_IDLE)
    except TypeError as exc:
        pytest.fail(f"Pool(min_size=2) refused: {exc}")
    deadline = time.monotonic() + 2
    while pool.stats()["size"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pool.stats()["size"] == 2, f"size {pool.stats()['size']} 2 s after Pool(min_size=2)"
    time.sleep(_bound(MAX_IDLE))  # past max_idle: retired, and reopened to min_size
    stats = pool.stats()
    assert stats["size"] == 2 and stats["idle"] == 2, (
        f"after {_bound(MAX_IDLE):.1f} s idle: size={stats['size']} idle={stats['idle']}")
    if db.kind == "postgresql":
        assert len(db.live_sessions()) == 2, f"server sessions: {db.live_sessions()}"


def test_max_lifetime_retires_idle_connections(any_server_db, pools):
    """A connection past max_lifetime is closed even if nobody checks it out again."""
    db = any_server_db
    lifetime = 0.5
    pool = pools(db.url, max_lifetime=lifetime)
    opened = time.monotonic()
    (sid,) = _sessions_of(pool, db, 1)
    time.sleep(max(0.0, opened + _bound(lifetime) - time.monotonic()))
    assert not db.live_sessions([sid]), (
        f"{driver_of(db)}: session {sid} still open {_bound(lifetime):.2f} s after it was "
        f"opened (max_lifetime={lifetime}), idle in the pool; stats {_figures(pool.stats())}")


# -- 9. stats(): checkouts == returns + in_use at every instant ----------------------------


def _figures(stats):
    keys = ("size", "in_use", "idle", "checkouts", "returns", "connects", "closes", "opening")
    return {key: stats[key] for key in keys if key in stats}


def _broken_identity(stats):
    return stats["checkouts"] != stats["returns"] + stats["in_use"]


def test_stats_identity_while_a_connection_opens(db, pools):
    """A connect in progress is not a checkout yet: it must not count as in use."""
    real = make_driver(db.url)
    connecting = threading.Event()

    def slow_connect():
        connecting.set()
        time.sleep(0.5)
        return real.connect()

    pool = pools(db.url, connect=slow_connect, max_size=2)
    done = []

    def take():
        entry = pool.checkout(timeout=5)
        pool.checkin(entry)
        done.append(entry)

    taker = threading.Thread(target=take, daemon=True)
    taker.start()
    assert connecting.wait(5), "the connect never started"
    seen = []
    while taker.is_alive() and len(seen) < 10000:
        seen.append(pool.stats())
        time.sleep(0.01)
    taker.join(5)
    assert not taker.is_alive() and done, "the checkout did not finish"
    broken = [_figures(s) for s in seen if _broken_identity(s)]
    assert not broken, (
        f"{driver_of(db)}: checkouts != returns + in_use in {len(broken)} of {len(seen)} "
        f"snapshots during a connect, e.g. {broken[0]}")


def test_stats_identity_under_concurrency(db, pools):
    """Opens, reuses, discards and waits from several threads; stats() polled meanwhile."""
    real = make_driver(db.url)

    def slow_connect():
        time.sleep(0.02)
        return real.connect()

    turn = iter(range(10 ** 9))

    def reset(conn):
        if next(turn) % 5 == 0:
            raise RuntimeError("every fifth reset fails: the connection is discarded")

    pool = pools(db.url, connect=slow_connect, max_size=2, timeout=5, reset=reset)
    stop = threading.Event()
    errors = []

    def work():
        try:
            while not stop.is_set():
                with pool.connection():
                    time.sleep(0.002)
        except Exception as exc:  # noted, and failed below
            errors.append(exc)

    workers = [threading.Thread(target=work, daemon=True) for _ in range(4)]
    for worker in workers:
        worker.start()
    seen = []
    ends = time.monotonic() + 1.0
    while time.monotonic() < ends:
        seen.append(pool.stats())
    stop.set()
    for worker in workers:
        worker.join(10)
        assert not worker.is_alive(), "a worker hung"
    assert not errors, f"workers failed: {errors[:3]}"
    final = pool.stats()
    broken = [_figures(s) for s in seen if _broken_identity(s)]
    assert not broken and not _broken_identity(final), (
        f"{driver_of(db)}: checkouts != returns + in_use in {len(broken)} of {len(seen)} "
        f"snapshots, e.g. {broken[:2]}; final {_figures(final)}")


# -- 10. a closed pool hands out nothing ----------------------------------------------------


def _interrupt(thread):
    """Raise ``Interrupted`` in ``thread`` at its next bytecode (as gevent.Timeout would)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                                      ctypes.py_object(Interrupted))
    assert done == 1, "could not schedule the interrupt"


def test_waiter_interrupted_after_hand_over_leaves_nothing_after_close(db, pools):
    """Served a connection, interrupted before it takes it, while the pool closes."""
    pool = pools(db.url, max_size=1, timeout=5)
    held = pool.checkout()
    sid = db.session_id(held.conn)
    outcome = {}

    def wait():
        try:
            outcome["got"] = pool.checkout(timeout=5)
        except BaseException as exc:
            outcome["raised"] = exc

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while pool.stats()["waiting"] < 1:
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.01)
    # The interrupt is pending while the waiter sleeps on its lock; it fires once the
    # waiter wakes. A long switch interval keeps this thread running through the
    # hand-over and close() before the waiter gets a chance.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(5.0)
    try:
        _interrupt(waiter)
        pool.checkin(held)  # served to the waiter
        pool.close()
    finally:
        sys.setswitchinterval(switch)
    waiter.join(5)
    assert not waiter.is_alive(), "the waiter hung"
    if "got" in outcome:
        pool.checkin(outcome["got"])
    stats = pool.stats()
    live = db.live_sessions([sid])
    try:
        after = pool.checkout(timeout=1)
    except PoolClosed:
        after = None
    except PoolTimeout as exc:
        after = exc
    else:
        pool.checkin(after)
        after = f"{after!r} (before its checkin)"
    problems = []
    if stats["idle"]:
        problems.append(f"stats idle={stats['idle']} after close()")
    if live:
        problems.append(f"session {sid} still open on the server")
    if after is not None:
        problems.append(f"checkout on the closed pool gave {after}, not PoolClosed")
    assert not problems, (
        f"{driver_of(db)} (waiter: {outcome.get('raised', 'got a connection')!r}): "
        + "; ".join(problems))
