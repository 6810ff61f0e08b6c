"""The app of the overload benchmark: a request takes a connection, runs ``SELECT 1`` and
holds the connection 5 ms more (a cooperative sleep under gevent), on psycopg 3.

Environment: ``OVERLOAD_WAY`` (``wsgipool``, ``psycopg_pool``, ``sqlalchemy``),
``DATABASE_URL`` (``postgresql://``), ``OVERLOAD_TIMEOUT`` (seconds a checkout waits),
``OVERLOAD_MAX_WAITING`` (empty: no bound), ``OVERLOAD_MAX_SIZE`` (default 4),
``OVERLOAD_PACE`` (wsgipool's ``pace_refusals``; empty: its default). A peer that
cannot get a connection answers what wsgipool's middleware answers: 503 with
``Retry-After: 1``.
"""

import os
import time

URL = os.environ["DATABASE_URL"]
WAY = os.environ["OVERLOAD_WAY"]
TIMEOUT = float(os.environ.get("OVERLOAD_TIMEOUT", "10"))
MAX_WAITING = int(os.environ["OVERLOAD_MAX_WAITING"]) if os.environ.get(
    "OVERLOAD_MAX_WAITING") else None
MAX_SIZE = int(os.environ.get("OVERLOAD_MAX_SIZE", "4"))
HOLD = 0.005  # seconds each request holds its connection after its query
BODY = b"1"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]
UNAVAILABLE = b"503 Service Unavailable: no database connection could be had.\n"
UNAVAILABLE_HEADERS = [("Content-Type", "text/plain; charset=utf-8"),
                       ("Content-Length", str(len(UNAVAILABLE))), ("Retry-After", "1"),
                       ("Cache-Control", "no-store")]


def work(conn):
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    cursor.close()
    conn.rollback()
    time.sleep(HOLD)


def ok(start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def unavailable(start_response):
    start_response("503 Service Unavailable", UNAVAILABLE_HEADERS)
    return [UNAVAILABLE]


def plain_url():
    return URL.replace("postgresql+psycopg://", "postgresql://", 1)


if WAY == "wsgipool":
    from wsgipool import PoolMiddleware

    def handler(environ, start_response):
        work(environ["db.conn"])
        return ok(start_response)

    options = {"max_waiting": MAX_WAITING} if MAX_WAITING is not None else {}
    if os.environ.get("OVERLOAD_PACE"):
        options["pace_refusals"] = float(os.environ["OVERLOAD_PACE"])
    app = PoolMiddleware(handler, URL.replace("postgresql://", "postgresql+psycopg://", 1),
                         max_size=MAX_SIZE, min_size=MAX_SIZE, timeout=TIMEOUT, **options)
elif WAY == "psycopg_pool":
    from psycopg_pool import ConnectionPool, PoolTimeout, TooManyRequests

    pool = ConnectionPool(plain_url(), min_size=MAX_SIZE, max_size=MAX_SIZE,
                          timeout=TIMEOUT, max_waiting=MAX_WAITING or 0, open=True)

    def app(environ, start_response):
        try:
            conn = pool.getconn()
        except (PoolTimeout, TooManyRequests):  # waited too long; too many waiting
            return unavailable(start_response)
        try:
            work(conn)
        finally:
            pool.putconn(conn)
        return ok(start_response)
elif WAY == "sqlalchemy":
    import psycopg
    from sqlalchemy.exc import TimeoutError as QueueTimeout
    from sqlalchemy.pool import QueuePool

    pool = QueuePool(lambda: psycopg.connect(plain_url()), pool_size=MAX_SIZE,
                     max_overflow=0, timeout=TIMEOUT)

    def app(environ, start_response):
        try:
            conn = pool.connect()
        except QueueTimeout:
            return unavailable(start_response)
        try:
            work(conn)
        finally:
            conn.close()
        return ok(start_response)
else:
    raise SystemExit(f"unknown OVERLOAD_WAY {WAY!r}")
