"""Holds its connection as long as asked (``/?hold_ms=N``) and answers ``<turn> <session>``:
``turn`` counts the requests in the order they got their connection."""

import itertools
import os
import time
from urllib.parse import parse_qs

from wsgipool import PoolMiddleware

QUERIES = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
QUERY = QUERIES[os.environ["DATABASE_URL"].split(":", 1)[0]]
_turns = itertools.count(1)


def holding(environ, start_response):
    turn = next(_turns)  # the connection is in hand: this is the order of service
    conn = environ["db.conn"]
    cursor = conn.cursor()
    cursor.execute(QUERY)
    (sid,) = cursor.fetchone()
    cursor.close()
    conn.rollback()
    hold_ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("hold_ms", ["0"])[0])
    time.sleep(hold_ms / 1000)
    body = f"{turn} {sid}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


app = PoolMiddleware(holding)
