"""Pool cycle: check out an idle connection and give it back, one thread, nothing else.

This is the price every request pays on top of its own queries. The peers are used the
way their documentation shows; the deque and lock is the floor no pool can go below.
For MariaDB it also counts what each cycle sends to the server (statements and pings):
a pool that rolls back or pings on every return pays a network round trip for it.
"""

import collections
import threading

from .common import MY, MYSQL_URL, PG, POSTGRESQL_URL, interleaved, median, per_op, ratio, table


def deque_and_lock(connect):
    idle, lock = collections.deque([connect()]), threading.Lock()

    def loop(n):
        for _ in range(n):
            with lock:
                conn = idle.pop()
            with lock:
                idle.append(conn)
    return loop


def contenders(kind):
    """name -> (loop, close) for every pool that speaks to this database."""
    from dbutils.pooled_db import PooledDB
    from sqlalchemy.pool import QueuePool

    from wsgipool import Pool

    if kind == "postgresql":
        import psycopg2
        import psycopg2.pool

        module, url, args = psycopg2, POSTGRESQL_URL, PG
    else:
        import MySQLdb

        module, url, args = MySQLdb, MYSQL_URL, MY
    found = {}

    ours = Pool(url, max_size=4)

    def wsgipool_loop(n, checkout=ours.checkout, checkin=ours.checkin):
        for _ in range(n):
            checkin(checkout())
    found["wsgipool"] = (wsgipool_loop, ours.close)

    def wsgipool_with(n, connection=ours.connection):
        for _ in range(n):
            with connection():
                pass
    found["wsgipool (with pool.connection())"] = (wsgipool_with, lambda: None)

    if kind == "postgresql":
        threaded = psycopg2.pool.ThreadedConnectionPool(1, 4, **args)

        def psycopg2_loop(n, get=threaded.getconn, put=threaded.putconn):
            for _ in range(n):
                put(get())
        found["psycopg2 ThreadedConnectionPool"] = (psycopg2_loop, threaded.closeall)

        from psycopg_pool import ConnectionPool

        psycopg3 = ConnectionPool("host=127.0.0.1 user=postgres dbname=test", min_size=1,
                                  max_size=4, open=True)
        psycopg3.wait()

        def psycopg_pool_loop(n, get=psycopg3.getconn, put=psycopg3.putconn):
            for _ in range(n):
                put(get())
        found["psycopg_pool (psycopg 3)"] = (psycopg_pool_loop, psycopg3.close)

    queue = QueuePool(lambda: module.connect(**args), pool_size=4, max_overflow=0)

    def sqlalchemy_loop(n, connect=queue.connect):
        for _ in range(n):
            connect().close()
    found["SQLAlchemy QueuePool"] = (sqlalchemy_loop, queue.dispose)

    pooled = PooledDB(module, maxconnections=4, mincached=0, maxcached=4, blocking=True,
                      **args)

    def dbutils_loop(n, connection=pooled.connection):
        for _ in range(n):
            connection().close()
    found["DBUtils PooledDB"] = (dbutils_loop, pooled.close)

    found["deque + lock (floor)"] = (deque_and_lock(lambda: module.connect(**args)), lambda: None)
    return found


def round_trips(loop, n=200):
    """Statements and pings MariaDB received per cycle (measured on a separate session)."""
    import MySQLdb

    admin = MySQLdb.connect(**MY)
    cur = admin.cursor()

    def count():
        cur.execute("SHOW GLOBAL STATUS WHERE Variable_name IN "
                    "('Questions', 'Com_admin_commands')")
        return sum(int(value) for _, value in cur.fetchall())

    before = count()
    loop(n)
    sent = count() - before - 1  # the second SHOW is a question too
    admin.close()
    return max(sent, 0) / n


def run(quick=False):
    n, rounds = (2000, 3) if quick else (5000, 9)
    sections = []
    for kind, title in (("postgresql", "PostgreSQL"), ("mysql", "MariaDB")):
        found = contenders(kind)
        for loop, _ in found.values():
            loop(200)  # warm up: every pool has its connection open
        results = interleaved({name: per_op(loop, n) for name, (loop, _) in found.items()},
                              rounds)
        mine = results["wsgipool"]
        rows = []
        for name, figures in results.items():
            row = [name, f"{median(figures):.2f}", f"{ratio(mine, figures):.2f}"]
            if kind == "mysql":
                row.append(f"{round_trips(found[name][0]):.2f}")
            rows.append(row)
        for _, close in found.values():
            close()
        headers = ["pool", "µs per checkout + return", "their time / ours"]
        if kind == "mysql":
            headers.append("server round trips per cycle")
        sections.append(f"### Pool cycle, {title} (median of {rounds} interleaved rounds "
                        f"of {n})\n\n" + table(headers, rows))
    return "\n\n".join(sections)
