"""A uWSGI app that opens nothing at import: its pool is checked when each worker boots."""

from wsgipool import PoolMiddleware


def hello(environ, start_response):
    cursor = environ["db.conn"].cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


app = PoolMiddleware(hello)
