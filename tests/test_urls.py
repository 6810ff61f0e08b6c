"""Database URLs: parsing, percent-decoding, validation, redaction, and what each driver
makes of them (checked when the pool is made, without connecting)."""

import logging
import os
import sqlite3

import pytest

from wsgipool import ConfigurationError, ConnectError, Pool, redact_url
from wsgipool.urls import parse_url, scrub

# -- parse_url -------------------------------------------------------------------------------


@pytest.mark.parametrize("url, expected", [
    pytest.param("postgresql://app:pw@db.internal:6432/app?sslmode=require",
                 dict(scheme="postgresql", username="app", password="pw", host="db.internal",
                      port=6432, path="/app", query={"sslmode": "require"}), id="postgresql"),
    pytest.param("postgres://app@db/app", dict(scheme="postgres", username="app",
                                                password=None, port=None), id="postgres-alias"),
    pytest.param("mysql://root@127.0.0.1/test?charset=utf8mb4&unix_socket=/run/m.sock",
                 dict(scheme="mysql", username="root", password=None, host="127.0.0.1",
                      port=None, path="/test",
                      query={"charset": "utf8mb4", "unix_socket": "/run/m.sock"}), id="mysql"),
    pytest.param("MySQL://u:@h:3307/", dict(scheme="mysql", username="u", password="",
                                           port=3307, path="/"), id="empty-password"),
    pytest.param("postgresql://u:p%40ss%3Aw%2Frd@h/db",
                 dict(username="u", password="p@ss:w/rd", host="h"), id="encoded-password"),
    pytest.param("postgresql://u:p@ss@h/db", dict(username="u", password="p@ss", host="h"),
                 id="raw-at-in-password"),
    pytest.param("postgresql://m%C3%BCller@%2Fvar%2Frun%2Fpostgresql/db",
                 dict(username="müller", host="/var/run/postgresql", port=None),
                 id="encoded-user-and-socket-dir-host"),
    pytest.param("postgresql://u@[::1]:5432/db", dict(host="::1", port=5432), id="ipv6-port"),
    pytest.param("postgresql://u@[2001:db8::7]/db", dict(host="2001:db8::7", port=None),
                 id="ipv6-no-port"),
    pytest.param("postgresql:///db?host=/tmp&application_name=a%20b&sslmode=",
                 dict(host=None, path="/db",
                      query={"host": "/tmp", "application_name": "a b", "sslmode": ""}),
                 id="query-kept-decoded"),
    pytest.param("sqlite:////abs/path.db", dict(scheme="sqlite", host=None, path="//abs/path.db"),
                 id="sqlite-absolute"),
    pytest.param("sqlite:///relative.db", dict(scheme="sqlite", host=None, path="/relative.db"),
                 id="sqlite-relative"),
    pytest.param("sqlite://", dict(scheme="sqlite", host=None, path=""), id="sqlite-memory"),
])
def test_parse_url(url, expected):
    """Each part comes out percent-decoded; what the URL does not say is None."""
    parsed = parse_url(url)
    for field, value in expected.items():
        assert getattr(parsed, field) == value, field


def test_parsed_url_shows_no_password():
    """repr() and str() of a parsed URL mask the password and query secrets."""
    parsed = parse_url("postgresql://app:s3cr3t@db/app?sslpassword=k3y")
    assert "s3cr3t" not in repr(parsed) + str(parsed)
    assert "k3y" not in repr(parsed) + str(parsed)
    assert str(parsed) == "postgresql://app:***@db/app?sslpassword=***"


