"""What a new user reaches for first: a quiet log, the URL's session options, ``on_connect``,
``with Pool(...)``."""

import logging

import pytest

from wsgipool import ConnectError, Pool, PoolClosed, PoolMiddleware


def _call(app, path="/"):
    """Run one WSGI request through ``app``; return the status and the body."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SCRIPT_NAME": "",
               "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    seen = []
    body = app(environ, lambda status, headers, exc_info=None: seen.append(status))
    try:
        data = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    return seen[0], data


def _one(conn, sql):
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchone()
    finally:
        cursor.close()


# -- the quiet everyday path ----------------------------------------------------------------


def test_read_only_requests_log_no_warning_and_uncommitted_writes_do(db, caplog):
    """A handler that only reads, left in the driver's implicit transaction, is plain
    DB-API use: a hundred such requests log no warning (a debug line each, and the
    rollbacks figure). Where the driver can tell locally that the transaction matters
    (SQLite: it wrote; PostgreSQL: a statement failed), one warning names the request."""

    def reader(environ, start_response):
        _one(environ["db.conn"], "SELECT 1")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = PoolMiddleware(reader, db.url, max_size=2)
    try:
        with caplog.at_level(logging.DEBUG, logger="wsgipool"):
            for _ in range(100):
                assert _call(app)[0] == "200 OK"
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert warnings == [], [r.getMessage() for r in warnings]
        stats = app.pool.stats()
        implicit = db.kind in ("postgresql", "mysql")  # these open one for a SELECT
        assert stats["rollbacks"] == (100 if implicit else 0), stats
    finally:
        app.pool.close()


@pytest.mark.parametrize("kind", [
    "sqlite-write", "postgresql-write", "psycopg-write", "mysql-write", "pymysql-write",
    "postgresql-failed", "psycopg-failed"])
def test_a_transaction_that_matters_still_gets_a_warning(kind, request, caplog):
    fixture = {"sqlite": "sqlite", "postgresql": "postgresql", "psycopg":
               "psycopg_postgresql", "mysql": "mariadb", "pymysql": "pymysql_mariadb"}
    database = request.getfixturevalue(fixture[kind.split("-")[0]])

    def careless(environ, start_response):
        cursor = environ["db.conn"].cursor()
        if kind.endswith("-write"):
            cursor.execute("CREATE TEMPORARY TABLE careless (i INTEGER)")
            environ["db.conn"].commit()
            cursor.execute("INSERT INTO careless VALUES (1)")
        else:
            try:
                cursor.execute("SELECT 1/0")
            except Exception:
                pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    app = PoolMiddleware(careless, database.url)
    try:
        with caplog.at_level(logging.WARNING, logger="wsgipool"):
            assert _call(app, "/careless")[0] == "200 OK"
        warned = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
        assert len(warned) == 1 and "GET /careless" in warned[0], warned
    finally:
        app.pool.close()


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_url_autocommit_and_read_only_for_both_psycopg_drivers(postgresql, scheme, pools):
    """``?autocommit=true&read_only=true``: no transaction to roll back after a read,
    and the server refuses a write, in autocommit mode too."""
    url = scheme + postgresql.url[postgresql.url.index("://"):]
    pool = pools(url + "&autocommit=true&read_only=true", max_size=1)
    for _ in range(3):
        with pool.connection() as conn:
            assert conn.autocommit is True
            assert _one(conn, "SHOW transaction_read_only")[0] == "on"
            with pytest.raises(Exception, match="read-only"):
                _one(conn, "CREATE TEMP TABLE refused (i int)")
    stats = pool.stats()
    assert (stats["rollbacks"], stats["connects"], stats["discards"]) == (0, 1, 0), stats


# -- on_connect and the context manager -------------------------------------------------------


def test_on_connect_runs_once_per_connection(db, pools):
    """Each new connection is set up once, before its first use; a reused one is not set
    up again (the server counts one call per session)."""
    calls = []

    def set_up(conn):
        calls.append(db.session_id(conn))
        conn.commit()  # the session-id query may have opened a transaction

    pool = pools(db.url, max_size=2, on_connect=set_up)
    for _ in range(5):
        with pool.connection() as conn:
            assert db.session_id(conn) in calls
    assert len(calls) == pool.stats()["connects"] == 1


def test_on_connect_failure_is_a_refused_connect(any_server_db, pools, caplog):
    """A set-up that raises, or leaves a transaction open, closes that connection (its
    session ends) and fails the checkout as a refused connect would."""
    db = any_server_db
    sessions = []

    def leaves_a_transaction(conn):
        sessions.append(db.session_id(conn))
        cursor = conn.cursor()
        cursor.execute("BEGIN")

    pool = pools(db.url, on_connect=leaves_a_transaction)
    with caplog.at_level(logging.ERROR, logger="wsgipool.pool"):
        with pytest.raises(ConnectError, match="on_connect left a transaction open"):
            pool.checkout()
    stats = pool.stats()
    assert (stats["connect_errors"], stats["size"], stats["in_use"]) == (1, 0, 0), stats
    assert any("cannot connect" in r.getMessage() for r in caplog.records)
    assert db.live_sessions(sessions) == set()


def test_a_bug_in_on_connect_is_the_callers_error_not_a_refused_connect(any_server_db, pools):
    """A set-up that raises something other than a database error (a bug in it): the
    connection is closed and the error reaches the caller as it is, with no back-off,
    so the next checkout tries again at once and the fixed set-up succeeds."""
    db = any_server_db
    sessions = []
    broken = [True]

    def set_up(conn):
        sessions.append(db.session_id(conn))
        conn.rollback()  # the session id's SELECT: leave no transaction
        if broken[0]:
            raise KeyError("search_path")

    pool = pools(db.url, on_connect=set_up)
    with pytest.raises(KeyError, match="search_path"):
        pool.checkout()
    stats = pool.stats()
    assert (stats["connect_errors"], stats["size"], stats["in_use"]) == (0, 0, 0), stats
    assert db.live_sessions(sessions) == set()
    broken[0] = False
    with pool.connection() as conn:  # no "refused the last attempt" window
        assert db.session_id(conn) == sessions[-1] != sessions[0]


def test_pool_is_a_context_manager(server_db):
    with Pool(server_db.url) as pool:
        with pool.connection() as conn:
            session = server_db.session_id(conn)
    with pytest.raises(PoolClosed):
        pool.checkout()
    assert server_db.live_sessions([session]) == set()


# -- the README's first app, and the demo's footprint ---------------------------------------


def test_readme_first_app_runs_as_written(tmp_path, monkeypatch):
    """The README's first snippet is a whole app: run as written, it answers."""
    from readme import snippet

    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(snippet("first-app"), namespace)
    app = namespace["app"]
    try:
        status, body = _call(app)
    finally:
        app.pool.close()
    assert (status, body) == ("200 OK", b"hello from the database\n")
    assert (tmp_path / "hello.db").exists()


