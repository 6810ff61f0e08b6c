"""environ_key=: the helpers that find the request's connection look where the
middleware put it, not in "db.conn"."""

from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import PoolMiddleware

from test_middleware import Response, query_one, text_app

webob = pytest.importorskip("webob", reason="pip install WebOb")
import wsgipool.webob  # noqa: E402  (after the skip: WebOb may be missing)


@pytest.mark.parametrize("lazy, databases", [
    pytest.param(False, False, id="eager"),
    pytest.param(True, False, id="lazy"),
    pytest.param(False, True, id="eager-named-databases"),
])
def test_connection_helpers_follow_a_custom_environ_key(sqlite, tmp_path, lazy, databases):
    """environ_key="db": wsgipool.connection(environ) and WebOb's request.db find the
    connection there, with no "db.conn" in the environ."""
    def handler(environ):
        real = wsgipool.connection(environ)
        request = wsgipool.webob.Request(environ)
        assert "db.conn" not in environ
        assert request.db is real and wsgipool.webob.db(webob.Request(environ)) is real
        assert environ["db"] is real or environ["db"].cursor.__self__ is real  # lazy stand-in
        return query_one(real, "SELECT 3")

    other = {"other": f"sqlite:///{tmp_path / 'other.db'}"} if databases else None
    middleware = PoolMiddleware(text_app(handler), sqlite.url, environ_key="db", lazy=lazy,
                                databases=other)
    try:
        response = Response(validator(middleware))
        assert (response.status, response.body) == ("200 OK", b"3")
        assert middleware.pool.stats()["checkouts"] == 1
    finally:
        for pool in middleware.pools.values():
            pool.close()
