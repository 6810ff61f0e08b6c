"""PoolMiddleware on the real databases, under wsgiref's PEP 3333 validator.

Two cases run without the validator because it would complain about the very thing
under test: an app returning ``None``, and a response the server never closes.
"""

import gc
import json
import logging
import threading
import time
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import ConfigurationError, Pool, PoolMiddleware
from wsgipool import settings as wsgipool_settings


def environ_for(path="/", method="GET", **extra):
    """A complete WSGI environ, as a server would build it."""
    environ = {"PATH_INFO": path, "SCRIPT_NAME": "", "REQUEST_METHOD": method,
               "QUERY_STRING": ""}
    environ.update(extra)
    setup_testing_defaults(environ)
    return environ


class Response:
    """Serve one request the way a server does: call, iterate, then close (unless told
    not to), closing a response whose iteration failed too."""

    def __init__(self, app, environ=None, close=True):
        self.status = self.headers = None
        self.environ = environ or environ_for()
        self.result = app(self.environ, self.start_response)
        try:
            self.body = b"".join(self.result)
        except BaseException:
            if hasattr(self.result, "close"):
                self.result.close()
            raise
        if close and hasattr(self.result, "close"):
            self.result.close()

    def start_response(self, status, headers, exc_info=None):
        self.status, self.headers = status, dict(headers)
        return lambda data: None


