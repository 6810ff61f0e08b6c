"""Races and interrupts at the pool's edges: no slot lost, no connection handed out or left open.

Each test comes from a reviewer's reproducer. Real databases wherever one can make the case;
a fake connection (``FakeDatabase``) only where the case needs something no server does on
demand: a ``close()`` that is interrupted or slow. Interrupts are ``Interrupt``, our own
``BaseException`` standing in for ``KeyboardInterrupt`` or ``gevent.Timeout``.
"""

import gc
import json
import logging
import os
import subprocess
import sys
import threading
import time
import weakref

import pytest

import wsgipool
from wsgipool import Pool, PoolClosed, PoolTimeout, watchdog
from wsgipool.drivers import make_driver

# The wsgipool this run imported (the checkout, unless PYTHONPATH says otherwise).
UNDER_TEST = os.path.dirname(os.path.dirname(os.path.abspath(wsgipool.__file__)))
NOHOOK_SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "nohook_checkin.py")


class Interrupt(BaseException):
    """An interrupt of our own: what KeyboardInterrupt or gevent.Timeout would do."""


class FakeConnection:
    """A DB-API connection with no server behind it: every query fails (so a pre-ping
    does), and its database decides what ``close()`` does first."""

    def __init__(self, database):
        self.database = database
        self.closed = False

    def cursor(self):
        raise ConnectionError("no server behind a fake connection")

    def rollback(self):
        pass

    def commit(self):
        pass

    def close(self):
        if self.database.on_close is not None:
            self.database.on_close(self)
        self.closed = True

    def __repr__(self):
        return f"<FakeConnection {self.database.opened.index(self) + 1}>"


class FakeDatabase:
    """Hands out FakeConnections and remembers them, to tell which are still open."""

    def __init__(self):
        self.opened = []
        self.on_close = None  # called with the connection before it closes

    def connect(self):
        conn = FakeConnection(self)
        self.opened.append(conn)
        return conn

    def still_open(self):
        return [conn for conn in self.opened if not conn.closed]


def figures(stats):
    """The counts the identities relate, for assertion messages."""
    return " ".join(f"{key}={stats[key]}" for key in
                    ("checkouts", "returns", "in_use", "size", "idle", "opening"))


def assert_identities(stats):
    """The two identities stats() keeps at every instant."""
    assert stats["checkouts"] == stats["returns"] + stats["in_use"], figures(stats)
    assert stats["size"] == stats["in_use"] + stats["idle"] + stats["opening"], figures(stats)


