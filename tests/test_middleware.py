"""PoolMiddleware on the real databases, always under wsgiref's PEP 3333 validator."""

import gc
import json
import logging
import time
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import ConfigurationError, Pool, PoolMiddleware
from wsgipool import settings as wsgipool_settings


def environ_for(path="/", method="GET", **extra):
    environ = {"PATH_INFO": path, "SCRIPT_NAME": "", "REQUEST_METHOD": method,
               "QUERY_STRING": ""}
    environ.update(extra)
    setup_testing_defaults(environ)
    return environ


class Response:
    """What a server saw: status, headers and body."""

    def __init__(self, app, environ=None, close=True):
        self.status = self.headers = None
        self.environ = environ or environ_for()
        self.result = app(self.environ, self.start_response)
        try:
            self.body = b"".join(self.result)
        except BaseException:
            if hasattr(self.result, "close"):  # a server closes a failed response too
                self.result.close()
            raise
        if close and hasattr(self.result, "close"):
            self.result.close()

    def start_response(self, status, headers, exc_info=None):
        self.status, self.headers = status, dict(headers)
        return lambda data: None


def text_app(handler):
    """A WSGI app answering 200 with whatever ``handler(environ)`` returns."""
    def app(environ, start_response):
        body = str(handler(environ)).encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


def session_of(db):
    def handler(environ):
        conn = environ["db.conn"]
        sid = db.session_id(conn)
        conn.rollback()
        return sid
    return handler


def test_each_request_gets_a_connection_and_the_pool(db):
    seen = {}

    def handler(environ):
        seen["pool"] = environ["wsgipool.pool"]
        return session_of(db)(environ)

    middleware = PoolMiddleware(text_app(handler), db.url, max_size=2)
    first = Response(validator(middleware))
    second = Response(validator(middleware))
    assert first.status == second.status == "200 OK"
    assert first.body == second.body  # the same server session, reused
    assert seen["pool"] is middleware.pool
    stats = middleware.pool.stats()
    assert (stats["connects"], stats["checkouts"], stats["in_use"]) == (1, 2, 0)
    middleware.pool.close()


def test_custom_environ_key(sqlite):
    app = text_app(lambda environ: type(environ["db.main"]).__name__)
    middleware = PoolMiddleware(app, sqlite.url, environ_key="db.main")
    assert Response(validator(middleware)).body == b"Connection"
    middleware.pool.close()


def test_connection_stays_out_while_the_body_streams(db):
    chunks_in_use = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        conn = environ["db.conn"]
        for i in range(3):
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            chunks_in_use.append(environ["wsgipool.pool"].stats()["in_use"])
            yield b"%d" % cursor.fetchone()[0]
        conn.rollback()

    middleware = PoolMiddleware(app, db.url, max_size=1)
    response = Response(validator(middleware), close=False)
    assert response.body == b"111"
    assert chunks_in_use == [1, 1, 1]
    assert middleware.pool.stats()["in_use"] == 1  # not yet closed
    response.result.close()
    assert middleware.pool.stats()["in_use"] == 0
    assert middleware.pool.stats()["returns"] == 1
    middleware.pool.close()


def test_second_close_does_nothing(sqlite):
    middleware = PoolMiddleware(text_app(lambda e: "x"), sqlite.url)
    response = Response(middleware)
    response.result.close()
    response.result.close()
    assert middleware.pool.stats()["returns"] == 1
    middleware.pool.close()


def test_generator_finally_can_still_use_the_connection(db):
    used_in_finally = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            yield b"partial"
            yield b"never"
        finally:
            cursor = environ["db.conn"].cursor()
            cursor.execute("SELECT 2")
            used_in_finally.append(cursor.fetchone()[0])
            environ["db.conn"].rollback()

    middleware = PoolMiddleware(app, db.url, max_size=1)
    result = validator(middleware)(environ_for(), lambda s, h, e=None: None)
    assert next(iter(result)) == b"partial"
    result.close()  # a client went away mid-stream
    assert used_in_finally == [2]
    assert middleware.pool.stats()["in_use"] == 0
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
    def __init__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])

    def __iter__(self):
        return iter([b"ok"])

    def close(self):
        raise Boom("in close")


