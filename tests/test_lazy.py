"""lazy=True: the stand-in in environ["db.conn"] behaves like one connection per request,
whatever threads of the request touch it, and leaves no garbage behind."""

import gc
import sqlite3
import threading
import weakref
from wsgiref.validate import validator

import pytest

import wsgipool
from wsgipool import PoolMiddleware

from test_middleware import Response, environ_for, query_one, text_app

THREADS = 8


def test_threads_of_one_request_share_one_connection(db):
    """Eight threads of one request reach for the connection at the same instant; they
    all get the same one, and it goes back with the response."""
    def handler(environ):
        start = threading.Barrier(THREADS)
        got = []

        def touch(index):
            start.wait(timeout=10)
            if index % 2:
                got.append(wsgipool.connection(environ))
            else:  # through the stand-in: a method of the real connection
                got.append(environ["db.conn"].cursor.__self__)

        threads = [threading.Thread(target=touch, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in threads)
        environ["db.conn"].rollback()
        return len({id(conn) for conn in got})

    middleware = PoolMiddleware(text_app(handler), db.url, lazy=True, max_size=THREADS)
    try:
        responses = [Response(validator(middleware)) for _ in range(3)]
        stats = middleware.pool.stats()
        # body: how many distinct connections the request's threads saw
        assert ([r.body for r in responses], stats["checkouts"], stats["in_use"]) == \
            ([b"1"] * 3, 3, 0)
    finally:
        middleware.pool.close()


@pytest.mark.parametrize("kind, attribute, value", [
    pytest.param("sqlite", "row_factory", sqlite3.Row, id="sqlite-row_factory"),
    pytest.param("postgresql", "autocommit", True, id="psycopg2-autocommit"),
    pytest.param("psycopg", "autocommit", True, id="psycopg-autocommit"),
])
def test_setting_an_attribute_on_the_stand_in_sets_it_on_the_connection(
        request, kind, attribute, value):
    fixture = {"psycopg": "psycopg_postgresql"}.get(kind, kind)
    db = request.getfixturevalue(fixture)

    def handler(environ):
        setattr(environ["db.conn"], attribute, value)
        real = wsgipool.connection(environ)
        assert getattr(real, attribute) is value
        assert getattr(environ["db.conn"], attribute) is value
        cursor = environ["db.conn"].cursor()
        cursor.execute("SELECT 5 AS five")
        row = cursor.fetchone()
        # sqlite3.Row answers by name; under autocommit no transaction is left open.
        answer = row["five"] if kind == "sqlite" else real.info.transaction_status \
            if kind == "psycopg" else real.get_transaction_status()
        setattr(environ["db.conn"], attribute, None if kind == "sqlite" else False)
        return answer

    middleware = PoolMiddleware(text_app(handler), db.url, lazy=True)
    try:
        response = Response(validator(middleware))
        assert response.status == "200 OK"
        assert response.body == (b"5" if kind == "sqlite" else b"0")  # 0: idle, no BEGIN
        assert middleware.pool.stats()["checkouts"] == 1
    finally:
        middleware.pool.close()


def test_stand_in_keeps_its_own_slots(sqlite):
    """Only the stand-in's own two slots stay its own: every other name is forwarded."""
    def handler(environ):
        with pytest.raises(AttributeError):
            environ["db.conn"].no_such_thing = 1  # sqlite3.Connection refuses it too
        return environ["db.conn"].total_changes

    middleware = PoolMiddleware(text_app(handler), sqlite.url, lazy=True)
    try:
        assert Response(validator(middleware)).body == b"0"
    finally:
        middleware.pool.close()


class Probe:
    """Something the app keeps in the environ; it should die with the request."""


@pytest.mark.parametrize("touch, databases", [
    pytest.param(False, False, id="lazy-untouched"),
    pytest.param(True, False, id="lazy-used"),
    pytest.param(True, True, id="named-databases"),
])
def test_request_environ_is_freed_without_the_cyclic_collector(sqlite, tmp_path, touch,
                                                               databases):
    """With gc disabled, a request's environ goes as soon as the server drops it: no
    reference cycle runs through the stand-in or the request's connections."""
    def handler(environ):
        environ["test.probe"] = Probe()
        return query_one(environ["db.conn"], "SELECT 1") if touch else "static"

    other = {"other": f"sqlite:///{tmp_path / 'other.db'}"} if databases else None
    middleware = PoolMiddleware(text_app(handler), sqlite.url, lazy=not databases,
                                databases=other)
    gc.collect()
    gc.disable()
    try:
        response = Response(middleware, environ_for("/"))
        probe = weakref.ref(response.environ["test.probe"])
        assert response.body == (b"1" if touch else b"static")
        del response
        alive = probe() is not None
    finally:
        gc.enable()
        for pool in middleware.pools.values():
            pool.close()
    assert not alive, "the environ outlived its request (a reference cycle)"