def text_app(handler):
    """A WSGI app answering 200 with whatever ``handler(environ)`` returns, as text."""
    def app(environ, start_response):
        body = str(handler(environ)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def query_one(conn, sql):
    cursor = conn.cursor()
    cursor.execute(sql)
    value = cursor.fetchone()[0]
    cursor.close()
    return value


def session_of(db, key="db.conn"):
    """A handler answering its connection's server session id, leaving it idle."""
    def handler(environ):
        conn = environ[key]
        sid = db.session_id(conn)
        conn.rollback()
        return sid
    return handler


def eventually_gone(db, sid, limit=5.0):
    """Whether the server ended session ``sid`` within ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while db.live_sessions({sid}):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# -- the connection in the environ -------------------------------------------------------------

def test_each_request_gets_a_working_connection_and_the_pool(db):
    """environ["db.conn"] answers queries, environ["wsgipool.pool"] is the middleware's
    pool, and two requests in a row reuse the same server session."""
    seen = []

    def handler(environ):
        conn = environ["db.conn"]
        seen.append((environ["wsgipool.pool"], query_one(conn, "SELECT 41 + 1")))
        return session_of(db)(environ)

    middleware = PoolMiddleware(text_app(handler), db.url, max_size=2)
    try:
        assert isinstance(middleware.pool, Pool)
        first = Response(validator(middleware))
        second = Response(validator(middleware))
        assert first.status == second.status == "200 OK"
        assert first.body == second.body  # the same server session, reused
        assert seen == [(middleware.pool, 42)] * 2
        stats = middleware.pool.stats()
        assert (stats["connects"], stats["checkouts"], stats["returns"], stats["in_use"]) \
            == (1, 2, 2, 0)
    finally:
        middleware.pool.close()


def test_custom_environ_key(db):
    """environ_key= names where the connection goes; "db.conn" is then left alone."""
    seen = {}

    def handler(environ):
        seen["default_key"] = "db.conn" in environ
        return query_one(environ["db.main"], "SELECT 7")

    middleware = PoolMiddleware(text_app(handler), db.url, environ_key="db.main")
    try:
        response = Response(validator(middleware))
        assert (response.status, response.body) == ("200 OK", b"7")
        assert seen == {"default_key": False}
        assert response.environ["wsgipool.pool"] is middleware.pool
    finally:
        middleware.pool.close()


# -- the connection's life along the response --------------------------------------------------

def test_connection_stays_out_while_the_body_streams_and_returns_once(db):
    """Checked out while a generator body streams (it queries on every chunk), returned
    exactly once at close(); a second close() does nothing."""
    in_use_inside = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        conn = environ["db.conn"]
        for i in range(3):
            in_use_inside.append(environ["wsgipool.pool"].stats()["in_use"])
            yield b"%d," % query_one(conn, "SELECT %d" % i)
        conn.rollback()

    middleware = PoolMiddleware(app, db.url, max_size=2)
    pool = middleware.pool
    try:
        result = validator(middleware)(environ_for(), lambda s, h, e=None: None)
        chunks = iter(result)
        assert next(chunks) == b"0,"
        assert pool.stats()["in_use"] == 1  # between chunks, as a server sees it
        assert b"".join(chunks) == b"1,2,"
        assert in_use_inside == [1, 1, 1]
        assert pool.stats()["in_use"] == 1  # exhausted, not yet closed
        result.close()
        stats = pool.stats()
        assert (stats["in_use"], stats["returns"], stats["idle"]) == (0, 1, 1)
        result.close()
        stats = pool.stats()
        assert (stats["in_use"], stats["returns"], stats["idle"]) == (0, 1, 1)
        assert stats["checkouts"] == 1 and stats["discards"] == 0
    finally:
        pool.close()


def test_generator_finally_can_still_use_the_connection(db):
    """The app's close() (a generator's finally) runs before the connection goes back."""
    used_in_finally = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        pool = environ["wsgipool.pool"]
        try:
            yield b"partial"
            yield b"never"
        finally:
            conn = environ["db.conn"]
            used_in_finally.append((query_one(conn, "SELECT 2"), pool.stats()["in_use"]))
            conn.rollback()

    middleware = PoolMiddleware(app, db.url, max_size=1)
    try:
        result = validator(middleware)(environ_for(), lambda s, h, e=None: None)
        assert next(iter(result)) == b"partial"
        result.close()  # the client went away mid-stream
        assert used_in_finally == [(2, 1)]  # still checked out while the finally ran
        stats = middleware.pool.stats()
        assert (stats["in_use"], stats["returns"], stats["discards"]) == (0, 1, 0)
    finally:
        middleware.pool.close()


class Boom(Exception):
    pass


def raise_before_start(environ, start_response):
    raise Boom("before start_response")


def raise_after_start(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    raise Boom("after start_response")


def raise_in_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"a"
    raise Boom("in body")


class RaisingClose:
    """A response whose own close() raises."""

    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        return iter([b"ok"])

    def close(self):
        raise Boom("in close")


def assert_consistent(db, pool):
    """Nothing is checked out, the figures add up, and two checkouts at once get two
    different sessions (a connection returned twice would be handed out twice)."""
    stats = pool.stats()
    assert stats["in_use"] == 0
    assert stats["checkouts"] == stats["returns"] + stats["in_use"]
    assert stats["idle"] <= stats["size"] <= pool.max_size
    first, second = pool.checkout(), pool.checkout()
    try:
        assert first.conn is not second.conn
        assert db.session_id(first.conn) != db.session_id(second.conn)
        first.conn.rollback()
        second.conn.rollback()
    finally:
        pool.checkin(first)
        pool.checkin(second)
    assert pool.stats()["in_use"] == 0


@pytest.mark.parametrize("app", [
    pytest.param(raise_before_start, id="before-start_response"),
    pytest.param(raise_after_start, id="after-start_response"),
    pytest.param(raise_in_body, id="in-body"),
    pytest.param(RaisingClose, id="in-close"),
])
def test_failing_apps_propagate_and_leave_the_pool_consistent(db, app):
    """The app's exception reaches the server; the connection is back as soon as the
    request is over, and is handed out once at a time afterwards."""
    middleware = PoolMiddleware(app, db.url, max_size=2, timeout=0.5)
    pool = middleware.pool
    try:
        for _ in range(3):
            with pytest.raises(Boom):
                Response(validator(middleware))
            assert pool.stats()["in_use"] == 0  # at once
        stats = pool.stats()
        assert stats["checkouts"] == stats["returns"] == 3
        assert stats["connects"] == 1 and stats["timeouts"] == 0
        assert_consistent(db, pool)
    finally:
        pool.close()


def test_app_returning_none_gives_the_connection_back(db):
    """An app returning None (not a response) fails when served, and its connection
    goes back at close(), once. (The validator would refuse before any close.)"""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None

    middleware = PoolMiddleware(app, db.url, max_size=2)
    pool = middleware.pool
    try:
        with pytest.raises(TypeError):
            Response(middleware)
        stats = pool.stats()
        assert (stats["in_use"], stats["returns"], stats["discards"]) == (0, 1, 0)
        assert_consistent(db, pool)
    finally:
        pool.close()


def test_unclosed_response_is_discarded_with_a_warning(db, caplog):
    """A response the server drops without close(): its connection (perhaps mid-query)
    is discarded, not reused, and a warning names the request. (No validator: it
    complains about unclosed responses itself.)"""
    middleware = PoolMiddleware(text_app(session_of(db)), db.url, max_size=1)
    pool = middleware.pool
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
            leaky = Response(middleware, environ_for("/leaky/path"), close=False)
            leaked_sid = int(leaky.body)
            assert pool.stats()["in_use"] == 1
            del leaky  # the server forgets the response without calling close()
            gc.collect()
        stats = pool.stats()
        assert stats["in_use"] == 0
        assert stats["discard_reasons"]["leaked"] == 1
        assert stats["returns"] == stats["checkouts"] == 1
        warnings = [r for r in caplog.records
                    if r.name == "wsgipool.pool" and r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "GET /leaky/path" in warnings[0].getMessage()
        assert "leaked" in warnings[0].getMessage()
        assert eventually_gone(db, leaked_sid)  # closed, server side too
        fresh = Response(validator(middleware))
        assert fresh.status == "200 OK"  # its room was given back
        assert int(fresh.body) != leaked_sid or db.kind == "sqlite"
        assert pool.stats()["connects"] == 2
    finally:
        pool.close()


def test_unclosed_generator_response_finishes_before_its_connection_goes(sqlite, monkeypatch,
                                                                        caplog):
    """A dropped streaming response: the generator's finally still runs with its
    connection before the connection is discarded, as it does on close()."""
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    used_in_finally = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"partial"
            yield b"never"
        finally:
            used_in_finally.append(query_one(environ["db.conn"], "SELECT 3"))

    middleware = PoolMiddleware(app, sqlite.url, max_size=1)
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
            result = middleware(environ_for("/stream"), lambda s, h, e=None: None)
            assert next(iter(result)) == b"partial"
            del result
            gc.collect()
        assert middleware.pool.stats()["discard_reasons"]["leaked"] == 1
        assert [str(u.exc_value) for u in unraisable] == []
        assert used_in_finally == [3]
    finally:
        middleware.pool.close()


# -- no connection to be had -------------------------------------------------------------------

def test_exhausted_pool_answers_503_with_retry_after(db):
    """All connections busy for ``timeout``: 503, Retry-After, a text body; the request
    holding the connection is unaffected and the next one is served."""
    middleware = PoolMiddleware(text_app(session_of(db)), db.url, max_size=1, timeout=0.2,
                                retry_after=7)
    pool = middleware.pool
    try:
        holding = Response(validator(middleware), close=False)  # still streaming
        assert holding.status == "200 OK"
        refused = Response(validator(middleware))
        assert refused.status == "503 Service Unavailable"
        assert refused.headers["Retry-After"] == "7"
        assert refused.headers["Content-Type"].startswith("text/plain")
        assert int(refused.headers["Content-Length"]) == len(refused.body)
        assert b"no database connection" in refused.body
        assert pool.stats()["timeouts"] == 1
        holding.result.close()
        served = Response(validator(middleware))
        assert served.status == "200 OK" and served.body == holding.body
        stats = pool.stats()
        assert (stats["connects"], stats["in_use"], stats["checkouts"]) == (1, 0, 2)
    finally:
        pool.close()


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://someone:s3cr3t@127.0.0.1:1/db", id="postgresql"),
    pytest.param("mysql://someone:s3cr3t@127.0.0.1:1/db", id="mysql"),
])
def test_unreachable_database_answers_503_and_never_shows_the_password(url, caplog):
    """Connect failure: 503 with Retry-After, the cause logged at ERROR on wsgipool.pool,
    and the password nowhere: body, headers, logs, repr()."""
    with caplog.at_level(logging.DEBUG, logger="wsgipool"):
        middleware = PoolMiddleware(text_app(lambda environ: "unreachable"), url, timeout=1)
        response = Response(validator(middleware))
    try:
        assert response.status == "503 Service Unavailable"
        assert response.headers["Retry-After"] == "1"
        assert b"no database connection" in response.body
        errors = [r for r in caplog.records
                  if r.name == "wsgipool.pool" and r.levelno == logging.ERROR]
        assert len(errors) == 1
        message = errors[0].getMessage()
        assert "cannot connect" in message and "someone:***@127.0.0.1:1" in message
        assert middleware.pool.stats()["connect_errors"] == 1
        shown = [response.body.decode(), repr(response.headers), repr(middleware),
                 repr(middleware.pool), middleware.pool.name]
        shown += [r.getMessage() for r in caplog.records]
        shown += [r.exc_text or "" for r in caplog.records]
        assert [text for text in shown if "s3cr3t" in text] == []
    finally:
        middleware.pool.close()


def test_lost_database_under_the_app_is_a_503(server_db):
    """A session killed before the request: 503 (retryable) instead of a 500, the dead
    connection discarded, and the next request served on a new one."""
    def app(environ, start_response):
        query_one(environ["db.conn"], "SELECT 1")  # fails on a killed session
        environ["db.conn"].rollback()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = PoolMiddleware(app, server_db.url, max_size=1)
    try:
        with middleware.pool.connection() as conn:
            victim = server_db.session_id(conn)
            conn.rollback()
        server_db.kill(victim)
        assert eventually_gone(server_db, victim)
        assert Response(validator(middleware)).status == "503 Service Unavailable"
        assert middleware.pool.stats()["discard_reasons"]["broken"] == 1
        assert Response(validator(middleware)).status == "200 OK"
        assert middleware.pool.stats()["in_use"] == 0
    finally:
        middleware.pool.close()


def test_connection_closed_by_the_handler_is_discarded(db):
    """A handler that closes its connection: discarded on return, never handed out."""
    def app(environ, start_response):
        environ["db.conn"].close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"closed it"]

    middleware = PoolMiddleware(app, db.url, max_size=1, timeout=0.5)
    try:
        for _ in range(2):
            assert Response(validator(middleware)).status == "200 OK"
        stats = middleware.pool.stats()
        assert stats["in_use"] == 0 and stats["discard_reasons"]["closed"] == 2
        assert stats["connects"] == 2 and stats["timeouts"] == 0
    finally:
        middleware.pool.close()


# -- timings, stats endpoint, hold warning ---------------------------------------------------

def test_timings_for_the_access_log_and_server_timing(sqlite):
    """wsgipool.wait_ms / wsgipool.hold_ms in the environ; Server-Timing when asked."""
    seen = {}

    def app(environ, start_response):
        seen["wait"] = environ["wsgipool.wait_ms"]
        time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = PoolMiddleware(app, sqlite.url, server_timing=True)
    try:
        response = Response(validator(middleware))
        assert float(seen["wait"]) >= 0
        assert response.headers["Server-Timing"] == f"db-wait;dur={seen['wait']}"
        held = str(response.environ["wsgipool.hold_ms"])  # as the access log reads it
        assert float(held) >= 20
        time.sleep(0.01)
        assert str(response.environ["wsgipool.hold_ms"]) == held  # stopped at the return
    finally:
        middleware.pool.close()


def test_stats_path_answers_json_and_prometheus_without_a_connection(sqlite):
    """stats_path= answers the pool's figures (JSON, or Prometheus text when asked)
    without checking a connection out."""
    middleware = PoolMiddleware(text_app(lambda e: "x"), sqlite.url, stats_path="/_pool")
    try:
        Response(validator(middleware))
        as_json = Response(validator(middleware), environ_for("/_pool"))
        assert as_json.headers["Content-Type"] == "application/json"
        stats = json.loads(as_json.body)["pools"][middleware.pool.name]
        assert stats["checkouts"] == 1  # the stats request itself took no connection
        as_text = Response(validator(middleware),
                           environ_for("/_pool", HTTP_ACCEPT="text/plain;version=0.0.4"))
        assert as_text.headers["Content-Type"].startswith("text/plain")
        assert b"wsgipool_checkouts_total" in as_text.body
    finally:
        middleware.pool.close()


def test_long_hold_warns_once_naming_the_request(sqlite, caplog):
    """hold_warning=: one warning naming the request that holds a connection too long."""
    release = threading.Event()

    def slow(environ, start_response):
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow"]

    middleware = PoolMiddleware(slow, sqlite.url, max_size=1, timeout=0.3, hold_warning=0.1)
    served = []
    thread = threading.Thread(
        target=lambda: served.append(
            Response(validator(middleware), environ_for("/reports/slow", "POST")).status),
        daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
            thread.start()
            deadline = time.monotonic() + 5
            while middleware.pool.stats()["in_use"] == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(0.15)  # past hold_warning
            assert Response(validator(middleware)).status == "503 Service Unavailable"
            release.set()
            thread.join(5)
            assert not thread.is_alive()
        assert served == ["200 OK"]
        warnings = [r.getMessage() for r in caplog.records if "has been held" in r.getMessage()]
        assert len(warnings) == 1  # once: while others waited, not again on return
        assert "POST /reports/slow" in warnings[0]
    finally:
        release.set()
        middleware.pool.close()


# -- construction --------------------------------------------------------------------------------

def test_shares_a_given_pool(sqlite):
    """PoolMiddleware(app, pool) uses that pool; two middlewares can share one."""
    pool = Pool(sqlite.url, max_size=2)
    try:
        first = PoolMiddleware(text_app(session_of(sqlite)), pool)
        second = PoolMiddleware(text_app(session_of(sqlite, "db.other")), pool,
                                environ_key="db.other")
        assert first.pool is pool and second.pool is pool
        assert Response(validator(first)).body == Response(validator(second)).body
        stats = pool.stats()
        assert (stats["connects"], stats["checkouts"], stats["in_use"]) == (1, 2, 0)
    finally:
        pool.close()


def test_pool_options_with_a_given_pool_are_refused(sqlite):
    """Pool options next to a Pool are a TypeError naming them, not silently ignored."""
    pool = Pool(sqlite.url)
    try:
        with pytest.raises(TypeError, match="max_size"):
            PoolMiddleware(text_app(str), pool, max_size=3)
    finally:
        pool.close()


def test_url_from_database_url(tmp_path, monkeypatch):
    """PoolMiddleware(app) with no URL and nothing configured uses $DATABASE_URL."""
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    target = tmp_path / "from-env.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{target}")

    def handler(environ):
        conn = environ["db.conn"]
        conn.execute("CREATE TABLE t (n)")
        conn.commit()
        return "ok"

    middleware = PoolMiddleware(text_app(handler))
    try:
        assert Response(validator(middleware)).body == b"ok"
        assert target.exists()  # the database the variable named
    finally:
        middleware.pool.close()


def test_no_url_anywhere_is_a_configuration_error(monkeypatch):
    """No URL, no configure(), no $DATABASE_URL: an error that says where one goes."""
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        PoolMiddleware(text_app(str))


def test_url_and_options_from_configure(sqlite, tmp_path, monkeypatch):
    """wsgipool.configure(url, **options) is what PoolMiddleware(app) then uses; it wins
    over DATABASE_URL, and options given to the middleware add to it."""
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/not-this.db")
    wsgipool.configure(sqlite.url, max_size=3)
    middleware = PoolMiddleware(text_app(lambda environ: "ok"))
    other = PoolMiddleware(text_app(lambda environ: "ok"), timeout=2)
    try:
        assert middleware.pool.max_size == 3
        assert (other.pool.max_size, other.pool.timeout) == (3, 2.0)
        assert Response(validator(middleware)).body == b"ok"
        assert not (tmp_path / "not-this.db").exists()
        assert middleware.pool.name == sqlite.url
    finally:
        middleware.pool.close()
        other.pool.close()


@pytest.mark.parametrize("url, options, error, name", [
    pytest.param(None, dict(max_sise=3), TypeError, "max_sise", id="unknown-option"),
    pytest.param(None, dict(max_size=0), ConfigurationError, "max_size", id="bad-value"),
    pytest.param(None, dict(timeout="soon"), TypeError, "timeout", id="bad-type"),
    pytest.param("sqlite:///x.db?bogus=1", {}, ConfigurationError, "bogus", id="url-option"),
    pytest.param("nosuchdb://h/x", {}, ConfigurationError, "nosuchdb", id="url-scheme"),
])
def test_configure_checks_at_once(sqlite, monkeypatch, url, options, error, name):
    """A bad URL or option fails in configure() itself, naming it, and leaves the
    previous settings in place."""
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    wsgipool.configure(sqlite.url, max_size=3)
    with pytest.raises(error, match=name):
        wsgipool.configure(url or sqlite.url, **options)
    middleware = PoolMiddleware(text_app(str))
    try:
        assert (middleware.pool.name, middleware.pool.max_size) == (sqlite.url, 3)
    finally:
        middleware.pool.close()


def test_wsgipool_settings_from_the_environment(sqlite, monkeypatch):
    """DATABASE_URL with WSGIPOOL_<OPTION> values: what uWSGI's env and Apache's SetEnv
    carry; a bad value names its variable."""
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    monkeypatch.setenv("WSGIPOOL_MAX_SIZE", "2")
    monkeypatch.setenv("WSGIPOOL_PRE_PING", "30")
    monkeypatch.setenv("WSGIPOOL_MAX_IDLE", "none")
    middleware = PoolMiddleware(text_app(lambda environ: "ok"), timeout=3)
    pool = middleware.pool
    assert (pool.max_size, pool.pre_ping, pool.max_idle, pool.timeout) == (2, 30.0, None, 3.0)
    assert Response(validator(middleware)).body == b"ok"
    pool.close()
    monkeypatch.setenv("WSGIPOOL_MAX_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="WSGIPOOL_MAX_SIZE='lots' in the "
                                                 "environment: must be a whole number"):
        PoolMiddleware(text_app(lambda environ: "ok"))