@pytest.mark.parametrize("app", [
    pytest.param(raise_before_start, id="before-start_response"),
    pytest.param(raise_after_start, id="after-start_response"),
    pytest.param(raise_in_body, id="in-body"),
    pytest.param(RaisingClose, id="in-close"),
])
def test_hostile_apps_leave_the_pool_consistent(sqlite, app):
    middleware = PoolMiddleware(app, sqlite.url, max_size=1, timeout=0.5)
    for _ in range(3):  # with max_size=1, a lost connection would time out the next one
        with pytest.raises(Boom):
            Response(middleware)
    stats = middleware.pool.stats()
    assert stats["in_use"] == 0
    assert stats["checkouts"] == stats["returns"] == 3
    assert stats["timeouts"] == 0
    middleware.pool.close()


def test_app_returning_none_gives_the_connection_back(sqlite):
    def app(environ, start_response):
        start_response("200 OK", [])
        return None

    middleware = PoolMiddleware(app, sqlite.url, max_size=1)
    result = middleware(environ_for(), lambda s, h, e=None: None)
    with pytest.raises(TypeError):
        iter(result).__next__()
    result.close()
    assert middleware.pool.stats()["in_use"] == 0
    middleware.pool.close()


def test_unclosed_response_is_recovered_with_a_warning(sqlite, caplog):
    middleware = PoolMiddleware(text_app(lambda e: "x"), sqlite.url, max_size=1)
    with caplog.at_level(logging.WARNING, logger="wsgipool"):
        result = middleware(environ_for("/leaky/path"), lambda s, h, e=None: None)
        list(result)
        del result  # a server that never calls close()
        gc.collect()
    stats = middleware.pool.stats()
    assert stats["in_use"] == 0
    assert stats["discard_reasons"]["leaked"] == 1
    assert any("/leaky/path" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)
    assert Response(middleware).status == "200 OK"  # the room was given back
    middleware.pool.close()


def test_exhausted_pool_answers_503_with_retry_after(db):
    middleware = PoolMiddleware(text_app(session_of(db)), db.url, max_size=1, timeout=0.2,
                                retry_after=7)
    holding = Response(middleware, close=False)
    assert holding.status == "200 OK"
    refused = Response(validator(middleware))
    assert refused.status == "503 Service Unavailable"
    assert refused.headers["Retry-After"] == "7"
    assert b"no database connection" in refused.body
    holding.result.close()
    assert Response(validator(middleware)).status == "200 OK"
    assert middleware.pool.stats()["timeouts"] == 1
    middleware.pool.close()


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://someone:s3cr3t@127.0.0.1:1/db", id="postgresql"),
    pytest.param("mysql://someone:s3cr3t@127.0.0.1:1/db", id="mysql"),
])
def test_database_down_answers_503_and_logs_the_cause(url, caplog):
    middleware = PoolMiddleware(text_app(lambda e: "unreachable"), url, timeout=1)
    with caplog.at_level(logging.INFO, logger="wsgipool"):
        response = Response(validator(middleware))
    assert response.status == "503 Service Unavailable"
    assert "Retry-After" in response.headers
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and "cannot connect" in errors[0].getMessage()
    shown = [response.body.decode(), str(response.headers), repr(middleware),
             repr(middleware.pool)] + [r.getMessage() for r in caplog.records]
    assert not [text for text in shown if "s3cr3t" in text]
    middleware.pool.close()


def test_lost_database_under_the_app_is_a_503(server_db):
    """A session killed mid-request: 503 (retryable) instead of a 500, and replaced."""
    def app(environ, start_response):
        conn = environ["db.conn"]
        cursor = conn.cursor()
        cursor.execute("SELECT 1")  # fails on a killed session
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = PoolMiddleware(app, server_db.url, max_size=1)
    with middleware.pool.connection() as conn:
        victim = server_db.session_id(conn)
        conn.rollback()
    server_db.kill(victim)
    import time
    time.sleep(0.2)
    assert Response(validator(middleware)).status == "503 Service Unavailable"
    assert middleware.pool.stats()["discard_reasons"]["broken"] == 1
    assert Response(validator(middleware)).status == "200 OK"
    middleware.pool.close()


