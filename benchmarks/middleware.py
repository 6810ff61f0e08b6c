"""Middleware added cost: a request through ``PoolMiddleware`` minus the same app bare.

The yardstick is the smallest correct hand-written equivalent: psycopg2's pool, the
connection put in the environ, and a response iterable whose ``close()`` (PEP 3333's
only hook for "the response is done") closes the app's result and gives the connection
back; ``putconn`` itself rolls back a connection left in a transaction and discards a
closed one. Whatever ``PoolMiddleware`` costs beyond that is its features' price.

Requests are driven in process, as a server would: a fresh copy of a prebuilt environ, a
no-op ``start_response``, the result iterated and closed. No socket, no database round
trip: only the WSGI layer and the pool are timed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from .common import (URLS, Section, Target, connect_args, interleaved, median, paired_ratio,
                     per_op, table)

HEADERS = [("Content-Type", "text/plain"), ("Content-Length", "2")]


def bare_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [b"ok"]


def using_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """An app that touches its connection (a lazy middleware checks one out here)."""
    environ["db.conn"].autocommit
    start_response("200 OK", HEADERS)
    return [b"ok"]


def hand_written(app: Callable, pool: Any) -> Callable:
    """What a careful user writes with psycopg2's pool and no wsgipool."""

    class Closing:
        __slots__ = ("result", "conn")

        def __init__(self, result: Iterable[bytes], conn: Any) -> None:
            self.result, self.conn = result, conn

        def __iter__(self) -> Iterator[bytes]:
            return iter(self.result)

        def close(self) -> None:
            try:
                close = getattr(self.result, "close", None)
                if close is not None:
                    close()
            finally:
                pool.putconn(self.conn)

    def wrapped(environ: dict, start_response: Callable) -> Iterable[bytes]:
        conn = environ["db.conn"] = pool.getconn()
        try:
            return Closing(app(environ, start_response), conn)
        except BaseException:
            pool.putconn(conn)
            raise
    return wrapped


def server(app: Callable) -> Callable[[int], None]:
    """Serve ``n`` requests to ``app`` in process, as a WSGI server would."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SCRIPT_NAME": "",
               "QUERY_STRING": "", "SERVER_NAME": "bench", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "wsgi.multithread": True, "wsgi.multiprocess": True}

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        return None

    def loop(n: int) -> None:
        for _ in range(n):
            result = app(environ.copy(), start_response)
            for _chunk in result:
                pass
            close = getattr(result, "close", None)
            if close is not None:
                close()
    return loop


def run(quick: bool = False) -> Section:
    import psycopg2.pool

    from wsgipool import PoolMiddleware

    n, rounds = (1000, 3) if quick else (5000, 9)
    eager = PoolMiddleware(bare_app, URLS["postgresql"], max_size=4)
    lazy = PoolMiddleware(using_app, URLS["postgresql"], max_size=4, lazy=True)
    untouched = PoolMiddleware(bare_app, URLS["postgresql"], max_size=4, lazy=True)
    # minconn=4: psycopg2's pool closes a returned connection when minconn are idle.
    theirs = psycopg2.pool.ThreadedConnectionPool(4, 4, **connect_args("postgresql"))
    hand = "hand-written: psycopg2 pool + closing iterable"
    hand_using = hand + ", app uses the connection"
    eager_name = "PoolMiddleware"
    lazy_name = "PoolMiddleware(lazy=True), app uses the connection"
    untouched_name = "PoolMiddleware(lazy=True), database untouched"
    loops = {"bare app": server(bare_app), eager_name: server(eager),
             hand: server(hand_written(bare_app, theirs)),
             lazy_name: server(lazy), hand_using: server(hand_written(using_app, theirs)),
             untouched_name: server(untouched)}
    for loop in loops.values():
        loop(200)  # warm up
    results = interleaved({name: per_op(loop, n) for name, loop in loops.items()}, rounds)
    for middleware in (eager, lazy, untouched):
        middleware.pool.close()
    theirs.closeall()
    bare = results["bare app"]
    added = {name: [t - b for t, b in zip(figures, bare)]
             for name, figures in results.items() if name != "bare app"}
    rows = [["bare app", f"{median(bare):.2f}", "", ""]]
    rows += [[name, f"{median(results[name]):.2f}", f"{median(cost):.2f}",
              f"{paired_ratio(cost, added[hand]):.2f}"] for name, cost in added.items()]
    targets = []
    for mode, ours, yardstick in (("eager", eager_name, hand),
                                  ("lazy, connection used", lazy_name, hand_using)):
        ratio = paired_ratio(added[ours], added[yardstick])
        targets.append(Target(
            f"middleware ({mode}) added cost <= 1.0x the hand-written pool + closing "
            "iterable (PostgreSQL)",
            f"PoolMiddleware adds {median(added[ours]):.2f} µs, hand-written "
            f"{median(added[yardstick]):.2f} µs: {ratio:.2f}x", ratio <= 1.0))
    return Section(
        f"### Middleware added cost, PostgreSQL (in process; median of {rounds} interleaved "
        f"rounds of {n} requests)\n\n"
        + table(["stack", "µs per request", "µs added to the bare app",
                 "added cost ÷ hand-written's"], rows),
        targets)