@pytest.mark.parametrize("url, message", [
    pytest.param("postgresql://u:s3cr3t@h:abc/db", "port.*'abc'", id="port-not-a-number"),
    pytest.param("postgresql://u:s3cr3t@h:0/db", "port.*'0'", id="port-zero"),
    pytest.param("postgresql://u:s3cr3t@h:70000/db", "port.*'70000'", id="port-too-big"),
    pytest.param("mysql://u:s3cr3t@[::1]:99999/db", "port.*'99999'", id="ipv6-port-too-big"),
    pytest.param("db.internal/app", "scheme", id="no-scheme"),
    pytest.param("://u:s3cr3t@h/db", "scheme", id="empty-scheme"),
    pytest.param("u:s3cr3t@h/db", "scheme", id="no-scheme-with-password"),
    pytest.param("postgresql://u:s3cr3t@[::1/db", "malformed|\\[", id="unclosed-bracket"),
])
def test_malformed_urls_are_rejected_naming_the_problem(url, message):
    """A bad URL is a ConfigurationError naming what is wrong, never the password."""
    with pytest.raises(ConfigurationError, match=message) as caught:
        parse_url(url)
    assert "s3cr3t" not in str(caught.value)
    with pytest.raises(ConfigurationError, match=message) as caught:
        Pool(url)
    assert "s3cr3t" not in str(caught.value)


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://app:s3cr3t/x@db/app", id="slash"),
    pytest.param("postgresql://app:s3cr3t?x@db/app", id="question-mark"),
    pytest.param("postgresql://app:s3cr3t#x@db/app", id="hash"),
])
def test_unencoded_reserved_character_in_password_never_shows(url):
    """A password with a raw / ? or # (it should be percent-encoded) is rejected, and no
    part of it appears in the error or the redacted URL."""
    assert "s3cr3t" not in redact_url(url)
    with pytest.raises(ConfigurationError) as caught:
        Pool(url)
    assert "s3cr3t" not in str(caught.value)


def test_url_must_be_a_str():
    """A URL of another type is a TypeError naming that type."""
    with pytest.raises(TypeError, match="bytes"):
        parse_url(b"postgresql://h/db")


# -- redact_url ----------------------------------------------------------------------------


@pytest.mark.parametrize("url, shown, secret", [
    pytest.param("postgresql://app:s3cr3t@db/app", "postgresql://app:***@db/app", "s3cr3t",
                 id="password"),
    pytest.param("postgresql://app:p%40ss%3Aw%2Frd@db:5432/app",
                 "postgresql://app:***@db:5432/app", "p%40ss", id="encoded-password"),
    pytest.param("postgresql://app:p@ss@db/app", "postgresql://app:***@db/app", "p@ss",
                 id="raw-at-in-password"),
    pytest.param("mysql://:s3cr3t@db/app", "mysql://:***@db/app", "s3cr3t", id="no-user"),
    pytest.param("postgresql://db/app?user=app&password=s3cr3t&sslmode=require",
                 "postgresql://db/app?user=app&password=***&sslmode=require", "s3cr3t",
                 id="query-password"),
    pytest.param("mysql://u:s3cr3t@h?passwd=s3cr3t", "mysql://u:***@h?passwd=***", "s3cr3t",
                 id="query-without-path"),
    pytest.param("postgresql://h/db?PassWord=s3cr3t", "postgresql://h/db?PassWord=***",
                 "s3cr3t", id="query-key-any-case"),
    pytest.param("postgresql://h/db?sslpassword=s3cr3t", "postgresql://h/db?sslpassword=***",
                 "s3cr3t", id="query-sslpassword"),
    pytest.param("postgresql://u:s3cr3t@h/db#s3cr3t", "postgresql://u:***@h/db#***", "s3cr3t",
                 id="fragment"),
    pytest.param("user:s3cr3t@host", "***", "s3cr3t", id="not-a-url"),
])
def test_redact_url_masks_secrets(url, shown, secret):
    """The password and secret query values are masked; the user and the rest stay."""
    redacted = redact_url(url)
    assert redacted == shown
    assert secret not in redacted


@pytest.mark.parametrize("url", [
    pytest.param("mysql://root@127.0.0.1:3306/test", id="user-no-password"),
    pytest.param("postgresql://db.internal/app?sslmode=require&application_name=web",
                 id="no-userinfo"),
    pytest.param("sqlite:////var/lib/app.db", id="sqlite"),
    pytest.param("postgresql://u@[::1]:5432/db", id="ipv6"),
])
def test_redact_url_leaves_urls_without_secrets_unchanged(url):
    assert redact_url(url) == url


# -- what each driver makes of a URL -----------------------------------------------------------


def test_postgresql_pool_is_made_without_connecting():
    """libpq options in the query are accepted; nothing is opened; the name is redacted."""
    pool = Pool("postgresql://u:pw@db.invalid/db?sslmode=require&application_name=x")
    try:
        stats = pool.stats()
        assert (stats["connects"], stats["connect_errors"], stats["size"]) == (0, 0, 0)
        assert pool.name == "postgresql://u:***@db.invalid/db?sslmode=require&application_name=x"
        assert pool.paramstyle == "pyformat"
    finally:
        pool.close()


