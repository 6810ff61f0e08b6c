"""Bad input is refused where it enters (issue 13, item 12).

What can be checked when the pool is made is a ConfigurationError then, naming the
option and what it accepts, instead of a failure on every request; and nothing a
client sends (a CR or LF in the path) reaches a log line raw.
"""

import logging
import math
import threading

import pytest

from wsgipool import ConfigurationError, Pool, PoolMiddleware, PoolTimeout
from wsgipool.labels import request_line
from wsgipool.options import check_options

# -- seconds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("option, value", [
    pytest.param("timeout", 1e10, id="timeout-past-the-platform-limit"),
    pytest.param("timeout", threading.TIMEOUT_MAX, id="timeout-at-the-platform-limit"),
    pytest.param("timeout", 3601, id="timeout-over-an-hour"),
    pytest.param("max_lifetime", 1e10, id="max_lifetime"),
    pytest.param("max_idle", 1e300, id="max_idle"),
    pytest.param("hold_warning", 1e10, id="hold_warning"),
])
def test_too_many_seconds_are_refused(tmp_path, option, value):
    """A wait longer than the platform can sleep raised OverflowError (a 500) at the
    first checkout that had to wait; it is refused when the pool is made."""
    with pytest.raises(ConfigurationError, match=f"{option} must be at most") as caught:
        Pool(f"sqlite:///{tmp_path}/t.db", **{option: value})
    assert "seconds" in str(caught.value)
    with pytest.raises(ConfigurationError, match=option):
        check_options(f"sqlite:///{tmp_path}/t.db", {option: value})


def test_longest_timeout_still_times_out_a_short_checkout(tmp_path, pools):
    """The largest timeout accepted is usable: a waiting checkout ends with PoolTimeout."""
    pool = pools(f"sqlite:///{tmp_path}/t.db", max_size=1, timeout=3600)
    held = pool.checkout()
    try:
        with pytest.raises(PoolTimeout):
            pool.checkout(timeout=0.05)
    finally:
        pool.checkin(held)
    stats = pool.stats()
    assert (stats["timeouts"], stats["in_use"]) == (1, 0)


@pytest.mark.parametrize("option", ["max_lifetime", "max_idle", "hold_warning"])
def test_infinite_optional_seconds_mean_never(tmp_path, pools, option):
    """inf is the same as None ("never") for the optional limits, so nothing ever waits
    an infinite number of seconds."""
    pool = pools(f"sqlite:///{tmp_path}/t.db", **{option: math.inf})
    assert getattr(pool, option) is None
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


# -- SQLite ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["BOGUS", "read committed", "begin", " DEFERRED"])
def test_sqlite_isolation_level_is_checked(tmp_path, value):
    """sqlite3 refused a bad isolation_level only when connecting, on every request."""
    with pytest.raises(ConfigurationError, match="isolation_level") as caught:
        Pool(f"sqlite:///{tmp_path}/t.db?isolation_level={value}")
    for accepted in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE", "None"):
        assert accepted in str(caught.value)


@pytest.mark.parametrize("value, expected", [
    pytest.param("IMMEDIATE", "IMMEDIATE", id="immediate"),
    pytest.param("exclusive", "EXCLUSIVE", id="lower-case"),
    pytest.param("", "", id="empty-is-deferred"),
    pytest.param("None", None, id="autocommit"),
    pytest.param("none", None, id="autocommit-any-case"),
])
def test_sqlite_isolation_levels_sqlite3_accepts(tmp_path, pools, value, expected):
    pool = pools(f"sqlite:///{tmp_path}/t.db?isolation_level={value}")
    with pool.connection() as conn:
        assert conn.isolation_level == expected


