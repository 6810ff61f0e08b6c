"""A review of ``max_waiting``, refusal pacing and gevent/eventlet cooperation (issue 16,
points 5-7): interruptions, edges and concurrency, against the real servers."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import wsgipool
import wsgipool.pacing
from servers import ROOT
from wsgipool import ConfigurationError, ConnectError, Pool, PoolClosed, PoolMiddleware, PoolTimeout

PG = "postgresql://postgres@127.0.0.1:5432/test"


def _whole(pool):
    """The pool's books balance: every checkout returned or in use, every slot counted."""
    s = pool.stats()
    assert s["checkouts"] == s["returns"] + s["in_use"], s
    assert s["size"] == s["in_use"] + s["idle"] + s["opening"], s
    return s


def _alarm(seconds, action):
    """Run ``action`` in the main thread ``seconds`` from now (a signal handler), as a
    KeyboardInterrupt would arrive."""
    def handler(signum, frame):
        action()

    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return previous


def _interrupt():
    raise KeyboardInterrupt


@pytest.mark.parametrize("handed", ["nothing", "a connection", "room"])
def test_a_waiter_interrupted_while_queued_or_being_served_leaves_the_pool_whole(
        server_db, pools, handed):
    """KeyboardInterrupt in the queue: before anything is handed over, just after a
    connection is, or just after room to open one is; its place in the queue comes back."""
    pool = pools(server_db.url, max_size=1, max_waiting=1, timeout=5)
    holder = pool.checkout()
    first = server_db.session_id(holder.conn)

    def arrive():
        if handed == "a connection":
            pool.checkin(holder)  # handed to the waiter (this thread), which then...
        elif handed == "room":
            holder.conn.close()
            pool.checkin(holder)  # discarded: its room goes to the waiter
        _interrupt()  # ...is interrupted before it returns

    previous = _alarm(0.1, arrive)
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.checkout()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if handed == "nothing":
        pool.checkin(holder)
    stats = _whole(pool)
    assert (stats["waiting"], stats["in_use"], stats["opening"]) == (0, 0, 0), stats
    assert stats["size"] == (0 if handed == "room" else 1), stats
    # The place in the queue came back: one may queue again (a timeout, not queue_full).
    entry = pool.checkout()
    with pytest.raises(PoolTimeout) as raised:
        pool.checkout(timeout=0.05)
    assert not raised.value.queue_full
    if handed != "room":
        assert server_db.session_id(entry.conn) == first  # the same connection, reused
    pool.checkin(entry)
    stats = _whole(pool)
    assert (stats["queue_full"], stats["timeouts"], stats["in_use"]) == (0, 1, 0), stats


def test_max_waiting_0_refuses_only_when_nothing_can_be_had(server_db, pools):
    """0 never queues, yet an idle connection or room to open one is served; a connect
    in progress for someone else is no room; a closed pool says PoolClosed."""
    opening, go_on = threading.Event(), threading.Event()

    def slow_setup(conn):
        if not go_on.is_set():
            opening.set()
            go_on.wait(10)

    pool = pools(server_db.url, max_size=1, max_waiting=0, timeout=5, on_connect=slow_setup)
    got = []
    opener = threading.Thread(target=lambda: got.append(pool.checkout()), daemon=True)
    opener.start()
    assert opening.wait(10)
    assert pool.stats()["opening"] == 1
    with pytest.raises(PoolTimeout, match=r"max_waiting=0") as raised:
        pool.checkout()
    assert raised.value.queue_full
    go_on.set()
    opener.join(10)
    pool.checkin(got.pop())
    session = None
    for _ in range(3):  # idle: served at once, never refused
        with pool.connection() as conn:
            session = session or server_db.session_id(conn)
            assert server_db.session_id(conn) == session
    stats = _whole(pool)
    assert (stats["queue_full"], stats["checkouts"], stats["connects"]) == (1, 4, 1), stats
    pool.close()
    with pytest.raises(PoolClosed):
        pool.checkout()
    assert pool.stats()["queue_full"] == 1


