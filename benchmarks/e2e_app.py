"""The SELECT 1 app for the end-to-end benchmark, in each way of getting a connection.

BENCH_APP picks the way: wsgipool, connect (a new connection per request), threadlocal
(one persistent connection per thread: the ideal, no pool at all), sqlalchemy (its
QueuePool). DATABASE_URL picks the database. Every variant runs the same statements.
"""

import os
import threading

from wsgipool.drivers import make_driver

URL = os.environ["DATABASE_URL"]
WAY = os.environ["BENCH_APP"]
BODY = b"1"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "1")]
connect = make_driver(URL).connect  # the same driver options for every variant


def select_one(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    cursor.close()
    conn.rollback()


def with_pool(environ, start_response):
    select_one(environ["db.conn"])
    start_response("200 OK", HEADERS)
    return [BODY]


def per_request(environ, start_response):
    conn = connect()
    try:
        select_one(conn)
    finally:
        conn.close()
    start_response("200 OK", HEADERS)
    return [BODY]


local = threading.local()


def thread_local(environ, start_response):
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = connect()
    select_one(conn)
    start_response("200 OK", HEADERS)
    return [BODY]


def sqlalchemy_app():
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(connect, pool_size=4, max_overflow=0)

    def app(environ, start_response):
        conn = pool.connect()
        try:
            select_one(conn)
        finally:
            conn.close()
        start_response("200 OK", HEADERS)
        return [BODY]
    return app


if WAY == "wsgipool":
    from wsgipool import PoolMiddleware

    app = PoolMiddleware(with_pool, URL, max_size=4)
elif WAY == "connect":
    app = per_request
elif WAY == "threadlocal":
    app = thread_local
else:
    app = sqlalchemy_app()
