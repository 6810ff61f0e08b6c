"""The app every Apache test serves: "<pid> <server session id>" for each request.

``PoolMiddleware(inner)`` names no URL: Apache's configuration does (``SetEnv`` for
mod_wsgi, a server-level ``PythonOption`` for mod_python), as the README shows.
"""

import os
import time

from wsgipool import PoolMiddleware

QUERIES = {"pyformat": "SELECT pg_backend_pid()", "format": "SELECT CONNECTION_ID()"}


def inner(environ, start_response):
    conn = environ["db.conn"]
    cursor = conn.cursor()
    cursor.execute(QUERIES[environ["wsgipool.pool"].paramstyle])
    (sid,) = cursor.fetchone()
    conn.rollback()
    time.sleep(0.002)  # overlap concurrent requests, so the bound is tested
    body = f"{os.getpid()} {sid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


application = PoolMiddleware(inner)