def test_a_bad_wait_callback_switch_is_no_database_refusal(monkeypatch, caplog):
    """A bad WSGIPOOL_PSYCOPG2_WAIT_CALLBACK, found at a connect: the error names it, but
    the database did not refuse anything: no connect error counted, no back-off, so the
    next checkout after the setting is fixed connects, and no slot is lost."""
    from psycopg2 import extensions

    from wsgipool import cooperative

    monkeypatch.setattr(cooperative, "green", lambda: "gevent")  # as if patched
    monkeypatch.setattr(cooperative, "_done", {})
    monkeypatch.setenv(cooperative.PSYCOPG2_SWITCH, "maybe")
    with Pool(PG, max_size=1) as pool:
        # ConnectError here; main (61cd598) now lets the ConfigurationError through as is.
        with pytest.raises((ConnectError, ConfigurationError),
                           match="WSGIPOOL_PSYCOPG2_WAIT_CALLBACK must be on"):
            pool.checkout()
        monkeypatch.setenv(cooperative.PSYCOPG2_SWITCH, "off")  # fixed
        caplog.set_level(logging.WARNING, logger="wsgipool.cooperative")
        with pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
        stats = _whole(pool)
        assert (stats["connect_errors"], stats["connects"], stats["size"]) == (0, 1, 1), stats
    assert extensions.get_wait_callback() is None
    assert any("psycopg2 blocks gevent's hub" in r.getMessage() for r in caplog.records)


def _call(middleware, path="/x"):
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    body = middleware({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path,
                       "QUERY_STRING": ""}, start_response)
    try:
        b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return seen["status"]


@pytest.fixture
def slept(monkeypatch):
    """The seconds the middleware asked to pause, instead of pausing (each on time)."""
    asked = []

    def pause(seconds):
        asked.append(seconds)
        return 0.0

    monkeypatch.setattr(wsgipool.pacing, "pause", pause)
    return asked


def test_a_named_pool_refusal_is_paced_by_its_own_wait(tmp_path, slept):
    """The app's checkout of a named database timed out after 0.01 s: held for the rest of
    the pace, not judged by the default pool's timeout (10 s: no pause at all)."""
    main = Pool(f"sqlite:///{tmp_path}/main.db", max_size=1, timeout=10)
    other = Pool(f"sqlite:///{tmp_path}/other.db", max_size=1, timeout=0.01)

    def app(environ, start_response):
        wsgipool.connection(environ, "other")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = PoolMiddleware(app, main, databases={"other": other}, pace_refusals=0.2)
    try:
        with other.connection():
            assert _call(middleware) == "503 Service Unavailable"
        (asked,) = slept
        assert 0.1 <= asked <= 0.2, asked
        assert _call(middleware) == "200 OK" and len(slept) == 1
        assert (_whole(main)["in_use"], _whole(other)["in_use"]) == (0, 0)
    finally:
        main.close()
        other.close()


