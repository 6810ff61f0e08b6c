"""A test app behind PgBouncer: each request is one transaction that inserts a row and
answers "<worker pid> <client connection id> <server backend pid>".

DATABASE_URL points at PgBouncer; BOUNCER_TABLE names the table. The middleware is the
README's PgBouncer snippet itself, run with its URL replaced by DATABASE_URL.
"""

import os

from wsgipool import PoolMiddleware
from readme import snippet

TABLE = os.environ["BOUNCER_TABLE"]


def inner(environ, start_response):
    conn = environ["db.conn"]
    cursor = conn.cursor()
    cursor.execute(f"INSERT INTO {TABLE} (worker) VALUES (%s)", (os.getpid(),))
    cursor.execute("SELECT pg_backend_pid(), pg_sleep(0.003)")
    backend = cursor.fetchone()[0]
    body = f"{os.getpid()} {id(conn)} {backend}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]  # the middleware commits before this goes out


README_URL = "postgresql://app@pgbouncer-host:6432/test"
namespace = {"PoolMiddleware": PoolMiddleware, "app": inner}
exec(snippet("pgbouncer-app").replace(README_URL, os.environ["DATABASE_URL"]), namespace)
app = namespace["app"]
