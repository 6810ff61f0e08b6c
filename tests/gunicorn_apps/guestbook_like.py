"""A tiny app that holds its connection a known time (50 ms), for access log tests."""

import time

from wsgipool import PoolMiddleware


def hold(environ, start_response):
    environ["db.conn"].execute("SELECT 1").fetchall()  # sqlite3's shortcut
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


app = PoolMiddleware(hold)