def test_demo_installs_the_package_and_gunicorn_only():
    """``make demo`` builds its own venv from the ``demo`` extra (gunicorn alone), runs no
    system package step and no ``[test]`` extra, so it needs no root and no pytest."""
    import configparser
    import os
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = configparser.ConfigParser()
    config.read(os.path.join(root, "setup.cfg"))
    demo = config["options.extras_require"]["demo"].split()
    assert [requirement.split(">")[0] for requirement in demo] == ["gunicorn"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    plan = subprocess.run(["make", "-n", "demo", "DEMO_VENV=/nonexistent-demo-venv"],
                          cwd=root, capture_output=True, text=True, timeout=30, env=env)
    assert plan.returncode == 0, plan.stderr
    assert "system-deps" not in plan.stdout and "[test]" not in plan.stdout, plan.stdout
    assert "pip install -q -e '.[demo]'" in plan.stdout, plan.stdout


def test_quiet_log_under_gunicorn_for_reads_and_one_warning_for_a_write(postgresql,
                                                                          tmp_path):
    """psycopg2 under gunicorn: 300 read-only requests log no WARNING; a handler that
    wrote and did not commit gets one, naming it."""
    import os

    from servers import ROOT, Gunicorn, get

    log_path = str(tmp_path / "gunicorn.log")
    server = Gunicorn("quiet_app:app", "-c", "gunicorn_test.conf.py",
                      cwd=os.path.join(ROOT, "tests", "gunicorn_apps"),
                      env={"DATABASE_URL": postgresql.url, "POOL_MAX_SIZE": "2",
                           "WORKERS": "1", "WORKER_CLASS": "gthread", "THREADS": "2"},
                      log_path=log_path)
    try:
        server.wait_ready()
        assert all(get(server.url + "/read")[0] == 200 for _ in range(300))
        quiet = server.log()
        assert get(server.url + "/write")[0] == 200
        deadline = __import__("time").monotonic() + 10
        while "[WARNING]" not in server.log() and __import__("time").monotonic() < deadline:
            __import__("time").sleep(0.05)
        log = server.log()
    finally:
        server.stop(timeout=15)
    assert "[WARNING]" not in quiet.replace("threads per worker share", ""), quiet[-2000:]
    warnings = [line for line in log.splitlines() if "[WARNING]" in line
                and "rolled back" in line]
    assert len(warnings) == 1 and "it wrote" in warnings[0] and "GET /write" in warnings[0]


# -- from the second review: each printed its defect before the fix -------------------------


@pytest.mark.parametrize("way", ["psycopg-transaction-block", "sql-commit", "with-conn"])
def test_a_write_committed_any_way_is_forgotten(postgresql, psycopg_postgresql, way,
                                                pools, caplog):
    """A write committed through ``with conn.transaction():`` (psycopg 3), a ``COMMIT``
    run as SQL, or psycopg2's ``with conn:`` leaves no "it wrote" behind for a later
    request that only reads (before: a false warning on the reader)."""
    db = psycopg_postgresql if way == "psycopg-transaction-block" else postgresql
    pool = pools(db.url, max_size=1)
    with pool.connection() as conn:
        cursor = conn.cursor()
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS forgotten (i int)")
        conn.commit()
        if way == "psycopg-transaction-block":
            with conn.transaction():
                conn.execute("INSERT INTO forgotten VALUES (1)")
        elif way == "sql-commit":
            cursor.execute("INSERT INTO forgotten VALUES (1)")
            cursor.execute("COMMIT")
        else:
            with conn:
                cursor.execute("INSERT INTO forgotten VALUES (1)")
    with caplog.at_level(logging.WARNING, logger="wsgipool"):
        with pool.connection() as conn:
            _one(conn, "SELECT count(*) FROM forgotten")  # a reader, left open
    assert [r.getMessage() for r in caplog.records] == []
    assert pool.stats()["rollbacks"] >= 1


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_copy_in_counts_as_a_write(postgresql, scheme, pools, caplog):
    """COPY ... FROM STDIN bypasses execute(): before, an uncommitted one was silent."""
    import io

    url = scheme + postgresql.url[postgresql.url.index("://"):]
    pool = pools(url, max_size=1)
    with caplog.at_level(logging.WARNING, logger="wsgipool"):
        with pool.connection() as conn:
            cursor = conn.cursor()
            cursor.execute("CREATE TEMP TABLE copied (i int)")
            conn.commit()
            if scheme == "postgresql":
                cursor.copy_expert("COPY copied FROM STDIN", io.StringIO("1\n2\n"))
            else:
                with cursor.copy("COPY copied FROM STDIN") as copy:
                    copy.write("1\n2\n")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "it wrote" in warned[0], warned


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_on_connect_runs_again_after_a_session_reset(postgresql, scheme, pools):
    """``DISCARD ALL`` undoes what on_connect set: before, the second request saw the
    server's default search_path."""
    def set_up(conn):
        cursor = conn.cursor()
        cursor.execute("SET search_path TO pg_catalog, wsgipool_test_schema")
        conn.commit()

    url = scheme + postgresql.url[postgresql.url.index("://"):]
    pool = pools(url, max_size=1, reset="session", on_connect=set_up)
    seen = []
    for _ in range(3):
        with pool.connection() as conn:
            seen.append(_one(conn, "SHOW search_path")[0])
            conn.commit()
    assert seen == ["pg_catalog, wsgipool_test_schema"] * 3
    assert pool.stats()["connects"] == 1


def test_named_databases_keep_their_own_names(sqlite, tmp_path):
    """``name=`` names the middleware's own pool; before, it renamed every named one."""
    middleware = PoolMiddleware(lambda environ, start_response: [], sqlite.url, name="main",
                                databases={"reports": f"sqlite:///{tmp_path}/r.db"})
    try:
        names = {key: pool.name for key, pool in middleware.pools.items()}
        assert names == {"default": "main", "reports": "reports"}
    finally:
        for pool in middleware.pools.values():
            pool.close()


@pytest.mark.parametrize("url", ["postgresql", "sqlite"])
def test_transaction_per_request_refuses_an_autocommit_url(request, url):
    """Every statement of an autocommit connection commits at once, so a 500 could not
    be rolled back: before, the combination was accepted and a 500 kept its write."""
    from wsgipool import ConfigurationError

    db = request.getfixturevalue(url)
    extra = "autocommit=true" if url == "postgresql" else "isolation_level=None"
    sep = "&" if "?" in db.url else "?"
    with pytest.raises(ConfigurationError, match="autocommit mode"):
        PoolMiddleware(lambda environ, start_response: [], db.url + sep + extra,
                       transaction=True)
