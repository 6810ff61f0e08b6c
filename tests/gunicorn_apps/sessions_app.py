"""A test app answering "<worker pid> <server session id>"; the database comes from the config.

``PoolMiddleware(inner)`` names no URL: the options come from the gunicorn config
(``wsgipool.gunicorn.configure``) and the URL from ``DATABASE_URL``.

OPEN_AT_IMPORT=1: check a connection out at import and run a query on it. Under
``preload_app`` that happens in the master, before the fork, so the workers inherit a
pool holding an open connection; its session id is written to MASTER_SESSION_FILE.
"""

import os
import time

from wsgipool import PoolMiddleware

# The server's id for the session behind a connection, by the driver's paramstyle.
QUERIES = {"pyformat": "SELECT pg_backend_pid()", "format": "SELECT CONNECTION_ID()"}


def session_id(conn, paramstyle):
    cursor = conn.cursor()
    cursor.execute(QUERIES[paramstyle])
    (sid,) = cursor.fetchone()
    cursor.close()
    conn.rollback()  # end our transaction: the pool gets the connection back clean
    return sid


def inner(environ, start_response):
    sid = session_id(environ["db.conn"], environ["wsgipool.pool"].paramstyle)
    # Hold the connection a moment (a yield under gevent), so concurrent requests
    # overlap and the pool's bound is tested in every worker class.
    time.sleep(0.002)
    body = f"{os.getpid()} {sid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = PoolMiddleware(inner)


def master_session():
    """Check a connection out of this process's pool; (its session id, connects so far)."""
    with app.pool.connection() as conn:
        sid = session_id(conn, app.pool.paramstyle)
    return sid, app.pool.stats()["connects"]


if os.environ.get("OPEN_AT_IMPORT") == "1":
    master_sid, _ = master_session()
    with open(os.environ["MASTER_SESSION_FILE"], "w") as handle:
        handle.write(f"{os.getpid()} {master_sid}")
