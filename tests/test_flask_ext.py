"""wsgipool.flask against the real databases: a request's connection, a CLI command's,
an app context's; each given back however it ends, and config errors naming the key."""

import importlib
import importlib.util
import json
import sys
import uuid
from wsgiref.validate import validator

import pytest

flask = pytest.importorskip("flask", reason="pip install flask")
import click  # noqa: E402  (Flask's own dependency)

import wsgipool  # noqa: E402
from wsgipool import ConfigurationError, DriverNotInstalled, PoolError  # noqa: E402
from wsgipool.flask import Pool, get_db  # noqa: E402

from test_middleware import Response, environ_for, eventually_gone  # noqa: E402


@pytest.fixture(params=["postgresql", "mysql", "sqlite"])
def any_db(request):
    """PostgreSQL, MariaDB and SQLite, each through its default driver."""
    return request.getfixturevalue({"mysql": "mariadb"}.get(request.param, request.param))


@pytest.fixture
def make_app():
    """Flask apps with the extension; their pools are closed at the end."""
    made = []

    def make(url, name="flask_ext_test", extension=None, **config):
        app = flask.Flask(name)
        app.config["WSGIPOOL_URL"] = url
        app.config.update(config)
        extension = extension or Pool()
        extension.init_app(app)
        made.append((app, extension))
        return app, extension

    yield make
    for app, extension in made:
        for pool in extension.middleware(app).pools.values():
            pool.close()


@pytest.fixture
def table(any_db):
    """A table of this test's own, dropped at the end."""
    name = f"flask_{uuid.uuid4().hex[:8]}"
    admin = any_db.admin()
    bounded(any_db, admin)
    admin.cursor().execute(f"CREATE TABLE {name} (n INTEGER)")
    admin.commit()
    yield name
    admin.cursor().execute(f"DROP TABLE {name}")
    admin.commit()
    admin.close()


def bounded(db, admin):
    """The DROP at the end waits at most 10 s for a session a failed test left in a
    transaction on the table (a wait inside the driver, which no test timeout cuts)."""
    if db.kind == "postgresql":
        admin.cursor().execute("SET lock_timeout = '10s'")
    elif db.kind == "mysql":
        admin.cursor().execute("SET SESSION lock_wait_timeout = 10")


def rows(db, table):
    admin = db.admin()
    try:
        cursor = admin.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {table}")
        return cursor.fetchone()[0]
    finally:
        admin.close()


def settled(app, extension, name=None):
    """The pool's stats, once every checkout went back."""
    stats = extension.middleware(app).pools[name or "default"].stats()
    assert stats["in_use"] == 0 and stats["checkouts"] == stats["returns"], stats
    assert stats["discards"] == 0, stats["discard_reasons"]  # none leaked, none broken
    return stats


def mark(db):
    return "?" if db.kind == "sqlite" else "%s"


# -- a request's connection ------------------------------------------------------------

def test_a_request_gets_the_middlewares_connection_and_gives_it_back(db, make_app):
    app, extension = make_app(db.url)
    seen = []

    @app.get("/")
    def index():
        conn = get_db()
        assert conn is get_db() is flask.request.environ["db.conn"]
        assert conn is extension.get_db()
        seen.append(db.session_id(conn))
        conn.rollback()
        return {"in_use": extension.stats()["in_use"]}

    client = app.test_client()  # goes through app.wsgi_app, the middleware
    assert isinstance(app.wsgi_app, wsgipool.PoolMiddleware)
    assert [client.get("/").json["in_use"] for _ in range(3)] == [1, 1, 1]
    assert len(set(seen)) == 1  # one session, reused by every request
    if db.kind == "postgresql":
        assert db.live_sessions() == set(seen)  # the only session of this pool
    stats = settled(app, extension)
    assert (stats["connects"], stats["checkouts"], stats["discards"]) == (1, 3, 0)
    assert app.extensions["wsgipool"] is extension


