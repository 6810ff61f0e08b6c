"""Contention: 8 and 32 threads share a pool of 4, each doing checkout, SELECT 1, return.

Reported per pool: throughput (cycles per second, all threads together), the wait for
a connection (time spent in checkout: p50, p99, max) and fairness, the least-served
thread's cycle count over the mean. A pool where a returning thread can take its
connection straight back (a lock and a condition variable, notified but overtaken)
serves a few threads well and starves the rest; first come, first served must not.

The naive lock + condition pool below is the throughput yardstick. psycopg2's
ThreadedConnectionPool cannot take part: an exhausted pool raises ``PoolError`` instead
of waiting. Every pool holds 4 open connections before the clock starts; each cycle
rolls back its transaction before returning the connection, so no pool has one to reset.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

from .common import (URLS, Section, Target, connect_args, median, paired_ratio, percentile,
                     plain_connect, table)


class LockAndCondition:
    """The naive pool: a list, a lock and a condition variable."""

    def __init__(self, connect: Callable[[], Any], size: int) -> None:
        self.idle = [connect() for _ in range(size)]
        self.ready = threading.Condition(threading.Lock())

    def get(self) -> Any:
        with self.ready:
            while not self.idle:
                self.ready.wait()
            return self.idle.pop()

    def put(self, conn: Any) -> None:
        with self.ready:
            self.idle.append(conn)
            self.ready.notify()

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


class Contender(NamedTuple):
    get: Callable[[], Any]
    put: Callable[[Any], None]
    use: Callable[[Any], None]  # SELECT 1 and end the transaction, on what get() returned
    close: Callable[[], None]


def _psycopg2_use(conn: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("SELECT 1")
    cursor.fetchall()
    cursor.close()
    conn.rollback()


def _wsgipool_use(entry: Any) -> None:
    _psycopg2_use(entry.conn)


def _psycopg3_use(conn: Any) -> None:
    conn.execute("SELECT 1").fetchall()
    conn.rollback()


SKIPPED = {"psycopg2 ThreadedConnectionPool":
           "not usable: an exhausted pool raises PoolError instead of waiting"}


def contenders() -> Dict[str, Contender]:
    from psycopg_pool import ConnectionPool
    from sqlalchemy.pool import QueuePool

    from wsgipool import Pool

    connect = plain_connect("postgresql")
    ours = Pool(URLS["postgresql"], max_size=4, timeout=30)
    naive = LockAndCondition(connect, 4)
    queue = QueuePool(connect, pool_size=4, max_overflow=0, timeout=30)
    psycopg3 = ConnectionPool("", kwargs=connect_args("postgresql"), min_size=4, max_size=4,
                              timeout=30, open=True)
    psycopg3.wait()
    return {
        "wsgipool": Contender(ours.checkout, ours.checkin, _wsgipool_use, ours.close),
        "lock + condition (naive)": Contender(naive.get, naive.put, _psycopg2_use, naive.close),
        "SQLAlchemy QueuePool": Contender(queue.connect, lambda c: c.close(), _psycopg2_use,
                                          queue.dispose),
        "psycopg_pool (psycopg 3)": Contender(psycopg3.getconn, psycopg3.putconn,
                                              _psycopg3_use, psycopg3.close),
    }


def measure(contender: Contender, threads: int, seconds: float) -> Dict[str, float]:
    """Run ``threads`` threads cycling for ``seconds``; their figures together."""
    get, put, use = contender.get, contender.put, contender.use
    counts = [0] * threads
    waits: List[List[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    start = threading.Barrier(threads + 1)
    clock = time.perf_counter

    def worker(i: int) -> None:
        mine = waits[i]
        start.wait()
        while not stop.is_set():
            asked = clock()
            got = get()
            mine.append(clock() - asked)
            try:
                use(got)
            finally:
                put(got)
            counts[i] += 1

    workers = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(threads)]
    for thread in workers:
        thread.start()
    start.wait()
    began = clock()
    time.sleep(seconds)
    stop.set()
    elapsed = clock() - began  # cycles finishing after the stop are few and all count
    for thread in workers:
        thread.join(30)
    stuck = sum(thread.is_alive() for thread in workers)
    if stuck:
        raise RuntimeError(f"{stuck} contention threads did not finish within 30 s")
    every = sorted(wait for per_thread in waits for wait in per_thread)
    mean = sum(counts) / threads
    return {
        "rate": sum(counts) / elapsed,
        "p50": percentile(every, 0.50) * 1e3,
        "p99": percentile(every, 0.99) * 1e3,
        "max": every[-1] * 1e3,
        "fairness": min(counts) / mean if mean else 0.0,
    }


def run(quick: bool = False) -> Section:
    seconds, rounds = (1.0, 1) if quick else (2.0, 3)
    pools = contenders()
    try:
        for contender in pools.values():
            measure(contender, 8, 0.3)  # warm up: all 4 connections open, code loaded
        sections, targets = [], []
        for threads in (8, 32):
            figures: Dict[str, List[Dict[str, float]]] = {name: [] for name in pools}
            for _ in range(rounds):  # interleaved
                for name, contender in pools.items():
                    figures[name].append(measure(contender, threads, seconds))
            section, found = _report(figures, threads, seconds, rounds)
            sections.append(section)
            targets += found
    finally:
        for contender in pools.values():
            contender.close()
    return Section("\n\n".join(sections), targets)


def _report(figures: Dict[str, List[Dict[str, float]]], threads: int, seconds: float,
            rounds: int) -> Tuple[str, List[Target]]:
    ours = [run["rate"] for run in figures["wsgipool"]]
    rows = []
    for name, runs in figures.items():
        pick = {key: median([run[key] for run in runs]) for key in runs[0]}
        versus = paired_ratio([run["rate"] for run in runs], ours)
        rows.append([name, f"{pick['rate']:.0f}", f"{versus:.2f}", f"{pick['p50']:.3f}",
                     f"{pick['p99']:.2f}", f"{pick['max']:.1f}", f"{pick['fairness']:.2f}"])
    rows += [[name, why, "", "", "", "", ""] for name, why in SKIPPED.items()]
    text = (f"### Contention, PostgreSQL: {threads} threads, pool of 4 (median of {rounds} "
            f"interleaved runs of {seconds:.0f} s)\n\n"
            + table(["pool", "cycles/s", "throughput ÷ wsgipool's", "wait p50 ms",
                     "wait p99 ms", "wait max ms", "fairness (least served ÷ mean)"], rows))
    fairness = median([run["fairness"] for run in figures["wsgipool"]])
    naive = figures["lock + condition (naive)"]
    speed = paired_ratio(ours, [run["rate"] for run in naive])
    return text, [
        Target(f"contention, {threads} threads: fairness >= 0.9", f"{fairness:.2f}",
               fairness >= 0.9),
        Target(f"contention, {threads} threads: throughput >= the lock + condition pool's",
               f"wsgipool {median(ours):.0f}/s, lock + condition "
               f"{median([run['rate'] for run in naive]):.0f}/s: ratio {speed:.2f}",
               speed >= 1.0),
    ]
