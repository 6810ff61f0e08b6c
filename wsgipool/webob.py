"""WebOb (and Pyramid): the request's connection as ``request.db``.

::

    from wsgipool.webob import Request      # a webob.Request with .db
    request = Request(environ)
    cursor = request.db.cursor()

    # Pyramid: the same on its own request objects
    config.add_request_method(wsgipool.webob.db, "db", reify=True)

``request.db`` is the driver's own connection (checked out now under ``lazy=True``);
``request.databases["reports"]`` reaches a named database.
"""

from __future__ import annotations

from typing import Any

import webob

from .request import CONNECTIONS_KEY, connection


def db(request: Any) -> Any:
    """The request's connection: for ``add_request_method(db, "db", reify=True)``.

    :param request: a WebOb or Pyramid request inside :class:`~wsgipool.PoolMiddleware`.
    :returns: the driver's connection (see :func:`wsgipool.connection`).
    :raises LookupError: the request went through no :class:`~wsgipool.PoolMiddleware`.
    """
    return connection(request.environ)


def databases(request: Any) -> Any:
    """The request's connections by database name (``environ["wsgipool.connections"]``).

    :param request: a WebOb or Pyramid request.
    :returns: a read-only mapping; indexing it checks a connection out on first use.
    :raises LookupError: the middleware has no ``databases`` and no ``lazy=True``.
    """
    try:
        return request.environ[CONNECTIONS_KEY]
    except KeyError:
        raise LookupError("no named databases: give PoolMiddleware databases={...} "
                          "or lazy=True") from None


class Request(webob.Request):
    """A ``webob.Request`` whose ``db`` is the request's pooled connection::

        from webob.dec import wsgify
        from wsgipool.webob import Request

        @wsgify(RequestClass=Request)
        def hello(request):
            cursor = request.db.cursor()
            cursor.execute("SELECT 'hello'")
            return cursor.fetchone()[0]

    ``databases`` is :func:`databases` of the request.
    """

    db = property(db)
    databases = property(databases)