def test_lazy_checks_out_at_the_first_get_db_and_gives_the_drivers_own(postgresql, make_app):
    import psycopg2.extensions

    app, extension = make_app(postgresql.url, WSGIPOOL_LAZY=True)

    @app.get("/health")
    def health():
        return "ok"

    @app.get("/db")
    def uses_db():
        stand_in = flask.request.environ["db.conn"]
        before = extension.stats()["in_use"]
        conn = get_db()
        assert isinstance(conn, psycopg2.extensions.connection)  # not the stand-in
        assert postgresql.session_id(stand_in) == postgresql.session_id(conn)
        conn.rollback()
        return {"before": before, "after": extension.stats()["in_use"]}

    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert settled(app, extension)["checkouts"] == 0  # never touched: none taken
    assert client.get("/db").json == {"before": 0, "after": 1}
    assert settled(app, extension)["checkouts"] == 1


def test_a_transaction_left_open_in_a_view_is_rolled_back(any_db, table, make_app):
    app, extension = make_app(any_db.url)

    @app.post("/")
    def insert():
        get_db().cursor().execute(f"INSERT INTO {table} (n) VALUES (1)")
        return "not committed"

    assert app.test_client().post("/").status_code == 200
    assert rows(any_db, table) == 0
    assert settled(app, extension)["rollbacks"] == 1


@pytest.mark.parametrize("propagate", [True, False], ids=["propagated", "500"])
def test_an_exception_in_a_view_gives_the_connection_back(any_db, table, make_app,
                                                          propagate):
    app, extension = make_app(any_db.url, PROPAGATE_EXCEPTIONS=propagate)

    @app.get("/")
    def fails():
        get_db().cursor().execute(f"INSERT INTO {table} (n) VALUES (1)")
        raise ZeroDivisionError("the view failed")

    client = app.test_client()
    if propagate:
        with pytest.raises(ZeroDivisionError):
            client.get("/")
    else:
        assert client.get("/").status_code == 500
    assert rows(any_db, table) == 0
    stats = settled(app, extension)
    assert (stats["checkouts"], stats["rollbacks"]) == (1, 1)


def test_a_session_lost_in_a_view_is_flasks_500_and_discarded(server_db, make_app):
    """Flask answers an exception in a view itself (500), before the middleware could
    make a lost session a 503; the dead connection is still never reused."""
    app, extension = make_app(server_db.url)

    @app.get("/")
    def killed():
        session = server_db.session_id(get_db())
        server_db.kill(session)
        assert eventually_gone(server_db, session)
        get_db().cursor().execute("SELECT 1")
        return "never"

    assert app.test_client().get("/").status_code == 500
    stats = extension.middleware(app).pool.stats()
    assert (stats["in_use"], stats["returns"], stats["discard_reasons"]["broken"]) == (0, 1, 1)


def test_transaction_from_the_config_commits_a_request(postgresql, make_app):
    app, extension = make_app(postgresql.url, WSGIPOOL_TRANSACTION="true")
    name = f"flask_{uuid.uuid4().hex[:8]}"

    @app.post("/<int:n>")
    def insert(n):
        get_db().cursor().execute(f"INSERT INTO {name} (n) VALUES (%s)", (n,))
        return "committed for me" if n == 1 else ("refused", 400)

    admin = postgresql.admin()
    bounded(postgresql, admin)
    admin.cursor().execute(f"CREATE TABLE {name} (n INTEGER)")
    try:
        client = app.test_client()
        assert [client.post("/1").status_code, client.post("/2").status_code] == [200, 400]
        cursor = admin.cursor()
        cursor.execute(f"SELECT n FROM {name}")
        assert cursor.fetchall() == [(1,)]  # the 400 was rolled back
    finally:
        admin.cursor().execute(f"DROP TABLE {name}")
        admin.close()
    settled(app, extension)


