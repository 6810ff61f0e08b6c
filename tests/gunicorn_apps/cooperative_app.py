"""A handler that waits in the database, for the gevent tests (tests/test_cooperative.py).

``GET /sleep`` runs one 0.2 s sleep on the server, marked with ``COOP_MARKER`` (in the
statement for MariaDB; PostgreSQL sees it as the URL's application_name);
``GET /callback`` says which wait callback psycopg2 has in this worker.
"""

import os

from wsgipool import PoolMiddleware

SCHEME = os.environ["DATABASE_URL"].split(":", 1)[0]
MARKER = os.environ.get("COOP_MARKER", "coop")
SLEEP = (f"SELECT /* {MARKER} */ SLEEP(0.2)" if SCHEME.startswith("mysql")
         else "SELECT pg_sleep(0.2)")


def handler(environ, start_response):
    if environ["PATH_INFO"] == "/callback":
        from psycopg2 import extensions

        callback = extensions.get_wait_callback()
        body = repr(getattr(callback, "__module__", None)).encode()
    else:
        cursor = environ["db.conn"].cursor()
        cursor.execute(SLEEP)
        cursor.fetchall()
        cursor.close()
        body = f"{os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = PoolMiddleware(handler)
