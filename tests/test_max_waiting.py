"""``max_waiting``: a checkout that finds the queue full fails at once with ``PoolTimeout``
(a 503 with ``Retry-After`` from the middleware), counted as ``queue_full``; those already
queued are still served, oldest first."""

import http.client
import json
import os
import threading
import time

import pytest

import wsgipool
import wsgipool.gunicorn
from servers import ROOT, Gunicorn
from wsgipool import ConfigurationError, Pool, PoolMiddleware, PoolTimeout
from wsgipool import settings as wsgipool_settings
from wsgipool.exporters import as_prometheus
from wsgipool.settings import options_from_text

APPS = os.path.join(ROOT, "tests", "gunicorn_apps")


def _until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _start(target):
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _join(threads):
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)


def test_a_full_queue_refuses_at_once_and_the_queue_is_served_oldest_first(db, pools):
    pool = pools(db.url, max_size=2, max_waiting=3, timeout=10)
    holders = [pool.checkout(), pool.checkout()]
    first_session = db.session_id(holders[0].conn)
    served, waiters = [], []
    for turn in range(3):
        def waiter(turn=turn):
            with pool.connection() as conn:
                served.append((turn, db.session_id(conn)))

        waiters.append(_start(waiter))
        _until(lambda: pool.stats()["waiting"] == turn + 1, f"waiter {turn} to queue")
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match=r"3 checkouts already waiting \(max_waiting=3\)"):
        pool.checkout()  # timeout=10: without the bound it would wait 10 s
    refused_after = time.monotonic() - started
    stats = pool.stats()
    assert (stats["queue_full"], stats["timeouts"], stats["waiting"]) == (1, 0, 3)
    assert refused_after < 5, refused_after  # at once (generous: a shared machine)
    pool.checkin(holders[0])  # one connection passes down the queue, waiter to waiter
    _join(waiters)
    assert served == [(0, first_session), (1, first_session), (2, first_session)]
    pool.checkin(holders[1])
    stats = pool.stats()
    assert (stats["checkouts"], stats["returns"], stats["waits"]) == (5, 5, 3)
    assert (stats["queue_full"], stats["timeouts"], stats["connects"]) == (1, 0, 2)


def test_places_in_the_queue_come_back(sqlite, pools):
    """A waiter that times out, or is served, frees its place; 0 never queues."""
    pool = pools(sqlite.url, max_size=1, max_waiting=1, timeout=10)
    holder = pool.checkout()
    with pytest.raises(PoolTimeout, match="after"):  # a timeout: it queued
        pool.checkout(timeout=0.05)
    got = []
    waiter = _start(lambda: got.append(pool.checkout()))
    _until(lambda: pool.stats()["waiting"] == 1, "the waiter to queue")
    with pytest.raises(PoolTimeout, match="max_waiting=1"):
        pool.checkout()
    pool.checkin(holder)
    _join([waiter])
    with pytest.raises(PoolTimeout, match="after"):  # its place is free again: it queues
        pool.checkout(timeout=0.05)
    pool.checkin(got[0])
    stats = pool.stats()
    assert (stats["timeouts"], stats["queue_full"], stats["waiting"]) == (2, 1, 0)

    never = pools(sqlite.url, max_size=1, max_waiting=0, timeout=10)
    with never.connection():
        with pytest.raises(PoolTimeout, match="max_waiting=0"):
            never.checkout()
    with never.connection():  # free again: served
        pass
    assert never.stats()["queue_full"] == 1 and never.stats()["waits"] == 0


def test_queue_full_is_exported(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, max_waiting=0)
    with pool.connection():
        for _ in range(2):
            with pytest.raises(PoolTimeout):
                pool.checkout()
    text = as_prometheus([pool])
    assert f'wsgipool_queue_full_total{{pool="{pool.name}"}} 2' in text
    assert f'wsgipool_timeouts_total{{pool="{pool.name}"}} 0' in text


