"""Middleware added cost: a request through PoolMiddleware, minus the same app bare.

Compared with the smallest correct hand-written equivalent: psycopg2's pool and a
response iterable whose ``close()`` returns the connection (PEP 3333's only hook for it).
Requests are driven in process with a prebuilt environ, so only the WSGI layer is timed.
"""

from .common import PG, POSTGRESQL_URL, interleaved, median, per_op, ratio, table


def bare_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def hand_written(app, pool):
    """What a careful user writes without wsgipool."""
    class Closing:
        def __init__(self, result, conn):
            self.result, self.conn = result, conn

        def __iter__(self):
            return iter(self.result)

        def close(self):
            try:
                if hasattr(self.result, "close"):
                    self.result.close()
            finally:
                if self.conn.info.transaction_status:
                    self.conn.rollback()
                pool.putconn(self.conn)

    def wrapped(environ, start_response):
        conn = environ["db.conn"] = pool.getconn()
        try:
            return Closing(app(environ, start_response), conn)
        except BaseException:
            pool.putconn(conn)
            raise
    return wrapped


def driver(app):
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
               "QUERY_STRING": "", "SERVER_NAME": "bench", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http"}

    def start_response(status, headers, exc_info=None):
        return None

    def loop(n):
        for _ in range(n):
            result = app(dict(environ), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return loop


def run(quick=False):
    import psycopg2.pool

    from wsgipool import PoolMiddleware

    n, rounds = (2000, 3) if quick else (5000, 9)
    ours = PoolMiddleware(bare_app, POSTGRESQL_URL, max_size=4)
    theirs_pool = psycopg2.pool.ThreadedConnectionPool(1, 4, **PG)
    loops = {"bare app": driver(bare_app), "PoolMiddleware": driver(ours),
             "hand-written psycopg2 pool + closing iterable":
                 driver(hand_written(bare_app, theirs_pool))}
    for loop in loops.values():
        loop(200)
    results = interleaved({name: per_op(loop, n) for name, loop in loops.items()}, rounds)
    bare = results["bare app"]
    added = {name: [t - b for t, b in zip(figures, bare)] for name, figures in results.items()
             if name != "bare app"}
    mine = added["PoolMiddleware"]
    rows = [[name, f"{median(results[name]):.2f}", f"{median(cost):.2f}",
             f"{ratio(mine, cost):.2f}"] for name, cost in added.items()]
    ours.pool.close()
    theirs_pool.closeall()
    return (f"### Middleware added cost, PostgreSQL (median of {rounds} interleaved rounds of "
            f"{n}; bare app {median(bare):.2f} µs per request)\n\n"
            + table(["stack", "µs per request", "µs added to the bare app",
                     "their cost / ours"], rows))
