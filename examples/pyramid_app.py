"""The guestbook on Pyramid, with wsgipool underneath: the connection is ``request.db``.

Run it (SQLite in the working directory unless DATABASE_URL says otherwise)::

    gunicorn --chdir examples pyramid_app:app

``config.add_request_method(wsgipool.webob.db, "db", reify=True)`` gives every request
its pooled connection as ``request.db``; the WSGI app Pyramid makes is then wrapped.
"""

import datetime
import html
import os

from pyramid.config import Configurator
from pyramid.httpexceptions import HTTPSeeOther
from pyramid.response import Response

import wsgipool.webob
from wsgipool import PoolMiddleware

TABLE = os.environ.get("GUESTBOOK_TABLE", "guestbook")
DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///pyramid_guestbook.db")


def mark(request):
    return "?" if request.environ["wsgipool.pool"].paramstyle == "qmark" else "%s"


def show(request):
    cursor = request.db.cursor()
    cursor.execute(f"SELECT name, message FROM {TABLE} ORDER BY created_at DESC LIMIT 50")
    rows = cursor.fetchall()
    request.db.rollback()  # end the read transaction
    stats = request.environ["wsgipool.pool"].stats()
    items = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(message)}</li>"
                    for name, message in rows)
    return Response(
        "<!doctype html><title>Guestbook (Pyramid)</title><h1>Guestbook</h1>"
        '<form method="post" action="/sign"><input name="name" required>'
        '<input name="message" required><button>Sign</button></form>'
        f"<ul>{items}</ul><p>{stats['checkouts']} requests served by "
        f"{stats['connects']} connection(s) in pid {os.getpid()}.</p>")


def sign(request):
    name = request.POST.get("name", "").strip()[:100]
    message = request.POST.get("message", "").strip()[:500]
    if not name or not message:
        return Response("Please give a name and a message.\n", status=400)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds")
    m = mark(request)
    request.db.cursor().execute(
        f"INSERT INTO {TABLE} (name, message, created_at) VALUES ({m}, {m}, {m})",
        (name, message, now))
    request.db.commit()
    return HTTPSeeOther(location="/")


def stats(request):
    return dict(pid=os.getpid(), **request.environ["wsgipool.pool"].stats())


def make_app():
    with Configurator() as config:
        config.add_request_method(wsgipool.webob.db, "db", reify=True)
        config.add_route("show", "/", request_method="GET")
        config.add_route("sign", "/sign", request_method="POST")
        config.add_route("stats", "/stats", request_method="GET")
        config.add_view(show, route_name="show")
        config.add_view(sign, route_name="sign")
        config.add_view(stats, route_name="stats", renderer="json")
        return PoolMiddleware(config.make_wsgi_app(), DATABASE_URL)


app = make_app()


def create_table():
    with app.pool.connection() as conn:
        try:
            conn.cursor().execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR(100) NOT NULL, "
                "message VARCHAR(500) NOT NULL, created_at VARCHAR(32) NOT NULL)")
            conn.commit()
        except Exception:  # another worker created it at the same moment
            conn.rollback()


create_table()
