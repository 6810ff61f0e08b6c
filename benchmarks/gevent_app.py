"""The handler of ``benchmarks/gevent_drivers.py``: hold a pooled connection 5 ms in the
database (``pg_sleep`` / ``SLEEP``), as the issue's overload scenario does."""

import os

from wsgipool import PoolMiddleware

URL = os.environ["DATABASE_URL"]
SLEEP = "SELECT SLEEP(0.005)" if URL.startswith("mysql") else "SELECT pg_sleep(0.005)"
BODY = b"1"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def handler(environ, start_response):
    cursor = environ["db.conn"].cursor()
    cursor.execute(SLEEP)
    cursor.fetchall()
    cursor.close()
    start_response("200 OK", HEADERS)
    return [BODY]


app = PoolMiddleware(handler, URL, max_size=int(os.environ.get("POOL_MAX_SIZE", "4")))
