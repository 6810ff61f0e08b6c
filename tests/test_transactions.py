"""transaction=True: one transaction per request, committed only when the request succeeded."""

import pytest
from wsgiref.validate import validator

from test_middleware import Response, environ_for
from wsgipool import PoolMiddleware


@pytest.fixture
def table(db):
    admin = db.admin()
    cursor = admin.cursor()
    cursor.execute("DROP TABLE IF EXISTS wsgipool_tx")
    cursor.execute("CREATE TABLE wsgipool_tx (n INTEGER)")
    admin.commit()
    admin.close()

    def count():
        conn = db.admin()
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM wsgipool_tx")
        (n,) = cur.fetchone()
        conn.close()
        return n

    return count


def inserting(status, body_kind, fail_in_body=False):
    """An app that inserts a row, answers ``status``, with a list or a generator body."""
    def app(environ, start_response):
        environ["db.conn"].cursor().execute("INSERT INTO wsgipool_tx VALUES (1)")
        if body_kind == "list":
            start_response(status, [("Content-Type", "text/plain")])
            return [b"done"]
        return generate(environ, start_response)

    def generate(environ, start_response):
        start_response(status, [("Content-Type", "text/plain")])
        yield b"first "
        environ["db.conn"].cursor().execute("INSERT INTO wsgipool_tx VALUES (2)")
        if fail_in_body:
            raise RuntimeError("the body failed half way")
        yield b"second"

    return app


@pytest.mark.parametrize("body_kind", ["list", "generator"])
@pytest.mark.parametrize("status, kept", [
    pytest.param("200 OK", True, id="200-commits"),
    pytest.param("303 See Other", True, id="303-commits"),
    pytest.param("404 Not Found", False, id="404-rolls-back"),
    pytest.param("500 Internal Server Error", False, id="500-rolls-back"),
])
def test_commit_only_when_the_request_succeeded(db, table, body_kind, status, kept):
    middleware = PoolMiddleware(inserting(status, body_kind), db.url, transaction=True)
    response = Response(validator(middleware))
    assert response.status == status
    rows = 1 if body_kind == "list" else 2
    assert table() == (rows if kept else 0)
    stats = middleware.pool.stats()
    assert stats["rollbacks"] == 0  # ended by the middleware, not repaired by the pool
    assert stats["in_use"] == 0
    middleware.pool.close()


def test_exception_in_the_body_rolls_back(db, table):
    app = inserting("200 OK", "generator", fail_in_body=True)
    middleware = PoolMiddleware(app, db.url, transaction=True)
    with pytest.raises(RuntimeError):
        Response(middleware)
    assert table() == 0
    assert middleware.pool.stats()["in_use"] == 0
    middleware.pool.close()


def test_exception_before_returning_rolls_back(db, table):
    def app(environ, start_response):
        environ["db.conn"].cursor().execute("INSERT INTO wsgipool_tx VALUES (1)")
        raise ValueError("handler bug")

    middleware = PoolMiddleware(app, db.url, transaction=True)
    with pytest.raises(ValueError):
        Response(middleware)
    assert table() == 0
    middleware.pool.close()


@pytest.mark.parametrize("body_kind", ["list", "generator"])
def test_failed_commit_never_reaches_the_client_as_a_success(postgresql, body_kind):
    """A deferred unique constraint fails at COMMIT: the last chunk must not be sent."""
    admin = postgresql.admin()
    with admin.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS wsgipool_deferred")
        cur.execute("CREATE TABLE wsgipool_deferred (n INTEGER UNIQUE DEFERRABLE "
                    "INITIALLY DEFERRED)")
    sent = []

    def app(environ, start_response):
        cur = environ["db.conn"].cursor()
        cur.execute("INSERT INTO wsgipool_deferred VALUES (1), (1)")  # fine until COMMIT
        start_response("200 OK", [("Content-Type", "text/plain")])
        if body_kind == "list":
            return [b"saved"]
        return iter([b"part one ", b"saved"])

    middleware = PoolMiddleware(app, postgresql.url, transaction=True)
    result = middleware(environ_for(), lambda status, headers, exc_info=None: None)
    with pytest.raises(Exception, match="unique"):
        for chunk in result:
            sent.append(chunk)
    result.close()
    assert b"saved" not in sent
    with admin.cursor() as cur:
        cur.execute("SELECT count(*) FROM wsgipool_deferred")
        assert cur.fetchone()[0] == 0
        cur.execute("DROP TABLE wsgipool_deferred")
    admin.close()
    assert middleware.pool.stats()["in_use"] == 0
    middleware.pool.close()
