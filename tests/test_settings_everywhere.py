"""Every option wherever options go: ``configure()``, ``wsgipool.gunicorn.configure``,
``WSGIPOOL_*`` variables, the first request's environ (Apache ``SetEnv``); a misspelt
option is named with the closest one."""

import logging

import pytest
from wsgiref.validate import validator

import wsgipool
import wsgipool.gunicorn
from wsgipool import PoolMiddleware
from wsgipool import settings as wsgipool_settings

# Every middleware option, set to something other than its default.
MIDDLEWARE = dict(environ_key="db", retry_after=7, server_timing=True,
                  stats_path="/_pool", transaction=True, lazy=True, pace_refusals=0.01)
AS_TEXT = dict(environ_key="db", retry_after="7", server_timing="true",
               stats_path="/_pool", transaction="yes", lazy="on", pace_refusals="0.01")


def app(environ, start_response):
    cursor = environ["db"].cursor()
    cursor.execute("SELECT 1")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _request(middleware, path="/"):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "", "QUERY_STRING": "",
               "SERVER_NAME": "t", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.url_scheme": "http", "wsgi.input": __import__("io").BytesIO(),
               "wsgi.errors": __import__("io").StringIO(), "wsgi.version": (1, 0),
               "wsgi.multithread": False, "wsgi.multiprocess": False,
               "wsgi.run_once": False}
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    body = validator(middleware)(environ, start_response)
    try:
        data = b"".join(body)
    finally:
        body.close()
    return seen["status"], seen["headers"], data


def _assert_configured(middleware):
    """Each option took effect, seen from outside."""
    assert {option: getattr(middleware, option) for option in MIDDLEWARE} == MIDDLEWARE
    status, headers, _ = _request(middleware)
    assert status == "200 OK" and "Server-Timing" in headers
    assert middleware.pool.stats()["connects"] == 1  # lazy: taken on first use
    status, headers, body = _request(middleware, "/_pool")
    assert status == "200 OK" and b"checkouts" in body


@pytest.fixture
def fresh_settings(monkeypatch):
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    for name in list(__import__("os").environ):
        if name.startswith("WSGIPOOL_") and not name.startswith(("WSGIPOOL_TEST_",
                                                                 "WSGIPOOL_REQUIRE")):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("configure", [wsgipool.configure, wsgipool.gunicorn.configure],
                         ids=["wsgipool.configure", "wsgipool.gunicorn.configure"])
def test_every_middleware_option_through_configure(sqlite, fresh_settings, configure):
    """Before: ``TypeError: unknown Pool option(s): environ_key, lazy, ...``."""
    configure(sqlite.url, max_size=2, **MIDDLEWARE)
    middleware = PoolMiddleware(app)
    try:
        assert middleware.pool.max_size == 2
        _assert_configured(middleware)
    finally:
        middleware.pool.close()


def test_keywords_given_to_the_middleware_win_over_configure(sqlite, fresh_settings):
    wsgipool.configure(sqlite.url, retry_after=7, lazy=True)
    middleware = PoolMiddleware(app, retry_after=3)
    try:
        assert (middleware.retry_after, middleware.lazy) == (3, True)
    finally:
        middleware.pool.close()


def test_every_middleware_option_through_the_environment(sqlite, fresh_settings,
                                                         monkeypatch):
    """``WSGIPOOL_TRANSACTION=yes`` and the rest, as uWSGI's ``env`` sets them."""
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    for option, text in AS_TEXT.items():
        monkeypatch.setenv("WSGIPOOL_" + option.upper(), text)
    middleware = PoolMiddleware(app)
    try:
        _assert_configured(middleware)
    finally:
        middleware.pool.close()


def test_every_middleware_option_from_the_first_requests_environ(sqlite, fresh_settings,
                                                                 monkeypatch):
    """Apache's ``SetEnv`` reaches only each request's environ: the first request makes
    the pool and sets the middleware's options."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(wsgipool_settings, "in_apache", lambda: True)
    middleware = PoolMiddleware(app)
    assert middleware.pool is None
    environ_settings = {"DATABASE_URL": sqlite.url,
                        **{"WSGIPOOL_" + k.upper(): v for k, v in AS_TEXT.items()}}
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen.update(status=status, headers=dict(headers))

    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
               **environ_settings}
    body = middleware(environ, start_response)
    b"".join(body)
    body.close()
    try:
        assert seen["status"] == "200 OK" and "Server-Timing" in seen["headers"]
        assert {option: getattr(middleware, option) for option in MIDDLEWARE} == MIDDLEWARE
    finally:
        middleware.pool.close()


@pytest.mark.parametrize("where", ["PoolMiddleware", "configure"])
def test_misspelt_option_names_our_api_and_the_closest_option(sqlite, fresh_settings,
                                                               where):
    """Before: ``Pool.__init__() got an unexpected keyword argument 'stat_path'``."""
    with pytest.raises(TypeError) as caught:
        if where == "PoolMiddleware":
            PoolMiddleware(app, sqlite.url, stat_path="/_pool")
        else:
            wsgipool.configure(sqlite.url, stat_path="/_pool")
    message = str(caught.value)
    assert message.startswith(f"{where}() got unknown option(s) 'stat_path'"), message
    assert "did you mean 'stats_path'?" in message and "max_size" in message, message


def test_unknown_wsgipool_variable_is_named_at_startup(sqlite, fresh_settings, monkeypatch,
                                                       caplog):
    """Before: ``WSGIPOOL_MAX_SZIE=4`` was silently ignored."""
    monkeypatch.setattr(wsgipool_settings, "_warned", set())
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    monkeypatch.setenv("WSGIPOOL_MAX_SZIE", "4")
    with caplog.at_level(logging.WARNING, logger="wsgipool.settings"):
        middleware = PoolMiddleware(app)
    middleware.pool.close()
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "WSGIPOOL_MAX_SZIE" in warned[0] and "did you mean WSGIPOOL_MAX_SIZE?" in warned[0]
    assert middleware.pool.max_size == 10  # ignored, as said