@pytest.mark.parametrize("url, name", [
    pytest.param("postgresql://u:s3cr3t@h/db?bogus=1", "bogus", id="postgresql-unknown"),
    pytest.param("mysql://u:s3cr3t@h/db?connect_timeout=abc", "connect_timeout",
                 id="mysql-int"),
    pytest.param("mysql://u:s3cr3t@h/db?autocommit=maybe", "autocommit", id="mysql-bool"),
    pytest.param("mysql://u:s3cr3t@h/db?bogus=1", "bogus", id="mysql-unknown"),
    pytest.param("sqlite:///x.db?timeout=abc", "timeout", id="sqlite-float"),
    pytest.param("sqlite:///x.db?bogus=1", "bogus", id="sqlite-unknown"),
    pytest.param("sqlite://host/x.db", "no host", id="sqlite-host"),
    pytest.param("sqlite://u:s3cr3t@/x.db", "no host", id="sqlite-userinfo"),
    pytest.param("oracle://u:s3cr3t@h/db", "oracle", id="unsupported-scheme"),
])
def test_bad_driver_options_are_named(url, name):
    """An option the driver does not know, or cannot read, is named; nothing connects."""
    with pytest.raises(ConfigurationError, match=name) as caught:
        Pool(url)
    assert "s3cr3t" not in str(caught.value)


def test_relative_sqlite_path_is_fixed_when_the_pool_is_made(tmp_path, monkeypatch):
    """sqlite:///rel.db is relative to the working directory when the pool is made."""
    monkeypatch.chdir(tmp_path)
    pool = Pool("sqlite:///rel.db")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a later chdir (gunicorn --chdir) moves nothing
    try:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (n)")
            conn.commit()
    finally:
        pool.close()
    assert (tmp_path / "rel.db").exists()
    assert not (elsewhere / "rel.db").exists()


def test_absolute_sqlite_path(tmp_path, monkeypatch):
    """sqlite:////abs/x.db (four slashes) is the absolute path /abs/x.db."""
    target = tmp_path / "abs" / "x.db"
    target.parent.mkdir()
    url = f"sqlite:///{target}"
    assert url.startswith("sqlite:////")
    monkeypatch.chdir(tmp_path)
    pool = Pool(url)
    try:
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (n)")
            conn.commit()
    finally:
        pool.close()
    assert target.exists()
    assert sorted(os.listdir(tmp_path)) == ["abs"]  # nothing made relative to the cwd


def test_sqlite_options_from_the_query(tmp_path):
    """Query values become sqlite3.connect options of the right type."""
    pool = Pool(f"sqlite:///{tmp_path}/o.db?timeout=0.5&isolation_level=None")
    try:
        with pool.connection() as conn:
            assert conn.isolation_level is None  # autocommit: the text None became None
            conn.execute("CREATE TABLE t (n)")
            assert not conn.in_transaction
    finally:
        pool.close()


def test_decoded_password_reaches_mariadb(mariadb, pools):
    """A percent-encoded password with @ : / logs in; a wrong one is a ConnectError."""
    admin = mariadb.admin()
    cursor = admin.cursor()
    hosts = ("%", "localhost")
    try:
        for host in hosts:
            cursor.execute(
                f"CREATE OR REPLACE USER 'wsgipool_pw'@'{host}' IDENTIFIED BY 'p@ss:w/rd'")
            cursor.execute(f"GRANT USAGE ON *.* TO 'wsgipool_pw'@'{host}'")
        server = parse_url(mariadb.url)
        where = f"{server.host}:{server.port or 3306}"
        pool = pools(f"mysql://wsgipool_pw:p%40ss%3Aw%2Frd@{where}/", max_size=1)
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER()")
            user = cur.fetchone()[0]
            conn.rollback()
        assert user.split("@")[0] == "wsgipool_pw"
        wrong = pools(f"mysql://wsgipool_pw:p%40ss%3Aw%2FrdX@{where}/", max_size=1)
        with pytest.raises(ConnectError, match="Access denied") as caught:
            wrong.checkout()
        assert "p@ss:w/rd" not in str(caught.value)
        assert wrong.stats()["connect_errors"] == 1
    finally:
        for host in hosts:
            cursor.execute(f"DROP USER IF EXISTS 'wsgipool_pw'@'{host}'")
        admin.close()


# -- connect= ------------------------------------------------------------------------------------