def test_timings_for_the_access_log_and_server_timing(sqlite):
    seen = {}

    def app(environ, start_response):
        seen["wait"] = environ["wsgipool.wait_ms"]
        time.sleep(0.02)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    middleware = PoolMiddleware(app, sqlite.url, server_timing=True)
    response = Response(validator(middleware))
    assert float(seen["wait"]) >= 0
    assert response.headers["Server-Timing"] == f"db-wait;dur={seen['wait']}"
    held = str(response.environ["wsgipool.hold_ms"])  # as the access log reads it
    assert float(held) >= 20
    time.sleep(0.01)
    assert str(response.environ["wsgipool.hold_ms"]) == held  # stopped at the return
    middleware.pool.close()


def test_stats_path_answers_json_and_prometheus_without_a_connection(sqlite):
    middleware = PoolMiddleware(text_app(lambda e: "x"), sqlite.url, stats_path="/_pool")
    Response(validator(middleware))
    as_json = Response(validator(middleware), environ_for("/_pool"))
    assert as_json.headers["Content-Type"] == "application/json"
    stats = json.loads(as_json.body)["pools"][middleware.pool.name]
    assert stats["checkouts"] == 1  # the stats request itself took no connection
    as_text = Response(validator(middleware),
                       environ_for("/_pool", HTTP_ACCEPT="text/plain;version=0.0.4"))
    assert as_text.headers["Content-Type"].startswith("text/plain")
    assert b"wsgipool_checkouts_total" in as_text.body
    middleware.pool.close()


# -- construction -----------------------------------------------------------------------

def test_shares_a_given_pool(sqlite):
    pool = Pool(sqlite.url)
    assert PoolMiddleware(text_app(str), pool).pool is pool
    with pytest.raises(TypeError, match="max_size"):
        PoolMiddleware(text_app(str), pool, max_size=3)
    pool.close()


def test_url_from_the_environment(sqlite, monkeypatch):
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    middleware = PoolMiddleware(text_app(lambda e: "ok"))
    assert Response(validator(middleware)).body == b"ok"
    middleware.pool.close()
    monkeypatch.delenv("DATABASE_URL")
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        PoolMiddleware(text_app(str))


def test_url_and_options_from_configure(sqlite, monkeypatch):
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    wsgipool.configure(sqlite.url, max_size=3)
    middleware = PoolMiddleware(text_app(lambda e: "ok"))
    assert middleware.pool.max_size == 3
    assert Response(validator(middleware)).body == b"ok"
    middleware.pool.close()
    with pytest.raises(TypeError, match="max_sise"):
        wsgipool.configure(sqlite.url, max_sise=3)
    with pytest.raises(ConfigurationError, match="max_size"):
        wsgipool.configure(sqlite.url, max_size=0)


def test_long_hold_warns_once_naming_the_request(sqlite, caplog):
    import threading
    import time

    release = threading.Event()

    def slow(environ, start_response):
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"slow"]

    middleware = PoolMiddleware(slow, sqlite.url, max_size=1, timeout=0.3, hold_warning=0.1)
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        thread = threading.Thread(
            target=lambda: Response(middleware, environ_for("/reports/slow", "POST")),
            daemon=True)
        thread.start()
        time.sleep(0.2)
        assert Response(middleware).status == "503 Service Unavailable"  # waits, warns
        release.set()
        thread.join(5)
        assert not thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records if "has been held" in r.getMessage()]
    assert len(warnings) == 1  # once: while others waited, not again on return
    assert "POST /reports/slow" in warnings[0]


def test_connection_closed_then_used_by_the_handler(db):
    def app(environ, start_response):
        conn = environ["db.conn"]
        conn.close()
        conn.cursor().execute("SELECT 1")  # a hostile handler: raises
        start_response("200 OK", [])
        return [b""]

    middleware = PoolMiddleware(app, db.url, max_size=1, timeout=0.5)
    for _ in range(2):
        with pytest.raises(Exception):
            Response(middleware)
    stats = middleware.pool.stats()
    assert stats["in_use"] == 0 and stats["discard_reasons"]["closed"] == 2
    assert stats["timeouts"] == 0
    middleware.pool.close()
