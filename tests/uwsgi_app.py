"""The uWSGI test app: "<worker pid> <session id>", settings from uWSGI's --env.

It opens a connection at import, as many apps do; without --lazy-apps that happens in
the uWSGI master, before the workers are forked. Its session id goes to MASTER_FILE.
"""

import os

from wsgipool import PoolMiddleware

QUERIES = {"pyformat": "SELECT pg_backend_pid()", "format": "SELECT CONNECTION_ID()"}


def session_id(conn, paramstyle):
    cursor = conn.cursor()
    cursor.execute(QUERIES[paramstyle])
    (sid,) = cursor.fetchone()
    conn.rollback()
    return sid


def sessions(environ, start_response):
    body = f"{os.getpid()} {session_id(environ['db.conn'], environ['wsgipool.pool'].paramstyle)}"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body.encode()]


app = PoolMiddleware(sessions, max_size=int(os.environ.get("POOL_MAX_SIZE", "3")))

with app.pool.connection() as _conn:
    _sid = session_id(_conn, app.pool.paramstyle)
with open(os.environ["MASTER_FILE"], "a") as _file:
    _file.write(f"{os.getpid()} {_sid}\n")