def test_a_streamed_response_keeps_its_connection_until_closed(postgresql, make_app):
    app, extension = make_app(postgresql.url)

    @app.get("/stream")
    def stream():
        first = postgresql.session_id(get_db())

        @flask.stream_with_context
        def chunks():
            yield b"%d\n" % first
            # Still the request's connection while the body streams.
            yield b"%d\n" % postgresql.session_id(get_db())
            yield b"%d\n" % extension.stats()["in_use"]
            get_db().rollback()

        return app.response_class(chunks())

    with app.test_client().get("/stream", buffered=False) as response:
        chunks = response.response
        first = next(chunks)
        assert extension.stats()["in_use"] == 1  # mid-body: not given back yet
        body = first + b"".join(chunks)
    first, again, in_use = body.split()
    assert first == again and in_use == b"1"
    assert settled(app, extension)["checkouts"] == 1
    # The default test client reads and closes the body at once, as a server would.
    assert app.test_client().get("/stream").status_code == 200
    assert settled(app, extension)["checkouts"] == 2


def test_a_named_database_is_checked_out_only_when_asked(postgresql, mariadb, make_app):
    app, extension = make_app(postgresql.url, WSGIPOOL_DATABASES={"reports": mariadb.url})

    @app.get("/<name>")
    def which(name):
        if name == "default":
            return {"pid": postgresql.session_id(get_db())}
        conn = get_db(name)
        assert conn is get_db(name) is flask.request.environ["wsgipool.connections"][name]
        return {"id": mariadb.session_id(conn)}

    client = app.test_client()
    assert client.get("/default").status_code == 200
    assert settled(app, extension, "reports")["checkouts"] == 0
    session = client.get("/reports").json["id"]
    assert mariadb.live_sessions([session]) == {session}  # a MariaDB session
    assert settled(app, extension, "reports")["checkouts"] == 1
    assert settled(app, extension)["checkouts"] == 2  # the default: eager, each request
    with app.app_context():
        with pytest.raises(KeyError, match=r"no database named 'nope': this app has "
                                           r"'default', 'reports'.*WSGIPOOL_DATABASES"):
            get_db("nope")
        assert mariadb.session_id(get_db("reports")) == session  # outside a request too
        assert extension.stats("reports")["in_use"] == 1
    settled(app, extension, "reports")


def test_a_lazy_checkout_that_finds_no_connection_answers_503(sqlite, make_app):
    app, extension = make_app(sqlite.url, WSGIPOOL_LAZY=True, WSGIPOOL_MAX_SIZE=1,
                              WSGIPOOL_TIMEOUT=0.2, WSGIPOOL_RETRY_AFTER=7)

    @app.get("/")
    def index():
        get_db()
        return "never"

    pool = extension.middleware(app).pool
    held = pool.checkout()
    try:
        response = app.test_client().get("/")
    finally:
        pool.checkin(held)
    assert (response.status_code, response.headers["Retry-After"]) == (503, "7")
    assert settled(app, extension)["timeouts"] == 1


# -- outside a request: CLI commands and app contexts ------------------------------

def add_commands(app, db, table):
    @app.cli.command("who")
    def who():
        conn = get_db()
        assert get_db() is conn  # one connection for the whole command
        click.echo(json.dumps({"session": db.session_id(conn),
                               "in_use": current_stats()["in_use"]}))

    @app.cli.command("insert")
    @click.option("--commit", is_flag=True)
    @click.option("--fail", is_flag=True)
    def insert(commit, fail):
        get_db().cursor().execute(f"INSERT INTO {table} (n) VALUES (1)")
        if commit:
            get_db().commit()
        if fail:
            raise RuntimeError("the command failed")


def current_stats():
    return flask.current_app.extensions["wsgipool"].stats()