class CountingConnection(sqlite3.Connection):
    """A real sqlite3 connection that counts its rollbacks."""

    rollbacks = 0

    def rollback(self):
        type(self).rollbacks += 1
        super().rollback()


def test_connect_without_a_url_pools_any_dbapi_module(tmp_path, pools):
    """connect= alone: the generic driver, which always rolls back on return."""
    path = str(tmp_path / "generic.db")
    CountingConnection.rollbacks = 0
    pool = pools(connect=lambda: sqlite3.connect(path, check_same_thread=False,
                                                 factory=CountingConnection))
    with pool.connection() as conn:
        conn.execute("CREATE TABLE t (n)")
        conn.commit()
        first = conn
    with pool.connection() as conn:
        assert conn is first  # pooled
        conn.execute("INSERT INTO t VALUES (1)")  # not committed: rolled back on return
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert CountingConnection.rollbacks == 3  # on every return, even after a commit
    stats = pool.stats()
    assert (stats["connects"], stats["returns"], stats["rollbacks"]) == (1, 3, 3)
    assert pool.paramstyle is None
    assert pool.name.startswith("connect=")


def test_connect_without_a_url_warns_only_of_work_left_open(tmp_path, pools, caplog):
    """A handler that committed keeps the log quiet (README: "commit or roll back in your
    handler to keep the log quiet"), whatever the driver."""
    path = str(tmp_path / "generic.db")
    pool = pools(connect=lambda: sqlite3.connect(path, check_same_thread=False))
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        with pool.connection() as conn:
            conn.execute("CREATE TABLE t (n)")
            conn.commit()
    assert [r.getMessage() for r in caplog.records] == []


def test_connect_with_a_postgresql_url_keeps_the_drivers_knowledge(postgresql, pools):
    """connect= with a postgresql URL opens connections your way, and the PostgreSQL
    driver still tells an idle return (no rollback) from one in a transaction."""
    import psycopg2

    opened = []

    def connect():
        conn = psycopg2.connect(**_libpq_options(postgresql.url))
        opened.append(conn)
        return conn

    pool = pools(postgresql.url, connect=connect, max_size=1)
    with pool.connection() as conn:
        conn.autocommit = True
        conn.cursor().execute("SELECT 1")  # no transaction left open
        conn.autocommit = False
    with pool.connection() as conn:
        assert conn is opened[0]
    stats = pool.stats()
    assert (stats["connects"], stats["rollbacks"]) == (1, 0)  # idle returns: no rollback
    with pool.connection() as conn:
        conn.cursor().execute("SELECT 1")  # opens a transaction, left open
    assert pool.stats()["rollbacks"] == 1
    assert pool.paramstyle == "pyformat"
    assert len(opened) == 1


def _libpq_options(url):
    parsed = parse_url(url)
    options = dict(host=parsed.host, port=parsed.port, user=parsed.username,
                   password=parsed.password, dbname=parsed.path.lstrip("/") or None)
    options = {k: v for k, v in options.items() if v is not None}
    options.update(parsed.query)
    return options


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://app@db/app?password=p@ss", id="at-in-secret-value"),
    pytest.param("mysql://root@127.0.0.1/test?init_command=SET @a=1&password=p@ss",
                 id="at-in-an-earlier-value"),
    pytest.param("postgresql://db/app?password=p@ss&application_name=me@x",
                 id="at-in-a-later-value"),
])
def test_an_at_in_the_query_never_unmasks_a_secret(url):
    """Review finding: an @ in a query value must not hide the query from masking."""
    assert "p@ss" not in redact_url(url)


def test_ipv6_host_with_an_at_in_the_query_is_valid():
    pool = Pool("postgresql://[::1]/test?application_name=a@b")
    assert pool.stats()["connects"] == 0


# -- brackets in a password (issue 13, item 11) ------------------------------------------------


@pytest.mark.parametrize("password", [
    pytest.param("zq[kwvx", id="open"),
    pytest.param("zq]kwvx", id="close"),
    pytest.param("zq[kw]vx", id="pair"),
    pytest.param("[zqkwvx]", id="whole"),
])
def test_bracket_in_password_is_taken_as_libpq_takes_it(password):
    """libpq reads a raw [ or ] in the password as part of it; so do we, and urllib's
    complaint about the host (which quoted the text between brackets) is never raised."""
    url = f"postgresql://app:{password}@db.invalid:5433/app"
    parsed = parse_url(url)
    assert (parsed.username, parsed.password, parsed.host, parsed.port) == (
        "app", password, "db.invalid", 5433)
    pool = Pool(url)
    try:
        assert pool.name == "postgresql://app:***@db.invalid:5433/app"
        assert pool.stats()["connects"] == 0
    finally:
        pool.close()


