"""Two handlers that leave their transaction open: one only read, one wrote."""

from wsgipool import PoolMiddleware


def handler(environ, start_response):
    cursor = environ["db.conn"].cursor()
    if environ["PATH_INFO"] == "/write":
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS quiet_app (i int)")
        cursor.execute("INSERT INTO quiet_app VALUES (1)")  # and no commit: a bug
    else:
        cursor.execute("SELECT 1")  # plain DB-API reading: psycopg2 opened a transaction
        cursor.fetchall()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]


app = PoolMiddleware(handler)