@pytest.mark.parametrize("value, error, message", [
    pytest.param(-1, ConfigurationError, "max_waiting must be 0 or more (0: never queue), "
                 "or None for no bound, not -1", id="negative"),
    pytest.param(2.5, TypeError, "max_waiting must be a whole number of checkouts (0 or "
                 "more) or None for no bound, not float", id="float"),
    pytest.param(True, TypeError, "not bool", id="bool"),
    pytest.param("8", TypeError, "not str", id="str"),
])
def test_bad_max_waiting_is_named(sqlite, value, error, message):
    for make in (lambda: Pool(sqlite.url, max_waiting=value),
                 lambda: PoolMiddleware(lambda e, s: [], sqlite.url, max_waiting=value),
                 lambda: wsgipool.configure(sqlite.url, max_waiting=value)):
        with pytest.raises(error) as caught:
            make()
        assert message in str(caught.value)


@pytest.fixture
def fresh_settings(monkeypatch):
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    for name in list(os.environ):
        if name.startswith("WSGIPOOL_") and not name.startswith(("WSGIPOOL_TEST_",
                                                                 "WSGIPOOL_REQUIRE")):
            monkeypatch.delenv(name)


def test_max_waiting_everywhere_options_go(sqlite, fresh_settings, monkeypatch):
    """configure(), gunicorn's configure(), WSGIPOOL_MAX_WAITING, Apache's SetEnv, an ini
    file; a bad text value names its variable."""
    made = []

    def middleware(*args, **kwargs):
        made.append(PoolMiddleware(lambda e, s: [], *args, **kwargs))
        return made[-1].pool

    try:
        assert middleware(sqlite.url, max_waiting=5).max_waiting == 5
        assert middleware(sqlite.url).max_waiting is None  # the default: no bound
        wsgipool.configure(sqlite.url, max_waiting=6)
        assert middleware().max_waiting == 6
        wsgipool.gunicorn.configure(sqlite.url, max_waiting=7)
        assert middleware().max_waiting == 7
        monkeypatch.setattr(wsgipool_settings, "_configured", None)
        monkeypatch.setenv("DATABASE_URL", sqlite.url)
        monkeypatch.setenv("WSGIPOOL_MAX_WAITING", "8")
        assert middleware().max_waiting == 8
        monkeypatch.setenv("WSGIPOOL_MAX_WAITING", "none")
        assert middleware().max_waiting is None
        monkeypatch.setenv("WSGIPOOL_MAX_WAITING", "lots")
        with pytest.raises(ConfigurationError, match="WSGIPOOL_MAX_WAITING='lots' in the "
                           "environment: must be a whole number, or none for no bound"):
            middleware()
        monkeypatch.delenv("WSGIPOOL_MAX_WAITING")
        monkeypatch.delenv("DATABASE_URL")
        monkeypatch.setattr(wsgipool_settings, "in_apache", lambda: True)
        apache = PoolMiddleware(lambda e, s: s("200 OK", []) or [], None)
        made.append(apache)
        body = apache({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
                       "DATABASE_URL": sqlite.url, "WSGIPOOL_MAX_WAITING": "9"},
                      lambda status, headers, exc_info=None: None)
        body.close()
        assert apache.pool.max_waiting == 9
        assert options_from_text({"max_waiting": "3"}, "[filter:pool]") == {"max_waiting": 3}
    finally:
        for each in made:
            if each.pool is not None:
                each.pool.close()


def _request(port, path, timeout=15):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def queue_server(tmp_path_factory):
    """One gthread worker (8 threads), a pool of 1 with max_waiting=2, from its config."""
    from conftest import POSTGRESQL_URL, _require

    _require("postgresql")
    log_path = tmp_path_factory.mktemp("queue") / "gunicorn.log"
    server = Gunicorn("queue_app:app", "-c", "queue.conf.py", cwd=APPS, log_path=log_path,
                      env={"DATABASE_URL": POSTGRESQL_URL, "POOL_MAX_SIZE": "1",
                           "POOL_MAX_WAITING": "2"})
    with server:
        yield server