@pytest.mark.parametrize("url", [
    pytest.param("postgresql://app:zq[kw]vx#x@db/app", id="bracket-and-hash"),
    pytest.param("postgresql://app:zq[kw]vx/x@db/app", id="bracket-and-slash"),
    pytest.param("postgresql://app:zq[kw]vx@[db/app", id="unclosed-host-bracket"),
    pytest.param("postgresql://app:5432/kw@db/app", id="digits-then-slash"),
])
def test_malformed_url_with_brackets_shows_no_part_of_the_password(url):
    """Rejected or not, nothing between the : and the @ reaches the message."""
    try:
        Pool(url).close()
        shown = ""
    except ConfigurationError as exc:
        shown = str(exc)
    for part in ("zq", "kw", "vx", "5432"):
        assert part not in shown


def test_bracket_in_password_reaches_mariadb(mariadb, pools):
    """A password with raw brackets logs in: the whole of it reaches the server."""
    admin = mariadb.admin()
    cursor = admin.cursor()
    user = f"wsgp_{os.getpid()}_b"
    hosts = ("%", "localhost")
    try:
        for host in hosts:
            cursor.execute(f"CREATE OR REPLACE USER '{user}'@'{host}' IDENTIFIED BY 'p[a]ss'")
        server = parse_url(mariadb.url)
        pool = pools(f"mysql://{user}:p[a]ss@{server.host}:{server.port or 3306}/",
                     max_size=1)
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT CURRENT_USER()")
            assert cur.fetchone()[0].split("@")[0] == user
            conn.rollback()
        assert pool.stats()["connects"] == 1
    finally:
        for host in hosts:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.close()


# -- connect errors are redacted by position, not by searching (issue 13, item 11) -------------


def _refusal(pools, url, caplog):
    """The ConnectError and the log line a refused connect gives, and the driver's text."""
    pool = pools(url, max_size=1)
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="wsgipool.pool"):
        with pytest.raises(ConnectError) as caught:
            pool.checkout()
    assert pool.stats()["connect_errors"] == 1
    logged = [r.getMessage() for r in caplog.records if "cannot connect" in r.getMessage()]
    assert len(logged) == 1
    return str(caught.value), logged[0], str(caught.value.__cause__).strip(), pool.name


def _without_name(text, name):
    assert name in text
    return text.replace(name, "<pool>")


@pytest.mark.parametrize("password, database", [
    pytest.param("same", "same", id="password-is-the-database-name"),
    pytest.param("e", "nosuchdatabase", id="one-letter-password"),
    pytest.param("database", "nosuchdb", id="password-is-a-word-of-the-message"),
])
def test_postgresql_refusal_does_not_depend_on_the_password(any_postgresql, pools, caplog,
                                                            password, database):
    """PostgreSQL (trust auth) refuses an unknown database; the message and the log line
    are the driver's own text, the same whatever the password: masking the password's
    text wherever it occurs showed 'database "***"', or garbled every word with an e."""
    server = parse_url(any_postgresql.url)
    scheme = any_postgresql.url.split("://")[0]
    if database == "same":
        database = password = f"nosuchdb_{os.getpid()}"
    base = f"{scheme}://{server.username}:{{}}@{server.host}:{server.port}/{database}"
    error, logged, driver_text, name = _refusal(pools, base.format(password), caplog)
    assert "does not exist" in driver_text
    assert error == f"cannot connect to {name}: {driver_text}"
    assert logged == error
    other_error, other_logged, _, other_name = _refusal(pools, base.format("Qx9"), caplog)
    assert _without_name(error, name) == _without_name(other_error, other_name)
    assert _without_name(logged, name) == _without_name(other_logged, other_name)


