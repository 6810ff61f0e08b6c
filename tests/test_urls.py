"""Database URLs: parsing, percent-decoding, validation, and redaction of secrets."""

import sqlite3

import pytest

from wsgipool import ConfigurationError, ConnectError, Pool, redact_url
from wsgipool.urls import parse_url


@pytest.mark.parametrize("url, expected", [
    pytest.param("postgresql://app:pw@db.internal:6432/app?sslmode=require",
                 dict(scheme="postgresql", username="app", password="pw", host="db.internal",
                      port=6432, path="/app", query={"sslmode": "require"}), id="postgresql"),
    pytest.param("mysql://root@127.0.0.1/test?charset=utf8mb4&unix_socket=/run/m.sock",
                 dict(scheme="mysql", username="root", password=None, host="127.0.0.1",
                      port=None, path="/test",
                      query={"charset": "utf8mb4", "unix_socket": "/run/m.sock"}), id="mysql"),
    pytest.param("postgresql://u:p%40ss%3Aw%2Frd@h/db",
                 dict(username="u", password="p@ss:w/rd", host="h"), id="encoded-password"),
    pytest.param("postgresql://m%C3%BCller@%2Fvar%2Frun%2Fpostgresql/db",
                 dict(username="müller", host="/var/run/postgresql"), id="socket-dir-host"),
    pytest.param("postgresql://u@[::1]:5433/db", dict(host="::1", port=5433), id="ipv6"),
    pytest.param("sqlite:////abs/path.db", dict(scheme="sqlite", path="//abs/path.db"),
                 id="sqlite-absolute"),
    pytest.param("sqlite:///relative.db", dict(scheme="sqlite", path="/relative.db"),
                 id="sqlite-relative"),
])
def test_parse_url(url, expected):
    parsed = parse_url(url)
    for field, value in expected.items():
        assert getattr(parsed, field) == value, field


@pytest.mark.parametrize("url, message", [
    pytest.param("postgresql://u:pw@h:abc/db", "port", id="port-not-a-number"),
    pytest.param("postgresql://u:pw@h:0/db", "port", id="port-zero"),
    pytest.param("postgresql://u:pw@h:70000/db", "port", id="port-too-big"),
    pytest.param("db.internal/app", "expected scheme", id="no-scheme"),
    pytest.param("postgresql://u:pw@[::1/db", "malformed|\\[", id="unclosed-bracket"),
])
def test_malformed_urls_are_rejected_without_the_password(url, message):
    with pytest.raises(ConfigurationError, match=message) as caught:
        Pool(url)
    assert ":pw@" not in str(caught.value)


@pytest.mark.parametrize("url, shown", [
    pytest.param("postgresql://app:s3cr3t@db/app", "postgresql://app:***@db/app", id="password"),
    pytest.param("postgresql://app:p%40ss@db/app", "postgresql://app:***@db/app", id="encoded"),
    pytest.param("postgresql://db/app?user=app&password=s3cr3t",
                 "postgresql://db/app?user=app&password=***", id="query-password"),
    pytest.param("mysql://root@127.0.0.1/test", "mysql://root@127.0.0.1/test", id="no-password"),
    pytest.param("mysql://u:s3cr3t@h?passwd=s3cr3t", "mysql://u:***@h?passwd=***",
                 id="query-without-path"),
    pytest.param("user:s3cr3t@host", "***", id="not-a-url"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_pool_repr_and_name_never_show_the_password():
    pool = Pool("postgresql://app:s3cr3t@db.internal/app?sslmode=require")
    assert "s3cr3t" not in repr(pool) + pool.name + repr(pool._driver)
    assert pool.stats()["connects"] == 0  # nothing was opened to build it


@pytest.mark.parametrize("url, name", [
    pytest.param("postgresql://u:pw@h/db?bogus=1", "bogus", id="postgresql-unknown-option"),
    pytest.param("mysql://u:pw@h/db?connect_timeout=abc", "connect_timeout", id="mysql-int"),
    pytest.param("mysql://u:pw@h/db?autocommit=maybe", "autocommit", id="mysql-bool"),
    pytest.param("mysql://u:pw@h/db?bogus=1", "bogus", id="mysql-unknown-option"),
    pytest.param("sqlite:///x.db?timeout=abc", "timeout", id="sqlite-float"),
    pytest.param("sqlite:///x.db?bogus=1", "bogus", id="sqlite-unknown-option"),
    pytest.param("sqlite://host/x.db", "no host", id="sqlite-host"),
])
def test_bad_driver_options_are_named(url, name):
    with pytest.raises(ConfigurationError, match=name) as caught:
        Pool(url)
    assert ":pw@" not in str(caught.value)


def test_relative_sqlite_path_is_fixed_when_the_pool_is_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pool = Pool("sqlite:///here.db")
    monkeypatch.chdir("/")
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (n)")
        conn.commit()
    assert (tmp_path / "here.db").exists()
    pool.close()


def test_decoded_password_reaches_mariadb(mariadb, pools):
    admin = mariadb.admin()
    cursor = admin.cursor()
    for host in ("%", "localhost"):
        cursor.execute(f"CREATE OR REPLACE USER 'wsgipool_pw'@'{host}' IDENTIFIED BY 'p@ss:w/rd'")
        cursor.execute(f"GRANT SELECT ON test.* TO 'wsgipool_pw'@'{host}'")
    try:
        base = mariadb.url.split("://", 1)[1].split("@", 1)[1]
        pool = pools(f"mysql://wsgipool_pw:p%40ss%3Aw%2Frd@{base}", max_size=1)
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0].startswith("wsgipool_pw@")
        wrong = pools(f"mysql://wsgipool_pw:wrong@{base}", max_size=1)
        with pytest.raises(ConnectError, match="Access denied"):
            wrong.checkout()
    finally:
        for host in ("%", "localhost"):
            cursor.execute(f"DROP USER IF EXISTS 'wsgipool_pw'@'{host}'")
        admin.close()


def test_any_dbapi_module_through_connect(tmp_path, pools):
    path = str(tmp_path / "generic.db")
    pool = pools(connect=lambda: sqlite3.connect(path, check_same_thread=False))
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (n)")
        conn.commit()
    assert pool.stats()["rollbacks"] == 1  # nothing is known of it: always rolled back
    assert pool.paramstyle is None


def test_connect_with_a_url_keeps_the_drivers_knowledge(postgresql, pools):
    import psycopg2

    from wsgipool.drivers import make_driver

    opened = []

    def connect():
        conn = make_driver(postgresql.url).connect()
        opened.append(conn)
        return conn

    pool = pools(postgresql.url, connect=connect, max_size=1)
    for _ in range(3):
        with pool.connection() as conn:
            assert isinstance(conn, psycopg2.extensions.connection)
    assert len(opened) == 1
    assert pool.stats()["rollbacks"] == 0  # idle returns: the PostgreSQL driver can tell