def wait_for(predicate, timeout=2.0):
    """Poll ``predicate`` until true or ``timeout`` seconds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(0.01)


def run_thread(target):
    """Start ``target`` in a daemon thread; what it returned or raised lands in ``out``."""
    out = {}

    def run():
        try:
            out["result"] = target()
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def joined(thread, timeout=5.0):
    thread.join(timeout)
    assert not thread.is_alive(), "thread did not finish"


@pytest.fixture
def second_checkins():
    """Messages of the pool's 'given back twice' warnings logged during the test."""
    found = []

    class Catch(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if "twice" in message:
                found.append(message)

    handler = Catch(logging.WARNING)
    logger = logging.getLogger("wsgipool")
    logger.addHandler(handler)
    yield found
    logger.removeHandler(handler)


# -- a waiter served just as its timeout expires (r8) ------------------------------------


@pytest.mark.parametrize("database", [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql"),
])
def test_waiter_served_as_it_times_out_checks_in_once(request, database, pools,
                                                      second_checkins):
    """Waiters with short timeouts on one connection: whoever is handed it just as its wait
    ends must be able to give it back, or the only slot is lost for good."""
    pool = pools(request.getfixturevalue(database).url, max_size=1, timeout=5)
    stop = time.monotonic() + 1.0
    errors = []

    def take_turns():
        try:
            while time.monotonic() < stop and not second_checkins:
                try:
                    entry = pool.checkout(timeout=0.01)
                except PoolTimeout:
                    continue
                time.sleep(0.001)
                pool.checkin(entry)
        except BaseException as exc:  # noqa: BLE001  (asserted on below)
            errors.append(exc)

    def read_stats():  # as exporters do: the pool's lock gets contended
        while time.monotonic() < stop and not second_checkins:
            pool.stats()

    threads = ([threading.Thread(target=take_turns, daemon=True) for _ in range(6)]
               + [threading.Thread(target=read_stats, daemon=True) for _ in range(2)])
    for thread in threads:
        thread.start()
    for thread in threads:
        joined(thread, 10)
    stats = pool.stats()
    assert errors == []
    assert second_checkins == [], f"a correct checkin was refused; stats {figures(stats)}"
    assert (stats["in_use"], stats["checkouts"]) == (0, stats["returns"]), figures(stats)
    assert stats["checkouts"] > 10  # the threads really took turns
    pool.checkin(pool.checkout(timeout=1))


# -- interrupts --------------------------------------------------------------------------


def test_interrupt_discarding_a_dead_idle_connection_loses_no_slot(pools):
    """The pre-ping of an idle connection fails, and closing it is interrupted: the checkout
    fails with the interrupt, but the room the connection held is free again."""
    fake = FakeDatabase()
    pool = pools(connect=fake.connect, max_size=1, timeout=0.5, pre_ping=True)
    pool.checkin(pool.checkout())  # idle now; its next pre-ping fails

    def interrupt(conn):
        raise Interrupt("interrupted while closing a dead connection")

    fake.on_close = interrupt
    with pytest.raises(Interrupt):
        pool.checkout()
    fake.on_close = None
    stats = pool.stats()
    try:
        entry = pool.checkout(timeout=1)
    except PoolTimeout as exc:
        pytest.fail(f"the slot was lost: {exc}; stats after the interrupt {figures(stats)}")
    assert entry.conn is fake.opened[-1] and len(fake.opened) == 2
    pool.checkin(entry)
    assert_identities(stats)
    assert (stats["size"], stats["opening"], stats["in_use"]) == (0, 0, 0), figures(stats)


def test_interrupted_housekeeping_reserves_no_room(sqlite, pools, monkeypatch):
    """An interrupt while the housekeeping opens min_size connections: the rooms it had
    reserved are free again, and the housekeeping still serves the other pools."""
    died = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    plain = make_driver(sqlite.url)
    attempts = []

    def connect():
        attempts.append(1)
        if len(attempts) == 1:
            raise Interrupt("interrupted while opening min_size connections")
        return plain.connect()

    pool = pools(sqlite.url, connect=connect, max_size=3, min_size=3, timeout=0.5)
    assert wait_for(lambda: died), "the housekeeping thread was not interrupted"
    assert [type(exc) for exc in died] == [Interrupt]
    stats = pool.stats()
    assert (stats["opening"], stats["size"]) == (0, 0), figures(stats)

    taken, refused = [], []
    for _ in range(3):
        try:
            taken.append(pool.checkout(timeout=0.5))
        except PoolTimeout as exc:
            refused.append(exc)
    for entry in taken:
        pool.checkin(entry)
    assert (len(taken), refused) == (3, [])

    other = pools(sqlite.url, max_size=1, max_idle=0.3)
    with other.connection() as conn:
        conn.execute("SELECT 1")
    assert wait_for(lambda: other.stats()["idle"] == 0), \
        "the other pool's idle connection outlived max_idle: no housekeeping"
    assert other.stats()["discard_reasons"]["idle"] == 1
    with pytest.raises(Exception, match="closed"):
        conn.execute("SELECT 1")


def test_interrupted_close_still_closes_every_idle_connection(pools):
    """close() interrupted while closing one idle connection goes on with the others."""
    fake = FakeDatabase()
    pool = pools(connect=fake.connect, max_size=3)
    entries = [pool.checkout() for _ in range(3)]
    for entry in entries:
        pool.checkin(entry)
    interrupted = []

    def interrupt_first(conn):
        if not interrupted:
            interrupted.append(conn)
            raise Interrupt("interrupted during shutdown")

    fake.on_close = interrupt_first
    with pytest.raises(Interrupt):
        pool.close()
    fake.on_close = None
    left = [conn for conn in fake.still_open() if conn not in interrupted]
    assert left == [], f"still open after the interrupted close(): {left}"
    stats = pool.stats()
    assert (stats["size"], stats["in_use"], stats["idle"]) == (0, 0, 0), figures(stats)


# -- what stats() and a closed pool show while connections are being closed or opened ------


@pytest.mark.parametrize("closer", [
    pytest.param("close", id="pool-close"),
    pytest.param("housekeeping", id="housekeeping-retires-idle"),
])
def test_stats_identities_hold_while_an_idle_connection_closes(pools, closer):
    """A goodbye that takes a moment (slow network): meanwhile the connection being closed
    counts as nobody's checkout."""
    fake = FakeDatabase()
    closing, finish = threading.Event(), threading.Event()

    def slow_close(conn):
        closing.set()
        finish.wait(2)

    max_idle = 0.2 if closer == "housekeeping" else None
    pool = pools(connect=fake.connect, max_size=2, max_idle=max_idle)
    pool.checkin(pool.checkout())
    fake.on_close = slow_close
    thread = None
    if closer == "close":
        thread, out = run_thread(pool.close)
    try:
        assert closing.wait(2), "the idle connection was not being closed"
        during = pool.stats()
    finally:
        finish.set()
    if thread is not None:
        joined(thread)
        assert "error" not in out
    assert wait_for(lambda: not fake.still_open())
    assert_identities(during)
    assert (during["in_use"], during["idle"]) == (0, 0), figures(during)
    assert_identities(pool.stats())


def test_close_during_a_connect_hands_nothing_out(postgresql, pools):
    """A checkout whose connect is under way when the pool closes gets PoolClosed, and the
    session it opened is closed on the server."""
    plain = make_driver(postgresql.url)
    connecting, go_on = threading.Event(), threading.Event()

    def gated_connect():
        connecting.set()
        go_on.wait(5)
        return plain.connect()

    pool = pools(postgresql.url, connect=gated_connect, max_size=1)
    thread, out = run_thread(pool.checkout)
    assert connecting.wait(2)
    pool.close()
    go_on.set()
    joined(thread)
    handed = out.get("result")
    if handed is not None:  # the failure under test; end its session all the same
        handed.conn.close()
    assert handed is None, f"a closed pool handed out {handed!r}"
    assert isinstance(out.get("error"), PoolClosed), out
    assert wait_for(lambda: not postgresql.live_sessions()), \
        f"its session is still open: {postgresql.live_sessions()}"
    stats = pool.stats()
    assert (stats["size"], stats["in_use"], stats["opening"]) == (0, 0, 0), figures(stats)


def test_close_during_a_retry_hands_nothing_out(pools):
    """A dead idle connection taken just before close(): its replacement is never opened
    for the checkout, which gets PoolClosed."""
    fake = FakeDatabase()
    pool = pools(connect=fake.connect, max_size=1, pre_ping=True)
    pool.checkin(pool.checkout())  # idle; its pre-ping fails
    closing, finish = threading.Event(), threading.Event()

    def slow_close(conn):
        closing.set()
        finish.wait(2)

    fake.on_close = slow_close
    thread, out = run_thread(pool.checkout)
    try:
        assert closing.wait(2), "the dead connection was not discarded"
        pool.close()
    finally:
        finish.set()
    joined(thread)
    fake.on_close = None
    assert out.get("result") is None, f"a closed pool handed out {out.get('result')!r}"
    assert isinstance(out.get("error"), PoolClosed), out
    assert fake.still_open() == []
    stats = pool.stats()
    assert (stats["size"], stats["in_use"], stats["opening"]) == (0, 0, 0), figures(stats)


# -- process and thread lifetimes --------------------------------------------------------


@pytest.mark.parametrize("database", [
    pytest.param("postgresql", id="psycopg2"),
    pytest.param("mariadb", id="mysqlclient"),
])
def test_checkin_in_a_child_forked_without_hooks_spares_the_parent(request, database):
    """A request's connection given back in a child forked without Python's fork hooks
    (uWSGI's default) must not roll back the parent's transaction on the shared socket."""
    url = request.getfixturevalue(database).url
    done = subprocess.run([sys.executable, NOHOOK_SCRIPT, url], check=False,
                          env=dict(os.environ, PYTHONPATH=UNDER_TEST),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["child_exit"] == 0
    assert (seen["commit_error"], seen["rows"]) == (None, 1), seen


def test_dropped_pool_is_collectable_while_housekeeping_runs(sqlite):
    """A pool dropped without close() is freed: the housekeeping holds it only while it
    tidies it, not while it sleeps."""
    pool = Pool(sqlite.url, max_size=2)
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    ref = weakref.ref(pool)
    time.sleep(0.3)  # the housekeeping has looked at it, and sleeps
    assert any(t.name == "wsgipool-housekeeping" for t in threading.enumerate())
    del pool
    for _ in range(3):
        gc.collect()
        time.sleep(0.05)
    kept = ref()
    try:
        assert kept is None, f"the dropped pool is still alive: {kept!r}"
    finally:
        if kept is not None:
            kept.close()
        del kept
        conn.close()  # the idle connection the collected pool left behind


def os_threads():
    return set(os.listdir("/proc/self/task"))


def watchdog_threads():
    """Idents of the threads running the watchdog's loop."""
    found = []
    for ident, frame in sys._current_frames().items():
        while frame is not None:
            if (frame.f_code.co_name == "_run"
                    and frame.f_code.co_filename == watchdog.__file__):
                found.append(ident)
                break
            frame = frame.f_back
    return found


def test_watchdog_thread_ends_when_nothing_is_guarded(postgresql, pools, monkeypatch):
    """The watchdog's OS thread ends after IDLE_EXIT seconds with nothing to guard, and
    the next guarded round trip starts a new one."""
    monkeypatch.setattr(watchdog, "IDLE_EXIT", 0.3, raising=False)
    pool = pools(postgresql.url, max_size=1, pre_ping=True, max_idle=None,
                 max_lifetime=None)
    with pool.connection():
        pass  # opened (no ping); the housekeeping thread runs from now on
    was_running = bool(watchdog_threads())  # left by an earlier test
    before = len(os_threads())
    for _ in range(2):
        with pool.connection():  # a guarded pre-ping: the watchdog runs
            pass
        assert wait_for(watchdog_threads), "no watchdog thread after a guarded round trip"
        assert wait_for(lambda: not watchdog_threads()), \
            ("the watchdog thread still runs 2 s after its last guard "
             f"(IDLE_EXIT={getattr(watchdog, 'IDLE_EXIT', None)})")
        assert len(os_threads()) <= before - was_running
        was_running = False
    assert pool.stats()["pings"] == 2
