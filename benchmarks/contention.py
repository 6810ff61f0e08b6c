"""Contention: many threads, few connections; who gets served, and how long they wait.

Each thread checks out, runs ``SELECT 1`` and gives back, for a fixed time. Reported:
throughput, the wait for a connection (p50, p99, max) and fairness, the least-served
thread's count over the mean. A pool where a returning thread can take its connection
straight back starves the others; first come, first served must not.
"""

import threading
import time

from .common import PG, POSTGRESQL_URL, median, table


class LockAndCondition:
    """The naive pool: a list, a lock and a condition variable."""

    def __init__(self, connect, size):
        self.idle = [connect() for _ in range(size)]
        self.ready = threading.Condition()

    def get(self):
        with self.ready:
            while not self.idle:
                self.ready.wait()
            return self.idle.pop()

    def put(self, conn):
        with self.ready:
            self.idle.append(conn)
            self.ready.notify()


def contenders():
    import psycopg2
    from psycopg_pool import ConnectionPool
    from sqlalchemy.pool import QueuePool

    from wsgipool import Pool

    ours = Pool(POSTGRESQL_URL, max_size=4, timeout=30)
    naive = LockAndCondition(lambda: psycopg2.connect(**PG), 4)
    queue = QueuePool(lambda: psycopg2.connect(**PG), pool_size=4, max_overflow=0, timeout=30)
    psycopg3 = ConnectionPool("host=127.0.0.1 user=postgres dbname=test", min_size=4,
                              max_size=4, timeout=30, open=True)
    psycopg3.wait()

    def wsgipool_use():
        with ours.connection() as conn:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.rollback()

    def naive_use():
        conn = naive.get()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
            conn.rollback()
        finally:
            naive.put(conn)

    def sqlalchemy_use():
        conn = queue.connect()
        try:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.close()
        finally:
            conn.close()

    def psycopg3_use():
        with psycopg3.connection() as conn:
            conn.execute("SELECT 1")

    closers = [ours.close, queue.dispose, psycopg3.close]
    return {"wsgipool": wsgipool_use, "lock + condition": naive_use,
            "SQLAlchemy QueuePool": sqlalchemy_use, "psycopg_pool (psycopg 3)": psycopg3_use}, closers


def measure(use, threads, seconds):
    counts, waits, stop = [0] * threads, [[] for _ in range(threads)], threading.Event()

    def worker(i):
        while not stop.is_set():
            started = time.perf_counter()
            use()
            waits[i].append(time.perf_counter() - started)
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join(30)
    every = sorted(w for per_thread in waits for w in per_thread)
    mean = sum(counts) / threads
    return {
        "rate": sum(counts) / seconds,
        "p50": every[len(every) // 2] * 1e3,
        "p99": every[int(len(every) * 0.99)] * 1e3,
        "max": every[-1] * 1e3,
        "fairness": min(counts) / mean if mean else 0.0,
    }


def run(quick=False):
    seconds, rounds = (1.0, 1) if quick else (2.0, 3)
    uses, closers = contenders()
    sections = []
    for threads in (8, 32):
        figures = {name: [] for name in uses}
        for _ in range(rounds):
            for name, use in uses.items():
                figures[name].append(measure(use, threads, seconds))
        rows = []
        base = median([f["rate"] for f in figures["wsgipool"]])
        for name, runs in figures.items():
            pick = {key: median([r[key] for r in runs]) for key in runs[0]}
            rows.append([name, f"{pick['rate']:.0f}", f"{pick['rate'] / base:.2f}",
                         f"{pick['p50']:.2f}", f"{pick['p99']:.2f}", f"{pick['max']:.1f}",
                         f"{pick['fairness']:.2f}"])
        sections.append(
            f"### Contention, PostgreSQL: {threads} threads on a pool of 4 (median of "
            f"{rounds} interleaved runs of {seconds:.0f} s)\n\n"
            + table(["pool", "checkouts/s", "vs wsgipool", "time per use p50 ms",
                     "p99 ms", "max ms", "fairness (min/mean)"], rows))
    for close in closers:
        close()
    return "\n\n".join(sections)
