"""The SELECT 1 app of the end-to-end benchmark, with each way of getting a connection.

Environment: ``BENCH_WAY`` picks the way (``wsgipool``, ``connect`` a new connection per
request, ``threadlocal`` one persistent connection per thread, the ideal: no pool at
all; ``sqlalchemy`` its QueuePool), ``DATABASE_URL`` the database. Every way runs the
same statements on the same driver; only wsgipool uses its own connection subclass on
MariaDB (that is part of its cost).
"""

import os
import threading

from wsgipool.urls import parse_url

URL = os.environ["DATABASE_URL"]
WAY = os.environ["BENCH_WAY"]
BODY = b"1"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def _plain_connect():
    url = parse_url(URL)
    if url.scheme.startswith("postgres"):
        import psycopg2 as module

        database = "dbname"
    else:
        import MySQLdb as module

        database = "database"
    args = {"host": url.host, "port": url.port, "user": url.username,
            "password": url.password, database: url.path.lstrip("/") or None}
    args = {key: value for key, value in args.items() if value is not None}
    return lambda: module.connect(**args)


connect = _plain_connect()


def select_one(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    cursor.close()
    conn.rollback()  # end the transaction, as a correct read-only handler does


def respond(start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def with_pool(environ, start_response):
    select_one(environ["db.conn"])
    return respond(start_response)


def per_request(environ, start_response):
    conn = connect()
    try:
        select_one(conn)
    finally:
        conn.close()
    return respond(start_response)


local = threading.local()


def thread_local(environ, start_response):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = connect()
    select_one(conn)
    return respond(start_response)


def sqlalchemy_app():
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(connect, pool_size=4, max_overflow=0)  # default reset_on_return

    def app(environ, start_response):
        conn = pool.connect()
        try:
            select_one(conn)
        finally:
            conn.close()
        return respond(start_response)
    return app


if WAY == "wsgipool":
    from wsgipool import PoolMiddleware

    app = PoolMiddleware(with_pool, URL, max_size=4)
elif WAY == "connect":
    app = per_request
elif WAY == "threadlocal":
    app = thread_local
elif WAY == "sqlalchemy":
    app = sqlalchemy_app()
else:
    raise SystemExit(f"unknown BENCH_WAY {WAY!r}")
