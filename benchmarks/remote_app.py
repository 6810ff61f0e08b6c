"""The read-one-row app of the remote-database benchmark, with each pool as its users set it up.

Environment: ``BENCH_WAY`` picks the pool, ``DATABASE_URL`` the database (here: through
the latency proxy), ``BENCH_POOL_SIZE`` the connections per process (default 4, gunicorn's
threads). Every way runs the same handler code on the same driver (psycopg2 or
mysqlclient; psycopg 3 for psycopg_pool, and for wsgipool beside it) and leaves the
transaction it opened to the pool, as a read-only handler commonly does:

- ``wsgipool``: ``PoolMiddleware(app, url, max_size=4)``, the documented way;
  ``wsgipool-ping``: the same with ``pre_ping=True`` (a check on every checkout, as the
  peers' pings below);
- ``sqlalchemy``: ``create_engine(url, pool_size=4, max_overflow=0)`` (QueuePool, its
  default ``reset_on_return="rollback"``), the DB-API connection from
  ``engine.raw_connection()``; ``sqlalchemy-ping``: the same with ``pool_pre_ping=True``,
  as users commonly set it (the dialect's ping: ``SELECT 1`` in autocommit on
  PostgreSQL, ``COM_PING`` on MariaDB);
- ``dbutils``: ``PooledDB(driver, maxconnections=4, blocking=True, ...)``, otherwise its
  defaults (``reset=True``: a rollback on return; ``ping=1``: the driver's ``ping()``
  when a connection is taken, which psycopg2 does not have);
- ``psycopg_pool``: ``ConnectionPool(conninfo, min_size=4)`` and
  ``with pool.connection() as conn:`` (commits on leaving the block), its default
  ``check=None``; ``psycopg_pool-check``: ``check=ConnectionPool.check_connection``.
"""

import os

from wsgipool.urls import parse_url

URL = os.environ["DATABASE_URL"]
WAY = os.environ["BENCH_WAY"]
SIZE = int(os.environ.get("BENCH_POOL_SIZE", "4"))
TABLE = os.environ.get("BENCH_TABLE", "remote_items")
BODY_TYPE = [("Content-Type", "text/plain; charset=utf-8")]
POSTGRESQL = parse_url(URL).scheme.startswith("postgres")


def read_row(conn):
    """The handler's work: one row by primary key."""
    cursor = conn.cursor()
    cursor.execute(f"SELECT name FROM {TABLE} WHERE id = %s", (1,))
    (name,) = cursor.fetchone()
    cursor.close()
    return name


def respond(start_response, name):
    body = name.encode() + b"\n"
    start_response("200 OK", BODY_TYPE + [("Content-Length", str(len(body)))])
    return [body]


def _driver_args():
    url = parse_url(URL)
    database = "dbname" if POSTGRESQL else "database"
    args = {"host": url.host, "port": url.port, "user": url.username,
            "password": url.password, database: url.path.lstrip("/") or None}
    return {key: value for key, value in args.items() if value is not None}


def _with_scheme(scheme):
    """``URL`` with another scheme (the rest reads the same to wsgipool and SQLAlchemy)."""
    return scheme + "://" + URL.split("://", 1)[1]


def wsgipool_app(url, **options):
    from wsgipool import PoolMiddleware

    def handler(environ, start_response):
        return respond(start_response, read_row(environ["db.conn"]))
    return PoolMiddleware(handler, url, max_size=SIZE, **options)


def sqlalchemy_app(pre_ping):
    from sqlalchemy import create_engine

    scheme = "postgresql+psycopg2" if POSTGRESQL else "mysql+mysqldb"
    engine = create_engine(_with_scheme(scheme), pool_size=SIZE, max_overflow=0,
                           pool_pre_ping=pre_ping)
    return _borrowing_app(engine.raw_connection)


def _borrowing_app(borrow):
    """An app that borrows a connection from a peer's pool, reads the row, and gives it
    back with ``close()`` (rolled back by the pool)."""
    def app(environ, start_response):
        conn = borrow()
        try:
            name = read_row(conn)
        finally:
            conn.close()
        return respond(start_response, name)
    return app


def dbutils_app():
    from dbutils.pooled_db import PooledDB

    if POSTGRESQL:
        import psycopg2 as driver
    else:
        import MySQLdb as driver
    pool = PooledDB(driver, maxconnections=SIZE, blocking=True, **_driver_args())
    return _borrowing_app(pool.connection)


def psycopg_pool_app(check):
    from psycopg_pool import ConnectionPool

    args = _driver_args()
    conninfo = " ".join(f"{key}={value}" for key, value in args.items())
    pool = ConnectionPool(conninfo, min_size=SIZE, open=True,
                          check=ConnectionPool.check_connection if check else None)

    def app(environ, start_response):
        with pool.connection() as conn:
            name = read_row(conn)
        return respond(start_response, name)
    return app


if WAY == "wsgipool":
    app = wsgipool_app(URL)
elif WAY == "wsgipool-ping":
    app = wsgipool_app(URL, pre_ping=True)
elif WAY == "wsgipool-psycopg3":
    app = wsgipool_app(_with_scheme("postgresql+psycopg"))
elif WAY == "sqlalchemy":
    app = sqlalchemy_app(pre_ping=False)
elif WAY == "sqlalchemy-ping":
    app = sqlalchemy_app(pre_ping=True)
elif WAY == "dbutils":
    app = dbutils_app()
elif WAY == "psycopg_pool":
    app = psycopg_pool_app(check=False)
elif WAY == "psycopg_pool-check":
    app = psycopg_pool_app(check=True)
else:
    raise SystemExit(f"unknown BENCH_WAY {WAY!r}")
