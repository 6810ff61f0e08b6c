"""A plain WSGI app that knows nothing of wsgipool: it only reads environ["db.conn"].

Served with ``configure(..., wrap_app=True)``, the config alone gives it its pool.
"""

import os

QUERIES = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
QUERY = QUERIES[os.environ["DATABASE_URL"].split(":", 1)[0]]


def app(environ, start_response):
    conn = environ["db.conn"]
    cursor = conn.cursor()
    cursor.execute(QUERY)
    (sid,) = cursor.fetchone()
    cursor.close()
    conn.rollback()
    body = f"{os.getpid()} {sid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
