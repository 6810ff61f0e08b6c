"""Several named databases in one middleware, and lazy checkout, on the real servers."""

import gc
import json
import logging
from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import ConfigurationError, Pool, PoolMiddleware
from wsgipool import settings as wsgipool_settings

from test_middleware import Response, environ_for, query_one, text_app


def stats_of(middleware, name="default"):
    return middleware.pools[name].stats()


def test_named_databases_are_checked_out_only_when_asked(postgresql, mariadb, sqlite):
    """The default is PostgreSQL; "reports" is MariaDB, "cache" SQLite. A request takes a
    connection from a named pool only when it asks, and gives all of them back."""
    seen = []

    def handler(environ):
        answer = [postgresql.session_id(environ["db.conn"])]
        connections = environ["wsgipool.connections"]
        if environ["PATH_INFO"] == "/reports":
            reports = connections["reports"]
            assert connections["reports"] is reports  # the same one all request long
            assert wsgipool.connection(environ, "reports") is reports
            answer.append(mariadb.session_id(reports))
            seen.append(connections.checked_out())
        environ["db.conn"].rollback()
        return " ".join(map(str, answer))

    middleware = PoolMiddleware(text_app(handler), postgresql.url, max_size=2,
                                databases={"reports": mariadb.url, "cache": sqlite.url})
    app = validator(middleware)
    plain = [Response(app, environ_for("/")) for _ in range(5)]
    reports = [Response(app, environ_for("/reports")) for _ in range(3)]
    assert all(r.status == "200 OK" for r in plain + reports)
    assert all(len(r.body.split()) == 1 for r in plain)
    assert len({r.body.split()[1] for r in reports}) == 1  # one MariaDB session, reused
    assert seen == [["default", "reports"]] * 3
    assert stats_of(middleware)["checkouts"] == 8
    assert (stats_of(middleware, "reports")["checkouts"],
            stats_of(middleware, "reports")["connects"]) == (3, 1)
    assert stats_of(middleware, "cache")["connects"] == 0  # never asked: never opened
    for name in middleware.pools:
        assert stats_of(middleware, name)["in_use"] == 0
    for pool in middleware.pools.values():
        pool.close()


def test_unknown_name_is_named_and_reserved_names_are_refused(sqlite, tmp_path):
    def handler(environ):
        with pytest.raises(KeyError, match="no database named 'nope'.*default, other"):
            environ["wsgipool.connections"]["nope"]
        return "ok"

    other = f"sqlite:///{tmp_path / 'other.db'}"
    middleware = PoolMiddleware(text_app(handler), sqlite.url, databases={"other": other})
    assert Response(validator(middleware)).body == b"ok"
    with pytest.raises(ConfigurationError, match="other than 'default'"):
        PoolMiddleware(text_app(handler), sqlite.url, databases={"default": other})
    with pytest.raises(TypeError, match=r"databases\['x'\] must be a URL str or a Pool"):
        PoolMiddleware(text_app(handler), sqlite.url, databases={"x": 42})


def test_lazy_request_that_never_touches_the_database_takes_nothing(db):
    def handler(environ):
        if environ["PATH_INFO"] == "/db":
            return query_one(environ["db.conn"], "SELECT 1")
        environ["db.conn"].commit()  # nothing taken: nothing to commit, no checkout
        return "static"

    middleware = PoolMiddleware(text_app(handler), db.url, lazy=True, max_size=2)
    app = validator(middleware)
    statics = [Response(app, environ_for("/static")) for _ in range(20)]
    assert {r.body for r in statics} == {b"static"}
    assert (stats_of(middleware)["checkouts"], stats_of(middleware)["connects"]) == (0, 0)
    with_db = [Response(app, environ_for("/db")) for _ in range(5)]
    assert {r.body for r in with_db} == {b"1"}
    stats = stats_of(middleware)
    assert (stats["checkouts"], stats["connects"], stats["in_use"]) == (5, 1, 0)
    middleware.pool.close()


def test_lazy_checkout_that_finds_no_connection_answers_503(postgresql):
    pool = Pool(postgresql.url, max_size=1, timeout=0.1)
    app = validator(PoolMiddleware(text_app(lambda environ: query_one(
        environ["db.conn"], "SELECT 1")), pool, lazy=True, retry_after=3))
    held = pool.checkout()
    try:
        busy = Response(app)
    finally:
        pool.checkin(held)
    assert busy.status.startswith("503") and busy.headers["Retry-After"] == "3"
    assert Response(app).body == b"1"
    assert (pool.stats()["timeouts"], pool.stats()["in_use"]) == (1, 0)
    pool.close()