def test_a_server_answers_503_with_retry_after_when_the_queue_is_full(queue_server):
    port = queue_server.port

    def pool_stats():
        status, _, body = _request(port, "/_pool")
        assert status == 200, body
        (stats,) = json.loads(body)["pools"].values()
        return stats

    answers = {}

    def client(name, hold_ms):
        answers[name] = _request(port, f"/?hold_ms={hold_ms}")

    holder = _start(lambda: client("holder", 1500))
    _until(lambda: pool_stats()["in_use"] == 1, "the holder to take the connection")
    first = _start(lambda: client("first", 0))
    _until(lambda: pool_stats()["waiting"] == 1, "the first waiter to queue")
    second = _start(lambda: client("second", 0))
    _until(lambda: pool_stats()["waiting"] == 2, "the second waiter to queue")
    status, headers, body = _request(port, "/")
    during = pool_stats()
    assert (status, headers["Retry-After"]) == (503, "2"), body
    assert b"503 Service Unavailable" in body
    # Refused while the holder still held its connection and both waiters still waited.
    assert (during["in_use"], during["waiting"], during["queue_full"]) == (1, 2, 1)
    _join([holder, first, second])
    turns = {name: body.split() for name, (status, _, body) in answers.items()}
    assert {name: answer[0] for name, answer in answers.items()} == \
        {"holder": 200, "first": 200, "second": 200}
    assert [turns[name][0] for name in ("holder", "first", "second")] == [b"1", b"2", b"3"]
    assert len({turns[name][1] for name in turns}) == 1  # one session, handed down the queue
    after = pool_stats()
    assert (after["queue_full"], after["timeouts"], after["connects"]) == (1, 0, 1)


# -- pacing refusals, and their log lines ----------------------------------------------------

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
    return seen["status"], seen["headers"]


@pytest.fixture
def slept(monkeypatch):
    """The seconds the middleware asked to pause, instead of pausing (each on time)."""
    import wsgipool.pacing

    asked = []

    def pause(seconds):
        asked.append(seconds)
        return 0.0

    monkeypatch.setattr(wsgipool.pacing, "pause", pause)
    return asked


