"""A test app answering "<worker pid> <server session id>"; settings from the config.

OPEN_AT_IMPORT=1: check a connection out at import (in the master, under preload_app)
and write its session id to MASTER_SESSION_FILE. PLAIN=1: export the bare app, for a
config that wraps it (configure(wrap_app=True)).
"""

import os

from wsgipool import PoolMiddleware

QUERIES = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def session_id(conn):
    cursor = conn.cursor()
    scheme = os.environ["DATABASE_URL"].split(":", 1)[0]
    cursor.execute(QUERIES[scheme])
    (sid,) = cursor.fetchone()
    conn.rollback()
    return sid


def sessions(environ, start_response):
    body = f"{os.getpid()} {session_id(environ['db.conn'])}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = sessions if os.environ.get("PLAIN") else PoolMiddleware(sessions)

if os.environ.get("OPEN_AT_IMPORT"):
    with app.pool.connection() as conn:
        master_sid = session_id(conn)
    with open(os.environ["MASTER_SESSION_FILE"], "w") as handle:
        handle.write(str(master_sid))