def test_a_lazy_refusal_in_a_transaction_is_paced_and_gives_back_what_it_took(
        any_server_db, pools, monkeypatch):
    """transaction=True, lazy: the app wrote on one database, then found no connection
    to another: its write is rolled back and its connection back before the pause (a
    paced refusal holds nothing while it waits), the 503 is paced."""
    slept, held = [], []

    def pause(seconds):
        slept.append(seconds)
        held.append((main.stats()["in_use"], other.stats()["in_use"]))
        return 0.0

    monkeypatch.setattr(wsgipool.pacing, "pause", pause)
    table = "review_overload_tx"
    main = pools(any_server_db.url, max_size=1, timeout=5)
    other = pools(any_server_db.url, max_size=1, timeout=0.02, max_waiting=0)
    with main.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE IF NOT EXISTS {table} (n int)")
        cur.execute(f"DELETE FROM {table}")
        conn.commit()

    def app(environ, start_response):
        environ["db.conn"].cursor().execute(f"INSERT INTO {table} VALUES (1)")
        wsgipool.connection(environ, "other")
        start_response("200 OK", [])
        return [b"ok"]

    middleware = PoolMiddleware(app, main, databases={"other": other}, lazy=True,
                                transaction=True, pace_refusals=0.2)
    with other.connection():
        assert _call(middleware) == "503 Service Unavailable"
    (asked,) = slept
    assert 0.16 <= asked <= 0.2, asked  # queue full: the whole pace
    assert held == [(0, 1)]  # during the pause: the request's own is back (1: the test's)
    with main.connection() as conn:
        cur = conn.cursor()
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone()[0] == 0  # rolled back
        cur.execute(f"DROP TABLE {table}")
        conn.commit()
    assert (_whole(main)["in_use"], _whole(other)["in_use"]) == (0, 0)
    assert other.stats()["queue_full"] == 1


def test_a_pause_interrupted_holds_nothing_and_leaves_the_pacer_as_it_was(sqlite):
    """KeyboardInterrupt in the middle of a refusal's real pause: the connection the
    request took first is back, the pacer's figures unchanged, the next refusal paced."""
    def app(environ, start_response):
        wsgipool.connection(environ, "other")
        start_response("200 OK", [])
        return [b"ok"]

    other = Pool(sqlite.url.replace("test.db", "other.db"), max_size=1, max_waiting=0)
    middleware = PoolMiddleware(app, sqlite.url, databases={"other": other}, lazy=True,
                                pace_refusals=2.0)
    pacer = middleware._pacer
    pacer.extra, pacer.late_at = 0.25, time.monotonic()
    try:
        with other.connection():
            previous = _alarm(0.1, _interrupt)
            started = time.monotonic()
            try:
                with pytest.raises(KeyboardInterrupt):
                    _call(middleware)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, previous)
            assert time.monotonic() - started < 1.5  # cut in the pause, not after it
            assert pacer.extra == 0.25
            assert (_whole(middleware.pool)["in_use"], _whole(other)["in_use"]) == (0, 1)
        assert _call(middleware) == "200 OK"
    finally:
        middleware.pool.close()
        other.close()