def _handler(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.mark.parametrize("timeout, max_waiting, expected", [
    pytest.param(10, 0, (0.16, 0.2), id="queue-full-paced"),
    pytest.param(0.05, None, (0.12, 0.15), id="short-timeout-paced-for-the-rest"),
    pytest.param(0.3, None, None, id="timeout-longer-than-the-pace"),
])
def test_a_refusal_is_held_until_the_pace_then_answered_503(sqlite, slept, timeout,
                                                             max_waiting, expected):
    options = {} if max_waiting is None else {"max_waiting": max_waiting}
    middleware = PoolMiddleware(_handler, sqlite.url, max_size=1, timeout=timeout,
                                pace_refusals=0.2, **options)
    try:
        with middleware.pool.connection():
            status, headers = _call(middleware)
        assert (status, headers["Retry-After"]) == ("503 Service Unavailable", "1")
        if expected is None:
            assert slept == []
        else:
            (asked,) = slept
            assert expected[0] <= asked <= expected[1], asked
        assert _call(middleware)[0] == "200 OK" and len(slept) == (expected is not None)
    finally:
        middleware.pool.close()


def test_no_pace_when_turned_off_or_for_a_database_that_refuses(sqlite, slept):
    off = PoolMiddleware(_handler, sqlite.url, max_size=1, max_waiting=0, pace_refusals=0)
    down = PoolMiddleware(_handler, "postgresql://nobody@127.0.0.1:1/none", timeout=1)
    try:
        with off.pool.connection():
            assert _call(off)[0] == "503 Service Unavailable"
        assert _call(down)[0] == "503 Service Unavailable"  # ConnectError: not paced
        assert slept == []
        assert (off.pace_refusals, down.pace_refusals) == (0.0, 0.08)  # 0.08: the default
    finally:
        off.pool.close()
        down.pool.close()


def test_refusals_are_logged_once_a_second_with_a_count(sqlite, slept, caplog, monkeypatch):
    """Before: one warning per refusal, thousands a second under overload."""
    import logging

    import wsgipool.middleware

    monkeypatch.setattr(wsgipool.middleware._Refusals, "INTERVAL", 3600.0)
    middleware = PoolMiddleware(_handler, sqlite.url, max_size=1, max_waiting=0)
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.middleware"):
            with middleware.pool.connection():
                for _ in range(5):
                    assert _call(middleware)[0] == "503 Service Unavailable"
                middleware._refusals._next = 0.0  # as if the interval had passed
                assert _call(middleware, "/y")[0] == "503 Service Unavailable"
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2, lines
        assert lines[0].startswith("answered 503 to GET /x: no connection free")
        assert lines[1].startswith("answered 503 to GET /y") and lines[1].endswith(
            "(4 more 503s since the last line)")
        assert middleware.pool.stats()["queue_full"] == 6
    finally:
        middleware.pool.close()


@pytest.mark.parametrize("value, error, message", [
    pytest.param(-0.1, ConfigurationError, "pace_refusals must be between 0 and 10 seconds, "
                 "not -0.1", id="negative"),
    pytest.param("fast", TypeError, "pace_refusals must be a number of seconds (0: answer "
                 "at once), not str", id="str"),
])
def test_bad_pace_is_named(sqlite, value, error, message):
    with pytest.raises(error) as caught:
        PoolMiddleware(_handler, sqlite.url, pace_refusals=value)
    assert message in str(caught.value)


def test_pace_everywhere_options_go(sqlite, fresh_settings, monkeypatch):
    wsgipool.configure(sqlite.url, pace_refusals=0.02)
    first = PoolMiddleware(_handler)
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    monkeypatch.setenv("WSGIPOOL_PACE_REFUSALS", "0")
    second = PoolMiddleware(_handler)
    try:
        assert (first.pace_refusals, second.pace_refusals) == (0.02, 0.0)
    finally:
        first.pool.close()
        second.pool.close()


def test_pauses_lengthen_while_the_process_is_behind_and_recover(monkeypatch):
    """A pause that wakes up late (the process is behind) lengthens the next ones, up to
    MAX_EXTRA; pauses on time shorten them again to the plain pace."""
    import wsgipool.pacing
    from wsgipool.pacing import Pacer

    asked, lateness = [], [0.2]
    monkeypatch.setattr(wsgipool.pacing, "pause",
                        lambda seconds: asked.append(seconds) or lateness[0])
    pacer = Pacer()
    for _ in range(10):
        pacer.hold(0.08)
    assert 0.064 <= asked[0] <= 0.08  # the plain pace, less up to a fifth
    assert asked[-1] > asked[0] + 0.05 and pacer.extra > 0.05
    for _ in range(1000):
        pacer.hold(0.08)
    assert pacer.extra == Pacer.MAX_EXTRA and asked[-1] <= 0.08 + Pacer.MAX_EXTRA
    lateness[0] = 0.0
    for _ in range(1000):
        pacer.hold(0.08)
    assert 0 < pacer.extra < Pacer.MAX_EXTRA  # shorter, one on-time pause at a time
    for _ in range(round(Pacer.MAX_EXTRA / (Pacer.GAIN * Pacer.ON_TIME))):
        pacer.hold(0.08)
    assert pacer.extra == 0.0 and asked[-1] <= 0.08
    lateness[0] = 0.2
    for _ in range(10):
        pacer.hold(0.08)
    assert pacer.extra > 0.05
    pacer.late_at -= Pacer.OVER_AFTER + 1  # no late pause for a while: the overload is over
    lateness[0] = 0.0
    pacer.hold(0.08)
    assert pacer.extra == 0.0 and asked[-1] <= 0.08


def test_the_pause_lets_other_greenlets_run_under_gevent():
    """In a gevent-patched process the pause is cooperative: the hub serves others."""
    import subprocess
    import sys

    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent, time\n"
        "from wsgipool.pacing import pause, _gevent_hub\n"
        "ran = []\n"
        "other = gevent.spawn(lambda: ran.append(time.monotonic()))\n"
        "started = time.monotonic()\n"
        "late = pause(0.05)\n"
        "print(_gevent_hub() is not None, len(ran),"  # the other ran while we paused
        " time.monotonic() - started >= 0.05, 0 <= late < 10)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.stdout.split() == ["True", "1", "True", "True"], done.stderr


def test_the_docs_middleware_snippet(sqlite):
    from readme import snippet

    code = snippet("overload-middleware").replace("postgresql://app@db/app", sqlite.url)
    namespace = {}
    exec(code, namespace)
    app = namespace["app"]
    try:
        assert (app.pool.max_size, app.pool.max_waiting, app.pace_refusals) == (4, 16, 0.08)
        assert _call(app)[0] == "200 OK"
    finally:
        app.pool.close()