def test_a_cli_command_gets_a_connection_and_gives_it_back(any_db, table, make_app):
    app, extension = make_app(any_db.url)
    add_commands(app, any_db, table)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["who"])
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["in_use"] == 1
    if any_db.kind != "sqlite":
        assert any_db.live_sessions([found["session"]]) == {found["session"]}
    stats = settled(app, extension)
    assert (stats["connects"], stats["checkouts"]) == (1, 1)
    rollbacks = stats["rollbacks"]  # psycopg2 and MySQLdb: 1, for the SELECT

    # Left open: rolled back. Committed: kept. Failed: rolled back, and given back.
    assert runner.invoke(args=["insert"]).exit_code == 0
    assert rows(any_db, table) == 0
    assert settled(app, extension)["rollbacks"] == rollbacks + 1
    assert runner.invoke(args=["insert", "--commit"]).exit_code == 0
    assert rows(any_db, table) == 1
    result = runner.invoke(args=["insert", "--fail"])
    assert isinstance(result.exception, RuntimeError)
    assert rows(any_db, table) == 1
    stats = settled(app, extension)
    assert (stats["connects"], stats["checkouts"], stats["rollbacks"]) == (1, 4, rollbacks + 2)


def test_an_app_context_gets_one_connection_however_it_ends(any_db, make_app):
    app, extension = make_app(any_db.url)
    with app.app_context():
        conn = get_db()
        assert get_db() is conn and extension.stats()["in_use"] == 1
    assert settled(app, extension)["checkouts"] == 1
    with pytest.raises(KeyboardInterrupt):  # BaseException too
        with app.app_context():
            get_db()
            raise KeyboardInterrupt
    assert settled(app, extension)["checkouts"] == 2
    # A request context with no middleware behind it: the app context's connection.
    with app.test_request_context("/"):
        assert get_db() is get_db() and extension.stats()["in_use"] == 1
    assert settled(app, extension)["checkouts"] == 3


def test_an_app_context_pushed_twice_holds_one_connection(sqlite, make_app):
    app, extension = make_app(sqlite.url)
    context = app.app_context()
    context.push()
    context.push()
    conn = get_db()
    context.pop()
    assert get_db() is conn and extension.stats()["in_use"] == 1  # still pushed once
    context.pop()
    assert settled(app, extension)["checkouts"] == 1
    with context:  # pushed again after it ended: a checkout of its own, given back
        get_db()
        assert extension.stats()["in_use"] == 1
    assert settled(app, extension)["checkouts"] == 2


def test_nested_app_contexts_each_give_back_their_own(sqlite, make_app):
    app, extension = make_app(sqlite.url, WSGIPOOL_MAX_SIZE=2)
    with app.app_context():
        outer = get_db()
        with app.app_context():  # Flask's new context, with a g of its own
            assert get_db() is not outer and extension.stats()["in_use"] == 2
        assert extension.stats()["in_use"] == 1 and get_db() is outer
    assert settled(app, extension)["checkouts"] == 2


def test_a_nested_context_waits_for_the_outer_ones_connection(sqlite, make_app):
    app, extension = make_app(sqlite.url, WSGIPOOL_MAX_SIZE=1, WSGIPOOL_TIMEOUT=0.1)
    with app.app_context():
        get_db()
        with pytest.raises(wsgipool.PoolTimeout):
            with app.app_context():
                get_db()
    assert settled(app, extension)["timeouts"] == 1