def test_refusals_counted_under_threads(sqlite, monkeypatch, caplog):
    """8 threads refused at once, many times: the once-a-second lines account for every
    503 (the first line, plus the count the next line gives)."""
    import wsgipool.middleware

    monkeypatch.setattr(wsgipool.middleware._Refusals, "INTERVAL", 3600.0)
    middleware = PoolMiddleware(lambda e, s: [], sqlite.url, max_size=1, max_waiting=0,
                                pace_refusals=0)
    statuses = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def refused():
        for _ in range(300):
            statuses.append(_call(middleware))

    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.middleware"):
            with middleware.pool.connection():
                threads = [threading.Thread(target=refused, daemon=True) for _ in range(8)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(30)
                middleware._refusals._next = 0.0
                statuses.append(_call(middleware, "/last"))
    finally:
        sys.setswitchinterval(switch)
        middleware.pool.close()
    assert statuses == ["503 Service Unavailable"] * 2401
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[1].endswith("(2399 more 503s since the last line)"), lines[1]
    assert middleware.pool.stats()["queue_full"] == 2401


def test_a_bad_pace_from_the_environment_names_the_variable(monkeypatch, sqlite):
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    monkeypatch.setenv("WSGIPOOL_PACE_REFUSALS", "-1")
    with pytest.raises(ConfigurationError) as raised:
        PoolMiddleware(lambda e, s: [])
    assert str(raised.value) == ("WSGIPOOL_PACE_REFUSALS in the environment: pace_refusals "
                                 "must be between 0 and 10 seconds, not -1.0")


# A gunicorn --preload master: psycopg2 connects unpatched, forks; the child is patched
# (as gevent's worker does) and must get the wait callback, once, the parent none.
FORK_SCRIPT = r"""
import json, os, sys
import psycopg2.extensions as ext
from wsgipool import Pool
from wsgipool import cooperative
out = {}
pool = Pool(sys.argv[1], max_size=2)
with pool.connection() as conn:
    conn.cursor().execute("SELECT 1")
out["parent_before"] = ext.get_wait_callback() is not None
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    from gevent import monkey; monkey.patch_all()
    import gevent
    child = {}
    with pool.connection() as conn:
        cur = conn.cursor(); cur.execute("SELECT 1")
    first = ext.get_wait_callback()
    child["callback"] = getattr(first, "wsgipool", False)
    cooperative.cooperate("psycopg2")  # asked again: nothing changes
    cooperative._done.clear()  # even when it looks again
    cooperative.cooperate("psycopg2")
    child["same"] = ext.get_wait_callback() is first
    # Two queries of 0.3 s in two greenlets: together, about 0.3 s, not 0.6.
    import time
    def q():
        with pool.connection() as conn:
            conn.cursor().execute("SELECT pg_sleep(0.3)")
    started = time.monotonic()
    gevent.joinall([gevent.spawn(q), gevent.spawn(q)], timeout=10)
    child["together"] = time.monotonic() - started
    # psycopg (3) never imported: nothing to reload, no error.
    child["psycopg_loaded"] = "psycopg" in sys.modules
    cooperative.cooperate("psycopg")
    child["stats"] = pool.stats()["connect_errors"]
    os.write(write, json.dumps(child).encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(pid, 0)
out["child"] = json.loads(os.read(read, 65536) or b"{}")
out["status"] = status
out["parent_after"] = ext.get_wait_callback() is not None
print(json.dumps(out))
"""


def test_a_child_patched_after_the_fork_gets_the_callback_once():
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT, PG], capture_output=True,
                          text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    child = out["child"]
    assert (out["parent_before"], out["parent_after"], out["status"]) == (False, False, 0), out
    assert (child["callback"], child["same"], child["psycopg_loaded"], child["stats"]) == (
        True, True, False, 0), out
    assert child["together"] < 0.55, out


@pytest.mark.xfail(strict=True, raises=PoolTimeout, reason=(
    "A lazy checkout made first while the body streams raises PoolTimeout out of the "
    "response iterable: the server answers 500 (or cuts the body), unpaced, unlogged by "
    "the middleware (docs/requests.rst says so and how to avoid it). Fix (not small, on "
    "the response path): for lazy/named requests only, iterate the body "
    "through a generator that catches _UNAVAILABLE before the first chunk, gives the "
    "connections back, paces, and calls start_response('503 ...', headers, exc_info); "
    "after the first chunk, let it propagate (the body is cut) but still log it once."))
def test_a_lazy_refusal_while_the_body_streams_gets_a_paced_503(sqlite, slept):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            cursor = environ["db.conn"].cursor()  # first use: the checkout happens here
            cursor.execute("SELECT 1")
            yield b"ok"

        return body()

    middleware = PoolMiddleware(app, sqlite.url, max_size=1, max_waiting=0, lazy=True,
                                pace_refusals=0.2)
    try:
        with middleware.pool.connection():
            status = _call(middleware)
        assert status == "503 Service Unavailable"
        assert len(slept) == 1
    finally:
        assert _whole(middleware.pool)["in_use"] == 0
        middleware.pool.close()