def test_mariadb_refusal_does_not_depend_on_the_password(any_mariadb, pools, caplog):
    """MariaDB refuses a database the user may not use, and a wrong password: the
    message is the driver's own text ('using password: YES' included), never masked
    where the password's text happens to be the user, the database or a word."""
    admin = any_mariadb.admin()
    cursor = admin.cursor()
    user = f"wsgp_{os.getpid()}_r"
    hosts = ("%", "localhost")
    server = parse_url(any_mariadb.url)
    scheme = any_mariadb.url.split("://")[0]
    where = f"{server.host}:{server.port or 3306}"
    try:
        for host in hosts:
            cursor.execute(f"CREATE OR REPLACE USER '{user}'@'{host}' IDENTIFIED BY '{user}'")
        # The right password, equal to the user and to a database it may not use.
        error, logged, driver_text, name = _refusal(
            pools, f"{scheme}://{user}:{user}@{where}/{user}", caplog)
        assert f"to database '{user}'" in driver_text
        assert error == logged == f"cannot connect to {name}: {driver_text}"
        # Wrong passwords: one letter, a word of the message, a long one: one message.
        seen = set()
        for wrong in ("e", "denied", "an-unrelated-wrong-password"):
            error, logged, driver_text, name = _refusal(
                pools, f"{scheme}://{user}:{wrong}@{where}/", caplog)
            assert "using password: YES" in driver_text
            assert error == logged == f"cannot connect to {name}: {driver_text}"
            seen.add(_without_name(error, name))
        assert len(seen) == 1
    finally:
        for host in hosts:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'{host}'")
        admin.close()


@pytest.mark.parametrize("message, shown", [
    pytest.param("invalid dsn: host=h password=hunter2 dbname=d",
                 "invalid dsn: host=h password=*** dbname=d", id="conninfo"),
    pytest.param("host=h password='hun ter\\'2' dbname=d", "host=h password=*** dbname=d",
                 id="conninfo-quoted"),
    pytest.param("host=h sslpassword = hunter2", "host=h sslpassword = ***",
                 id="conninfo-sslpassword-spaced"),
    pytest.param("cannot open postgresql://u:hunter2@h/db today",
                 "cannot open postgresql://u:***@h/db today", id="url"),
    pytest.param("bad 'mysql://u:hun@ter2@h/db?passwd=hunter2&x=1'",
                 "bad 'mysql://u:***@h/db?passwd=***&x=1'", id="url-quoted"),
    pytest.param("connect({'host': 'h', 'password': 'hunter2', 'db': 'd'})",
                 "connect({'host': 'h', 'password': '***', 'db': 'd'})", id="dict-repr"),
    pytest.param("connect(host='h', passwd='hunter2')", "connect(host='h', passwd=***)",
                 id="kwargs-repr"),
    pytest.param("(1045, \"Access denied for user 'u'@'h' (using password: YES)\")",
                 "(1045, \"Access denied for user 'u'@'h' (using password: YES)\")",
                 id="mysql-using-password-kept"),
])
def test_scrub_redacts_a_password_where_a_message_gives_it(message, shown):
    """A URL's password field, a conninfo's password=, a repr's 'password': are masked
    wherever they are, even when the secret is not known (connect= pools know none)."""
    assert scrub(message) == shown
    assert scrub(message, "hunter2") == shown


@pytest.mark.parametrize("message, secret", [
    pytest.param('FATAL:  database "nosuchdatabase" does not exist', "e", id="one-letter"),
    pytest.param('FATAL:  database "nosuchdatabase" does not exist', "database",
                 id="a-word"),
    pytest.param('FATAL:  database "appdb" does not exist', "appdb", id="short-name"),
])
def test_scrub_leaves_text_that_only_looks_like_a_short_password(message, secret):
    """A short password is never searched for: masking where its text occurs would tell
    the reader what it is (and garble the message)."""
    assert scrub(message, secret) == message


def test_scrub_masks_a_long_secret_only_as_a_whole_token():
    """The fallback for a driver that might quote a long secret in free text: masked as a
    whole token, never inside a longer word."""
    secret = "Zt7-quartz-Lamp-91"
    assert scrub(f"server said: bad key {secret}.", secret) == "server said: bad key ***."
    assert scrub(f"x{secret}y", secret) == f"x{secret}y"


def test_driver_secrets_leave_out_what_the_url_shows():
    """A password equal to the user, host, database or another option is shown by the
    URL anyway; searching for it would only mask those and tell that they are equal."""
    from wsgipool.drivers import make_driver

    name = "nosuchdb_long_enough"
    same = make_driver(f"postgresql://{name}:{name}@h/{name}")
    assert same.secrets == ()
    other = make_driver("postgresql://app:Zt7-quartz-Lamp-91@h/app?sslpassword=k")
    assert other.secrets == ("Zt7-quartz-Lamp-91",)