def test_threads_sharing_an_app_context_share_its_connection(postgresql, make_app):
    import contextvars
    import threading

    app, extension = make_app(postgresql.url)
    barrier = threading.Barrier(4, timeout=10)
    found = []

    def reach():
        barrier.wait()
        found.append(get_db())

    with app.app_context():
        threads = [threading.Thread(target=contextvars.copy_context().run, args=(reach,))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not any(thread.is_alive() for thread in threads)
        assert len(found) == 4 and len({id(conn) for conn in found}) == 1
    assert settled(app, extension)["checkouts"] == 1


def test_a_thread_left_running_after_the_response_gets_a_connection_of_its_own(
        postgresql, make_app):
    """copy_current_request_context: once the response went back, the thread's
    get_db() checks out for the thread's own app context, given back when it ends."""
    import threading

    app, extension = make_app(postgresql.url)
    response_closed, threads, found = threading.Event(), [], []

    @app.get("/")
    def index():
        request_session = postgresql.session_id(get_db())
        get_db().rollback()

        @flask.copy_current_request_context
        def later():
            response_closed.wait(10)
            conn = get_db()
            found.append((postgresql.session_id(conn), extension.stats()["in_use"]))
            conn.rollback()

        threads.append(threading.Thread(target=later))
        threads[0].start()
        return str(request_session)

    request_session = int(app.test_client().get("/").data)
    in_use = extension.middleware(app).pool.stats()["in_use"]
    response_closed.set()
    threads[0].join(timeout=10)
    assert not threads[0].is_alive()
    assert in_use == 0  # the request's connection went back with its response
    assert found == [(request_session, 1)]  # the same session, checked out afresh
    assert settled(app, extension)["checkouts"] == 2


def test_a_base_exception_in_a_view_gives_the_connection_back(sqlite, make_app):
    app, extension = make_app(sqlite.url)

    @app.get("/")
    def interrupted():
        get_db().execute("SELECT 1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        app.test_client().get("/")
    assert settled(app, extension)["checkouts"] == 1


def test_teardown_functions_may_still_use_get_db(sqlite):
    """Ours runs after every other teardown, however they were registered; a
    get_db() after it is refused rather than left checked out."""
    app = flask.Flask("teardowns")
    app.config["WSGIPOOL_URL"] = sqlite.url
    used = []
    app.teardown_appcontext(lambda exc: used.append(get_db()))  # before init_app
    extension = Pool(app)
    app.teardown_appcontext(lambda exc: used.append(get_db()))  # after

    def late(sender, **_):
        with pytest.raises(PoolError, match="the app context is ending"):
            get_db()
        used.append("refused")

    flask.appcontext_tearing_down.connect(late, app)
    try:
        with app.app_context():
            conn = get_db()
        assert used == [conn, conn, "refused"]
        assert settled(app, extension)["checkouts"] == 1
    finally:
        flask.appcontext_tearing_down.disconnect(late, app)
        extension.middleware(app).pool.close()


def test_a_kept_request_context_does_not_reuse_the_returned_connection(sqlite, make_app):
    """``with client:`` keeps the last request's context after its response went
    back: get_db() there checks out for that context instead of using a connection
    the pool may have handed to someone else."""
    app, extension = make_app(sqlite.url)

    @app.get("/")
    def index():
        return "ok"

    with app.test_client() as client:
        client.get("/")
        assert extension.stats()["in_use"] == 0
        get_db()
        assert extension.stats()["in_use"] == 1
    assert settled(app, extension)["checkouts"] == 2


def test_one_extension_serves_several_apps(tmp_path, make_app):
    extension = Pool()
    one, _ = make_app(f"sqlite:///{tmp_path}/one.db", "one", extension)
    two, _ = make_app(f"sqlite:///{tmp_path}/two.db", "two", extension)
    for app in (one, two):
        @app.get("/")
        def which():
            cursor = get_db().cursor()
            cursor.execute("PRAGMA database_list")
            return cursor.fetchone()[2].rsplit("/", 1)[1]

    assert one.test_client().get("/").data == b"one.db"
    assert two.test_client().get("/").data == b"two.db"
    with one.app_context():
        assert extension.pool is not extension.middleware(two).pool
        assert extension.stats()["checkouts"] == 1
    with pytest.raises(RuntimeError, match="no Flask app context"):
        extension.pool
    with pytest.raises(RuntimeError, match="get_db.. needs a Flask app context"):
        get_db()
    with flask.Flask("three").app_context():
        with pytest.raises(RuntimeError, match="not set up on Flask app 'three'"):
            get_db()
    with pytest.raises(RuntimeError, match="already set up on Flask app 'one'"):
        extension.init_app(one)


def test_an_app_a_factory_dropped_takes_its_sessions_with_it(postgresql):
    """One extension, an app per test (the factory pattern): a dropped app's pool and
    its connections go with it, instead of piling up sessions on the server."""
    import gc

    extension = Pool()
    sessions = []
    for _ in range(2):
        app = flask.Flask("dropped")
        app.config["WSGIPOOL_URL"] = postgresql.url
        extension.init_app(app)
        app.add_url_rule("/", "index", lambda: str(postgresql.session_id(get_db())))
        sessions.append(int(app.test_client().get("/").data))
        del app
        gc.collect()
        assert eventually_gone(postgresql, sessions[-1])  # closed with its pool
    assert postgresql.live_sessions() == set()


# -- settings from app.config --------------------------------------------------------

def test_options_come_from_the_config_with_the_same_names(sqlite, make_app):
    app, extension = make_app(
        sqlite.url, WSGIPOOL_MAX_SIZE="3", WSGIPOOL_TIMEOUT=2, WSGIPOOL_MAX_LIFETIME="none",
        WSGIPOOL_PRE_PING=30, WSGIPOOL_RESET="session", WSGIPOOL_NAME="main",
        WSGIPOOL_STATS_PATH="/_pool", WSGIPOOL_ENVIRON_KEY="my.conn")
    with app.app_context():
        pool = extension.pool
    assert (pool.max_size, pool.timeout, pool.max_lifetime, pool.pre_ping, pool.reset,
            pool.name) == (3, 2.0, None, 30.0, "session", "main")
    middleware = extension.middleware(app)
    assert (middleware.stats_path, middleware.environ_key) == ("/_pool", "my.conn")

    @app.get("/")
    def index():
        assert get_db() is flask.request.environ["my.conn"]
        return "ok"

    client = app.test_client()
    assert client.get("/").status_code == 200
    (stats,) = client.get("/_pool").json["pools"].values()
    assert stats["checkouts"] == 1


@pytest.mark.parametrize("config, error, message", [
    pytest.param({"WSGIPOOL_MAX_SIZE": 0}, ConfigurationError,
                 r"app.config\['WSGIPOOL_MAX_SIZE'\]: max_size must be at least 1, not 0",
                 id="range"),
    pytest.param({"WSGIPOOL_MAX_SIZE": "ten"}, ConfigurationError,
                 r"app.config\['WSGIPOOL_MAX_SIZE'\] = 'ten': must be a whole number",
                 id="text"),
    pytest.param({"WSGIPOOL_TIMEOUT": [1]}, ConfigurationError,
                 r"app.config\['WSGIPOOL_TIMEOUT'\]: timeout must be a number of seconds, "
                 r"not list", id="type"),
    pytest.param({"WSGIPOOL_LAZY": "maybe"}, ConfigurationError,
                 r"app.config\['WSGIPOOL_LAZY'\] = 'maybe': must be true or false",
                 id="middleware-option"),
    pytest.param({"WSGIPOOL_MAX_SISE": 8}, ConfigurationError,
                 r"unknown wsgipool setting\(s\) in app.config: WSGIPOOL_MAX_SISE \(did you "
                 r"mean WSGIPOOL_MAX_SIZE\?\)", id="misspelt"),
    pytest.param({"WSGIPOOL_URL": "oracle://scott:tiger@db/orcl"}, ConfigurationError,
                 r"app.config\['WSGIPOOL_URL'\]: unsupported database URL scheme 'oracle'",
                 id="scheme"),
    pytest.param({"WSGIPOOL_URL": "postgresql://app:s3cret@db/app?nope=1"},
                 ConfigurationError, r"app.config\['WSGIPOOL_URL'\]: .*nope", id="url-option"),
    pytest.param({"WSGIPOOL_URL": 5432}, ConfigurationError,
                 r"app.config\['WSGIPOOL_URL'\] must be a database URL str, not int",
                 id="url-type"),
    pytest.param({"WSGIPOOL_DATABASES": {"reports": "mysql://u:s3cret@db/x?bad=1"}},
                 ConfigurationError, r"app.config\['WSGIPOOL_DATABASES'\]\['reports'\]: unknown "
                 r"mysqlclient option 'bad'",
                 id="named-url"),
    pytest.param({"WSGIPOOL_DATABASES": ["sqlite://"]}, ConfigurationError,
                 r"WSGIPOOL_DATABASES'\] must be a mapping of name to URL", id="named-type"),
    pytest.param({"WSGIPOOL_DATABASES": {"default": "sqlite://"}}, ConfigurationError,
                 r"WSGIPOOL_\* in the config of Flask app 'bad'.*database names must be",
                 id="named-default"),
    pytest.param({"WSGIPOOL_MIN_SIZE": 5, "WSGIPOOL_MAX_SIZE": 2}, ConfigurationError,
                 r"WSGIPOOL_\* in the config of Flask app 'bad': min_size must be at most "
                 r"max_size \(2\), not 5", id="together"),
])
def test_a_bad_setting_is_an_error_naming_its_key(sqlite, config, error, message):
    app = flask.Flask("bad")
    app.config["WSGIPOOL_URL"] = sqlite.url
    app.config.update(config)
    with pytest.raises(error, match=message) as raised:
        Pool(app)
    assert "s3cret" not in str(raised.value) and "tiger" not in str(raised.value)
    assert "wsgipool" not in app.extensions and not isinstance(app.wsgi_app,
                                                              wsgipool.PoolMiddleware)


def test_an_app_wrapped_by_hand_already_is_refused(sqlite):
    """Migrating from ``app.wsgi_app = PoolMiddleware(...)``: keeping both would check
    out two connections per request."""
    app = flask.Flask("wrapped")
    app.wsgi_app = wsgipool.PoolMiddleware(app.wsgi_app, sqlite.url)
    app.config["WSGIPOOL_URL"] = sqlite.url
    with pytest.raises(ConfigurationError, match="is a PoolMiddleware already: remove it"):
        Pool(app)
    app.wsgi_app.pool.close()


def test_no_url_anywhere_names_the_config_key(monkeypatch):
    from wsgipool import settings

    monkeypatch.setattr(settings, "_configured", None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setattr(settings, "getenv", lambda name: None)
    with pytest.raises(ConfigurationError, match=r"no database URL for Flask app 'x': set "
                                                 r"app.config\['WSGIPOOL_URL'\]"):
        Pool(flask.Flask("x"))


def test_without_a_url_in_the_config_database_url_is_used(sqlite, monkeypatch):
    from wsgipool import settings

    monkeypatch.setattr(settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", sqlite.url)
    app = flask.Flask("env")
    extension = Pool(app)
    try:
        assert extension.middleware(app).pool.name == sqlite.url
    finally:
        extension.middleware(app).pool.close()


def test_importing_without_flask_says_what_to_install(monkeypatch):
    monkeypatch.delitem(sys.modules, "wsgipool.flask")
    monkeypatch.setitem(sys.modules, "flask", None)
    with pytest.raises(DriverNotInstalled, match=r"wsgipool.flask needs Flask, which is not "
                                                 r"installed .*pip install flask"):
        importlib.import_module("wsgipool.flask")


def test_the_middleware_underneath_passes_wsgi_validation(sqlite, make_app):
    app, extension = make_app(sqlite.url)

    @app.get("/")
    def index():
        return {"one": get_db().execute("SELECT 1").fetchone()[0]}

    response = Response(validator(app), environ_for("/"))
    assert json.loads(response.body) == {"one": 1}
    settled(app, extension)


# -- the example ------------------------------------------------------------------

def test_the_flask_example_serves_and_counts_from_a_command(any_db, monkeypatch):
    """examples/flask_app.py in process: its table made in an app context at import,
    a signature through the test client, and its ``count`` command."""
    from wsgipool import settings
    from servers import ROOT

    table = f"flask_guestbook_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(settings, "_configured", None)
    monkeypatch.setenv("DATABASE_URL", any_db.url)
    monkeypatch.setenv("GUESTBOOK_TABLE", table)
    spec = importlib.util.spec_from_file_location(
        f"flask_app_{table}", f"{ROOT}/examples/flask_app.py")
    example = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(example)
        app, extension = example.app, example.pool
        assert settled(app, extension)["checkouts"] == 1  # the CREATE TABLE at import
        client = app.test_client()
        response = client.post("/sign", data={"name": "Ada", "message": "hello"})
        assert response.status_code == 303
        assert b"Ada" in client.get("/").data
        result = app.test_cli_runner().invoke(args=["count"])
        assert (result.exit_code, result.output) == (0, "1\n")
        stats = settled(app, extension)
        assert (stats["connects"], stats["checkouts"]) == (1, 4)
    finally:
        if "app" in vars(example):
            example.pool.middleware(example.app).pool.close()
        admin = any_db.admin()
        bounded(any_db, admin)
        admin.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        admin.commit()
        admin.close()


# -- docs/flask.rst's snippets, run as written ---------------------------------------

DOC_URLS = ("postgresql://app@db/app", "postgresql://reader@replica/app")


@pytest.fixture
def doc_app(postgresql, tmp_path, monkeypatch):
    """The quick start, saved as app.py and imported as ``app``, on the test server."""
    from readme import snippet

    (tmp_path / "app.py").write_text(
        snippet("flask-quickstart").replace(DOC_URLS[0], postgresql.url))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "app", raising=False)
    module = importlib.import_module("app")
    yield module
    sys.modules.pop("app", None)
    module.pool.middleware(module.app).pool.close()


def test_doc_quickstart_outside_and_testing_snippets_run(doc_app, capsys):
    from readme import snippet

    assert doc_app.app.test_client().get("/").data == b"hello from the database"
    exec(compile(snippet("flask-outside"), "flask-outside", "exec"), {})
    assert capsys.readouterr().out == "1\n"  # in_use, inside the with block
    assert settled(doc_app.app, doc_app.pool)["checkouts"] == 2
    namespace = {}
    exec(compile(snippet("flask-testing"), "flask-testing", "exec"), namespace)
    namespace["test_hello_gives_its_connection_back"]()
    namespace["test_count_command"]()
    assert settled(doc_app.app, doc_app.pool)["checkouts"] == 4


def test_doc_factory_snippet_builds_apps_from_the_environment(sqlite, monkeypatch):
    from readme import snippet

    monkeypatch.setenv("FLASK_WSGIPOOL_URL", sqlite.url)
    monkeypatch.setenv("FLASK_WSGIPOOL_MAX_SIZE", "3")
    namespace = {"__name__": "factory"}
    exec(compile(snippet("flask-factory"), "flask-factory", "exec"), namespace)
    one = namespace["create_app"]()
    two = namespace["create_app"]({"WSGIPOOL_MAX_SIZE": 2})
    extension = namespace["pool"]
    try:
        assert one.test_client().get("/stats").json["max_size"] == 3
        assert two.test_client().get("/stats").json["max_size"] == 2
        assert extension.middleware(one).pool is not extension.middleware(two).pool
    finally:
        for app in (one, two):
            extension.middleware(app).pool.close()


def test_doc_config_snippet_loads_with_from_pyfile(postgresql, any_mariadb, tmp_path):
    from readme import snippet

    path = tmp_path / "settings.py"
    path.write_text(snippet("flask-config").replace(DOC_URLS[0], postgresql.url)
                    .replace(DOC_URLS[1], any_mariadb.url))
    app = flask.Flask("configured")
    app.config.from_pyfile(str(path))
    extension = Pool(app)
    middleware = extension.middleware(app)
    try:
        assert (middleware.lazy, middleware.pool.max_size, middleware.pool.pre_ping) == (
            True, 8, 30.0)
        assert list(middleware.pools) == ["default", "reports"]

        @app.get("/")
        def index():
            return {"id": any_mariadb.session_id(get_db("reports"))}

        assert app.test_client().get("/").status_code == 200
        assert settled(app, extension)["checkouts"] == 0  # lazy, and never asked
        assert settled(app, extension, "reports")["checkouts"] == 1
    finally:
        for pool in middleware.pools.values():
            pool.close()