def test_paced_refusals_in_threads_pause_side_by_side(sqlite):
    """gthread: 8 threads refused at once each pause about the pace, side by side (no
    lock serialises them); the lengthening stays within its bound and nothing is held."""
    middleware = PoolMiddleware(lambda e, s: [], sqlite.url, max_size=1, max_waiting=0,
                                pace_refusals=0.2)
    took = []

    def refused():
        started = time.monotonic()
        took.append((_call(middleware), time.monotonic() - started))

    try:
        with middleware.pool.connection():
            threads = [threading.Thread(target=refused, daemon=True) for _ in range(8)]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            wall = time.monotonic() - started
        assert [status for status, _ in took] == ["503 Service Unavailable"] * 8
        assert all(0.15 <= seconds < 1.5 for _, seconds in took), took
        assert wall < 1.5, wall  # serialised, 8 pauses would take 1.3-1.6 s
        assert 0.0 <= middleware._pacer.extra <= wsgipool.pacing.Pacer.MAX_EXTRA
        assert _whole(middleware.pool)["queue_full"] == 8
    finally:
        middleware.pool.close()


GEVENT_PAUSE_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import gevent, json, sys, time
from wsgipool import PoolMiddleware
from wsgipool.pacing import pause
hub = gevent.get_hub()
out = {}
# A gevent.Timeout in the middle of a pause: the timer is closed, nothing left armed.
before = hub.loop.activecnt
try:
    with gevent.Timeout(0.05):
        pause(5)
except gevent.Timeout:
    out["cut"] = True
out["armed_after"] = hub.loop.activecnt - before
# The middleware's: a refused request killed mid-pause gives back what it held.
mw = PoolMiddleware(lambda e, s: [], sys.argv[1], max_size=1, max_waiting=0,
                    pace_refusals=2.0)
env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "", "QUERY_STRING": ""}
with mw.pool.connection():
    g = gevent.spawn(mw, env, lambda *a: None)
    gevent.sleep(0.1)
    started = time.monotonic()
    g.kill(timeout=2)
    out["killed_in"] = time.monotonic() - started
    out["extra"] = mw._pacer.extra
s = mw.pool.stats()
out.update(in_use=s["in_use"], idle=s["idle"], size=s["size"], queue_full=s["queue_full"])
print(json.dumps(out))
"""


def test_a_green_pause_cut_short_leaves_no_timer_and_holds_nothing(sqlite):
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", GEVENT_PAUSE_SCRIPT, sqlite.url],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["cut"], out["armed_after"], out["extra"]) == (True, 0, 0.0), out
    assert out["killed_in"] < 1.0, out
    assert (out["in_use"], out["idle"], out["size"], out["queue_full"]) == (0, 1, 1, 1), out


@pytest.mark.parametrize("value, message", [
    pytest.param("-1", "max_waiting must be 0 or more (0: never queue), or None for no "
                 "bound, not -1", id="negative"),
    pytest.param("x", "must be a whole number, or none for no bound", id="text"),
])
def test_a_bad_max_waiting_from_the_environment_names_the_variable(monkeypatch, sqlite,
                                                                   value, message):
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    monkeypatch.setenv("WSGIPOOL_MAX_WAITING", value)
    with pytest.raises(ConfigurationError) as raised:
        PoolMiddleware(lambda e, s: [])
    assert str(raised.value) == (f"WSGIPOOL_MAX_WAITING={value!r} in the environment: "
                                 f"{message}")


# Under gevent: a waiter cut by an exception thrown into it just after the hand-over
# (a connection, room to open one, or PoolClosed), before it ran again.
GEVENT_HANDOVER_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import gevent, greenlet, json, sys
from wsgipool import Pool

class Cut(BaseException):
    pass

pool = Pool(sys.argv[1], max_size=1, max_waiting=1, timeout=5)
out = {}
for mode in ("conn", "room", "closed"):
    holder = pool.checkout()
    seen = []
    def waiter():
        try:
            entry = pool.checkout()
            seen.append("served")
            pool.checkin(entry)
        except Cut:
            seen.append("cut")
    g = gevent.spawn(waiter)
    gevent.sleep(0.05)
    # Runs before the waiter's wake-up, which the hand-over below schedules.
    gevent.get_hub().loop.run_callback(greenlet.greenlet.throw, g, Cut())
    if mode == "conn":
        pool.checkin(holder)
    elif mode == "room":
        holder.conn.close()
        pool.checkin(holder)
    else:
        pool.close()
    handed = pool.stats()["waiting"] == 0
    gevent.sleep(0.05)
    if mode == "closed":
        pool.checkin(holder)
    s = pool.stats()
    out[mode] = dict(seen=seen, handed=handed, whole=(
        s["checkouts"] == s["returns"] + s["in_use"]
        and s["size"] == s["in_use"] + s["idle"] + s["opening"]),
        in_use=s["in_use"], size=s["size"], waiting=s["waiting"])
    if mode != "closed":
        entry = pool.checkout(timeout=1)
        pool.checkin(entry)
print(json.dumps(out))
"""