# -- libpq -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
@pytest.mark.parametrize("query, option, accepted", [
    pytest.param("sslmode=bogus", "sslmode", "verify-full", id="sslmode"),
    pytest.param("sslmode=", "sslmode", "verify-full", id="sslmode-empty"),
    pytest.param("sslmode=REQUIRE", "sslmode", "require", id="sslmode-case"),
    pytest.param("gssencmode=always", "gssencmode", "prefer", id="gssencmode"),
    pytest.param("channel_binding=yes", "channel_binding", "require", id="channel_binding"),
    pytest.param("target_session_attrs=master", "target_session_attrs", "read-write",
                 id="target_session_attrs"),
    pytest.param("ssl_min_protocol_version=SSLv3", "ssl_min_protocol_version", "TLSv1.2",
                 id="ssl_min_protocol_version"),
    pytest.param("port=abc", "port", "65535", id="port-word"),
    pytest.param("port=0", "port", "65535", id="port-zero"),
    pytest.param("host=a,b&port=1,2,3", "port", "one per host", id="ports-and-hosts"),
    pytest.param("connect_timeout=abc", "connect_timeout", "whole number",
                 id="connect_timeout"),
    pytest.param("keepalives_idle=1.5", "keepalives_idle", "whole number",
                 id="keepalives_idle"),
])
def test_libpq_option_values_are_checked(scheme, query, option, accepted):
    """libpq refused these on every connect; they are refused when the pool is made,
    naming the option and what it accepts, without the password."""
    with pytest.raises(ConfigurationError, match=option) as caught:
        Pool(f"{scheme}://app:s3cr3t@db.invalid/app?{query}")
    assert accepted in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://h1:5432,h2:5433/db", id="ports"),
    pytest.param("postgresql://u:s3cr3t@h1,h2:5433/db", id="one-port"),
    pytest.param("postgresql+psycopg://u:s3cr3t@[::1]:5432,[::2]:5433/db", id="ipv6"),
])
def test_multi_host_url_names_the_form_that_works(url):
    """libpq's host:port,host:port was refused as a bad port; the message now says to
    give the hosts and ports in the query, which libpq reads."""
    with pytest.raises(ConfigurationError, match="host=.*port=") as caught:
        Pool(url)
    assert "several hosts" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_multi_host_query_reaches_postgresql(any_postgresql, pools):
    """Hosts and ports in the query: libpq tries each in turn (port 1 refuses)."""
    from wsgipool.urls import parse_url

    server = parse_url(any_postgresql.url)
    scheme = any_postgresql.url.split("://")[0]
    url = (f"{scheme}://{server.username}@{server.path}?host={server.host},{server.host}"
           f"&port=1,{server.port}&sslmode=disable&connect_timeout=5"
           f"&application_name={any_postgresql.tag}")
    pool = pools(url, max_size=1)
    with pool.connection() as conn:
        session = any_postgresql.session_id(conn)
        conn.rollback()
    assert any_postgresql.live_sessions([session]) == {session}
    assert pool.stats()["connects"] == 1


# -- log lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("path, shown", [
    pytest.param("/a\r\nWARNING forged", "GET /a\\r\\nWARNING forged", id="crlf"),
    pytest.param("/a\x1b[2J\x85b\\", "GET /a\\x1b[2J\\x85b\\\\", id="escape-and-nel"),
    pytest.param("/caf\xc3\xa9", "GET /caf\xc3\xa9", id="latin-1-bytes-kept"),
])
def test_request_line_escapes_control_characters(path, shown):
    """A path can carry %0D%0A, decoded by the server: a log line shows it escaped."""
    assert request_line({"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path}) \
        == shown
    method = request_line({"REQUEST_METHOD": "GE\nT", "PATH_INFO": "/"})
    assert "\n" not in method


def test_503_log_line_shows_a_forged_path_on_one_line(tmp_path, pools, caplog):
    """The middleware's 503 warning names the request through request_line."""
    pool = pools(f"sqlite:///{tmp_path}/t.db", max_size=1, timeout=0.05)
    answered = []

    def app(environ, start_response):  # never reached: the pool has no connection free
        start_response("200 OK", [])
        return [b""]

    middleware = PoolMiddleware(app, pool)
    held = pool.checkout()
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool.middleware"):
            body = middleware(
                {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "QUERY_STRING": "a=%0D%0A",
                 "PATH_INFO": "/x\r\n2024-01-01 CRITICAL forged"},
                lambda status, headers, exc_info=None: answered.append(status))
            b"".join(body)
    finally:
        pool.checkin(held)
    assert answered == ["503 Service Unavailable"]
    lines = [r.getMessage() for r in caplog.records if "answered 503" in r.getMessage()]
    assert len(lines) == 1
    assert "\r" not in lines[0] and "\n" not in lines[0]
    assert "GET /x\\r\\n2024-01-01 CRITICAL forged" in lines[0]


def test_session_reset_without_a_user_is_refused_when_the_pool_is_made():
    """mysqlclient resets a session by logging in again (COM_CHANGE_USER), which needs
    the user: before, ``Pool("mysql://127.0.0.1/test", reset="session")`` was accepted
    and every return failed. PyMySQL resets with COM_RESET_CONNECTION and needs none."""
    from wsgipool import ConfigurationError, Pool

    with pytest.raises(ConfigurationError, match="needs the user in the URL"):
        Pool("mysql://127.0.0.1:3306/test", reset="session")
    Pool("mysql+pymysql://127.0.0.1:3306/test", reset="session").close()