def test_lazy_connection_hands_driver_functions_the_real_connection(postgresql):
    """psycopg2's register_type() and psycopg2.extras check the type of their argument:
    wsgipool.connection(environ) and cursors of the lazy stand-in are the real thing."""
    import psycopg2
    import psycopg2.extensions
    import psycopg2.extras

    def handler(environ):
        lazy = environ["db.conn"]
        real = wsgipool.connection(environ)
        # psycopg2's own connection type (wsgipool's subclass of it only notes writes)
        assert isinstance(real, psycopg2.extensions.connection)
        with pytest.raises(TypeError):  # the stand-in itself is not a psycopg2 connection
            psycopg2.extensions.register_type(psycopg2.extensions.DECIMAL, lazy)
        numeric_as_float = psycopg2.extensions.new_type(
            psycopg2.extensions.DECIMAL.values, "NUMERIC_AS_FLOAT",
            lambda value, cursor: None if value is None else float(value))
        psycopg2.extensions.register_type(numeric_as_float, real)  # this connection only
        cursor = lazy.cursor(cursor_factory=psycopg2.extras.RealDictCursor)
        cursor.execute("CREATE TEMP TABLE lazy_values (n numeric)")
        psycopg2.extras.execute_values(cursor, "INSERT INTO lazy_values VALUES %s",
                                       [(1.5,), (2.25,)])
        cursor.execute("SELECT sum(n) AS total FROM lazy_values")
        total = cursor.fetchone()["total"]
        lazy.rollback()
        return f"{type(total).__name__} {total}"

    middleware = PoolMiddleware(text_app(handler), postgresql.url, lazy=True)
    assert Response(validator(middleware)).body == b"float 3.75"
    middleware.pool.close()


def test_lazy_psycopg3_connection_accepts_adapters_through_the_stand_in(psycopg_postgresql):
    """psycopg 3's adaptation context is an attribute of the connection: it works on the
    lazy stand-in too, scoped to the real connection it checked out."""
    from psycopg.types.json import set_json_loads

    def handler(environ):
        set_json_loads(lambda data: {"parsed": json.loads(data)}, environ["db.conn"])
        cursor = environ["db.conn"].cursor()
        cursor.execute("""SELECT '{"a": 1}'::json""")
        value = cursor.fetchone()[0]
        environ["db.conn"].rollback()
        return json.dumps(value)

    middleware = PoolMiddleware(text_app(handler), psycopg_postgresql.url, lazy=True)
    assert json.loads(Response(validator(middleware)).body) == {"parsed": {"a": 1}}
    middleware.pool.close()


@pytest.mark.parametrize("status", ["200 OK", "500 Internal Server Error"])
def test_transaction_spans_every_database_the_request_took(postgresql, mariadb, status):
    pg_table, maria_table = "wsgipool_two_dbs_pg", "wsgipool_two_dbs_maria"
    for db, table in ((postgresql, pg_table), (mariadb, maria_table)):
        admin = db.admin()
        admin.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        admin.cursor().execute(f"CREATE TABLE {table} (n int)")
        admin.close()

    def app(environ, start_response):
        environ["db.conn"].cursor().execute(f"INSERT INTO {pg_table} VALUES (1)")
        environ["wsgipool.connections"]["reports"].cursor().execute(
            f"INSERT INTO {maria_table} VALUES (1)")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"done"]

    middleware = PoolMiddleware(app, postgresql.url, transaction=True,
                                databases={"reports": mariadb.url})
    assert Response(validator(middleware)).status == status
    expected = 1 if status.startswith("2") else 0
    for db, table in ((postgresql, pg_table), (mariadb, maria_table)):
        admin = db.admin()
        cursor = admin.cursor()
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone()[0] == expected, (db.kind, status)
        cursor.execute(f"DROP TABLE {table}")
        admin.close()
    assert middleware.pools["default"].stats()["rollbacks"] == 0  # ended, not left open
    for pool in middleware.pools.values():
        pool.close()


def test_unclosed_response_discards_every_connection_it_took(sqlite, tmp_path, caplog):
    def handler(environ):
        environ["wsgipool.connections"]["other"].execute("SELECT 1")
        return query_one(environ["db.conn"], "SELECT 2")

    other = f"sqlite:///{tmp_path / 'other.db'}"
    middleware = PoolMiddleware(text_app(handler), sqlite.url, lazy=True,
                                databases={"other": other})
    with caplog.at_level(logging.WARNING, logger="wsgipool.pool"):
        response = Response(middleware, close=False)
        assert response.body == b"2"
        del response
        gc.collect()
        for pool in middleware.pools.values():
            stats = pool.stats()  # reaps what the garbage collector handed over
            assert (stats["in_use"], stats["discard_reasons"]["leaked"]) == (0, 1)
    for pool in middleware.pools.values():
        pool.close()


def test_configure_names_databases_for_a_middleware_without_url(sqlite, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setattr(wsgipool_settings, "_configured", None)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    wsgipool.configure(sqlite.url, databases={"other": other}, max_size=2)
    middleware = PoolMiddleware(text_app(lambda environ: sorted(
        environ["wsgipool.connections"])), stats_path="/_pool")
    assert Response(middleware).body == b"['default', 'other']"
    assert middleware.pools["other"].max_size == 2
    stats = json.loads(Response(middleware, environ_for("/_pool")).body)
    assert len(stats["pools"]) == 2 and "other" in stats["pools"], stats
    for pool in middleware.pools.values():
        pool.close()