def test_a_green_waiter_cut_right_after_the_hand_over_passes_it_on():
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", GEVENT_HANDOVER_SCRIPT, PG],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    for mode, size in (("conn", 1), ("room", 0), ("closed", 0)):
        assert out[mode] == dict(seen=["cut"], handed=True, whole=True, in_use=0,
                                 size=size, waiting=0), out


# A gevent.Timeout while psycopg2 connects through the wait callback (the server never
# answers): the room comes back, nothing counts as a connect error, no socket is left once
# the hub has turned (gevent keeps the last Timeout, and with it the half-open connection,
# until then).
GREEN_CONNECT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import gevent, gc, json, os, sys
from wsgipool import Pool
pool = Pool(sys.argv[1], max_size=1, timeout=5)
cut = 0
for _ in range(3):
    try:
        with gevent.Timeout(0.2):
            pool.checkout()
    except gevent.Timeout:
        cut += 1
gevent.sleep(0.05)
gc.collect()
fds = []
for fd in os.listdir("/proc/self/fd"):
    try:
        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:  # the listing's own descriptor, closed by now
        pass
s = pool.stats()
print(json.dumps(dict(cut=cut, sockets=sum(fd.startswith("socket:") for fd in fds),
                      size=s["size"], opening=s["opening"], errors=s["connect_errors"],
                      checkouts=s["checkouts"])), flush=True)
sys.stdin.readline()
"""


def test_a_green_connect_cut_by_gevent_timeout_leaves_nothing_behind():
    from stall_proxy import StallProxy

    env = {**os.environ, "PYTHONPATH": ROOT}
    with StallProxy(("127.0.0.1", 5432), blackhole=True) as proxy:
        child = subprocess.Popen([sys.executable, "-c", GREEN_CONNECT_SCRIPT,
                                  proxy.url_for(PG)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        try:
            out = json.loads(child.stdout.readline() or "{}")
            deadline = time.monotonic() + 5
            while proxy.open_connections() and time.monotonic() < deadline:
                time.sleep(0.02)
            still_open = proxy.open_connections()
            _, errors = child.communicate("\n", timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
        assert child.returncode == 0, errors
        assert proxy.accepted == 3
    assert out == dict(cut=3, sockets=0, size=0, opening=0, errors=0, checkouts=0), out
    assert still_open == 0


def _interrupt_after(code, source_line, exc):
    """Trace ``code``: raise ``exc`` inside it at the first line after the one holding
    ``source_line`` ran, as a signal's KeyboardInterrupt arriving there would."""
    import inspect

    lines, first = inspect.getsourcelines(code)
    (target,) = [first + i for i, line in enumerate(lines) if source_line in line]
    armed = []

    def local(frame, event, arg):
        if event == "line":
            if armed:
                armed.clear()
                raise exc  # CPython stops tracing the thread: the caller restores its own
            if frame.f_lineno == target:
                armed.append(True)
        return local

    def tracer(frame, event, arg):
        return local if frame.f_code is code else None

    return tracer


def test_an_interrupt_as_a_waiter_times_out_stays_an_interrupt(sqlite, pools):
    """KeyboardInterrupt just after a timed-out waiter left the queue (before its
    PoolTimeout is raised) reaches the caller as itself, and the pool stays whole."""
    pool = pools(sqlite.url, max_size=1, max_waiting=1, timeout=5)
    holder = pool.checkout()
    previous = sys.gettrace()  # (a coverage run's)
    sys.settrace(_interrupt_after(Pool._wait.__code__, "self._waiters.remove(waiter)",
                                  KeyboardInterrupt()))
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.checkout(timeout=0.01)
    finally:
        sys.settrace(previous)
    pool.checkin(holder)
    stats = _whole(pool)
    assert (stats["waiting"], stats["in_use"], stats["idle"]) == (0, 0, 1), stats


# Under gevent the first connection a process opens starts the housekeeping thread, and
# Thread.start() switches to the hub: a gevent.Timeout or kill due then lands inside the
# checkout after the new connection was counted as checked out.
GREEN_FIRST_CONNECT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import gevent, greenlet, json, sys
from wsgipool import Pool

class Cut(BaseException):
    pass

pool = Pool(sys.argv[1], max_size=1, timeout=0.5)
where = []
def victim():
    # Due at the victim's first switch to the hub.
    gevent.get_hub().loop.run_callback(greenlet.getcurrent().throw, Cut())
    try:
        pool.checkin(pool.checkout())
        where.append("no switch")
    except Cut as exc:
        tb, names = exc.__traceback__, []
        while tb:
            names.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        where.append(names)
gevent.spawn(victim).join(5)
s = pool.stats()
try:
    pool.checkin(pool.checkout())
    usable = True
except Exception as exc:
    usable = str(exc)
print(json.dumps(dict(where=where, usable=usable, in_use=s["in_use"], idle=s["idle"],
                      size=s["size"], checkouts=s["checkouts"], returns=s["returns"])))
"""


def test_a_green_checkout_cut_as_housekeeping_starts_gives_its_connection_back(sqlite):
    env = {**os.environ, "PYTHONPATH": ROOT}
    done = subprocess.run([sys.executable, "-c", GREEN_FIRST_CONNECT_SCRIPT, sqlite.url],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert "watch" in out["where"][0] and "_open" in out["where"][0], out  # cut there
    assert (out["usable"], out["in_use"], out["idle"], out["size"]) == (True, 0, 1, 1), out
    assert (out["checkouts"], out["returns"]) == (1, 1), out


@pytest.mark.xfail(strict=True, reason=(
    "An interrupt arriving between the line that queues a waiter (_reserve_or_queue) and "
    "the try in _wait that would take it out (a signal's KeyboardInterrupt or SystemExit, "
    "at any bytecode) leaves a ghost in the queue: max_waiting counts it, and the next "
    "connection handed to it is lost for good. Python cannot make every bytecode safe, "
    "and gevent delivers nothing there (no switch), so this is the main thread under "
    "signals only; the fix belongs to the hot-path rewrite: queue the waiter and enter "
    "the try that removes it with no line between (e.g. append inside _wait's try, or a "
    "try/except BaseException in checkout around the queued branch calling _leave_queue)."))
def test_an_interrupt_right_after_queueing_leaves_no_ghost_waiter(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, max_waiting=1, timeout=5)
    holder = pool.checkout()
    previous = sys.gettrace()
    sys.settrace(_interrupt_after(Pool._reserve_or_queue.__code__,
                                  "self._waiters.append(waiter)", KeyboardInterrupt()))
    try:
        with pytest.raises(KeyboardInterrupt):
            pool.checkout()
    finally:
        sys.settrace(previous)
    pool.checkin(holder)
    stats = _whole(pool)
    assert (stats["waiting"], stats["in_use"], stats["idle"]) == (0, 0, 1), stats
