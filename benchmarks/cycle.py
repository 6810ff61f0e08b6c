"""Pool cycle: check out an idle connection and give it back, in one thread, nothing else.

This is what the pool itself costs every request, on top of the request's own queries.
wsgipool is measured the way its README says to use it, ``with pool.connection():``
(the headline), and through the raw ``checkout()``/``checkin()`` pair the middleware
uses.
Each pool is configured as its documentation suggests for a pool of 4 and used through
its own API (SQLAlchemy's raw pool, not an engine). A deque and a lock, behind two
methods, is the floor: no thread-safe pool can do less.

On MariaDB the time is dominated by what a pool sends to the server, so it also counts,
from ``SHOW GLOBAL STATUS`` deltas read on a separate session, the ROLLBACKs, pings
(``Com_admin_commands``) and statements (``Questions``) per cycle: once for a connection
returned untouched, and once for a request that ran ``SELECT 1`` and committed (the two
round trips the request made itself are subtracted, leaving what the pool added).
"""

from __future__ import annotations

import collections
import threading
from operator import attrgetter, methodcaller
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from .common import (URLS, Section, Target, TITLES, connect_args, driver_module, interleaved,
                     median, paired_ratio, per_op, plain_connect, table)


class DequeAndLock:
    """The floor: a deque of connections and a lock, no bookkeeping at all."""

    def __init__(self, conn: Any) -> None:
        self._idle = collections.deque([conn])
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            return self._idle.pop()

    def put(self, conn: Any) -> None:
        with self._lock:
            self._idle.append(conn)


class Contender(NamedTuple):
    get: Callable[[], Any]  # check a connection out
    put: Callable[[Any], None]  # give it back
    conn: Callable[[Any], Any]  # what get() returned -> the DB-API connection
    close: Callable[[], None]  # close the pool
    loop: Optional[Callable[[int], None]] = None  # a cycle other than put(get())


WITH = "wsgipool, `with pool.connection()`"
PAIR = "wsgipool, `checkout()` + `checkin()`"
PSYCOPG2 = "psycopg2 ThreadedConnectionPool"
FLOOR = "deque + lock (floor)"


def _same(value: Any) -> Any:
    return value


def contenders(kind: str) -> Dict[str, Contender]:
    """Every pool that speaks to this database, wsgipool first."""
    from dbutils.pooled_db import PooledDB
    from sqlalchemy.pool import QueuePool

    from wsgipool import Pool

    module, args, connect = driver_module(kind), connect_args(kind), plain_connect(kind)
    found: Dict[str, Contender] = {}

    ours = Pool(URLS[kind], max_size=4)
    # The with-statement API its README shows: the headline.
    found[WITH] = Contender(ours.checkout, ours.checkin, attrgetter("conn"), ours.close,
                            with_loop(ours.connection))
    found[PAIR] = Contender(ours.checkout, ours.checkin, attrgetter("conn"), lambda: None)

    if kind == "postgresql":
        import psycopg2.pool
        from psycopg_pool import ConnectionPool

        # minconn=4: psycopg2's pool closes a returned connection when minconn are idle.
        threaded = psycopg2.pool.ThreadedConnectionPool(4, 4, **args)
        found[PSYCOPG2] = Contender(
            threaded.getconn, threaded.putconn, _same, threaded.closeall)
        psycopg3 = ConnectionPool("", kwargs=args, min_size=1, max_size=4, open=True)
        psycopg3.wait()
        found["psycopg_pool (psycopg 3)"] = Contender(
            psycopg3.getconn, psycopg3.putconn, _same, psycopg3.close)

    queue = QueuePool(connect, pool_size=4, max_overflow=0)  # default reset_on_return
    found["SQLAlchemy QueuePool"] = Contender(queue.connect, methodcaller("close"), _same,
                                              queue.dispose)
    pooled = PooledDB(module, mincached=0, maxcached=4, maxconnections=4, blocking=True,
                      **args)
    found["DBUtils PooledDB"] = Contender(pooled.connection, methodcaller("close"), _same,
                                          pooled.close)
    floor = DequeAndLock(connect())
    found[FLOOR] = Contender(floor.get, floor.put, _same, lambda: None)
    return found


def cycle_loop(get: Callable[[], Any], put: Callable[[Any], None]) -> Callable[[int], None]:
    def loop(n: int) -> None:
        for _ in range(n):
            put(get())
    return loop


def with_loop(connection: Callable[[], Any]) -> Callable[[int], None]:
    """wsgipool's context-manager API, as its README shows it."""
    def loop(n: int) -> None:
        for _ in range(n):
            with connection():
                pass
    return loop


def used_loop(contender: Contender) -> Callable[[int], None]:
    """A request that runs SELECT 1 and commits: two round trips of its own."""
    get, put, conn_of = contender.get, contender.put, contender.conn

    def loop(n: int) -> None:
        for _ in range(n):
            got = get()
            conn = conn_of(got)
            cursor = conn.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()
            cursor.close()
            conn.commit()
            put(got)
    return loop


def cycle_targets(results: Dict[str, Any]) -> List[Target]:
    """Target 1 of issue 16, from one run's interleaved rounds (PostgreSQL)."""
    mine, pair = results[WITH], results[PAIR]
    theirs, floor = results[PSYCOPG2], results[FLOOR]
    ratio, raw = paired_ratio(mine, theirs), paired_ratio(pair, theirs)
    to_floor = paired_ratio(mine, floor)
    return [
        Target("`with pool.connection()` <= 1.0x psycopg2's getconn/putconn (PostgreSQL)",
               f"wsgipool {median(mine):.2f} µs, psycopg2 {median(theirs):.2f} µs: "
               f"{ratio:.2f}x (raw checkout/checkin pair {median(pair):.2f} µs: {raw:.2f}x)",
               ratio <= 1.0),
        Target("moonshot: `with pool.connection()` <= 0.8x psycopg2's and <= 1.5x the "
               "deque + lock floor",
               f"{ratio:.2f}x psycopg2's, {to_floor:.2f}x the floor "
               f"({median(floor):.2f} µs)", ratio <= 0.8 and to_floor <= 1.5),
    ]


_COUNTERS = ("Com_rollback", "Com_admin_commands", "Questions")


class ServerTraffic:
    """What MariaDB received, from SHOW GLOBAL STATUS deltas, read on its own session."""

    def __init__(self) -> None:
        self._admin = plain_connect("mysql")()
        self._cursor = self._admin.cursor()
        first = self._read()
        self._own = {k: v - first[k] for k, v in self._read().items()}  # one SHOW's share

    def _read(self) -> Dict[str, int]:
        self._cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN (%s)"
                             % ", ".join(f"'{name}'" for name in _COUNTERS))
        return {name: int(value) for name, value in self._cursor.fetchall()}

    def per_cycle(self, loop: Callable[[int], None], n: int = 100,
                  repeats: int = 3) -> Dict[str, float]:
        """Counter deltas per cycle; the least of a few repeats, in case others are busy."""
        best: Dict[str, float] = {}
        for _ in range(repeats):
            before = self._read()
            loop(n)
            after = self._read()
            for name in _COUNTERS:
                delta = (after[name] - before[name] - self._own[name]) / n
                best[name] = min(best.get(name, delta), delta)
        return best

    def close(self) -> None:
        self._admin.close()


def _fmt(value: float) -> str:
    return f"{max(value, 0.0):.2f}"


def run(quick: bool = False) -> Section:
    n, rounds = (1000, 3) if quick else (5000, 9)
    sections, targets = [], []
    for kind in ("postgresql", "mysql"):
        found = contenders(kind)
        loops = {name: c.loop or cycle_loop(c.get, c.put) for name, c in found.items()}
        for loop in loops.values():
            loop(200)  # warm up: every pool has its connection open, code paths loaded
        results = interleaved({name: per_op(loop, n) for name, loop in loops.items()}, rounds)
        mine = results[WITH]
        # Ratios against psycopg2's pool where it runs (PostgreSQL), else the floor.
        yardstick = PSYCOPG2 if PSYCOPG2 in results else FLOOR
        traffic = ServerTraffic() if kind == "mysql" else None
        headers = ["pool", "µs per checkout + return", f"time ÷ {yardstick.split(' (')[0]}'s"]
        if traffic:
            headers += ["ROLLBACKs", "pings", "statements (Questions)",
                        "server round trips per cycle", "round trips added to SELECT 1 + COMMIT"]
        rows = []
        for name, figures in results.items():
            row = [name, f"{median(figures):.2f}",
                   f"{paired_ratio(figures, results[yardstick]):.2f}"]
            if traffic:
                idle = traffic.per_cycle(loops[name])
                used = traffic.per_cycle(used_loop(found[name]))
                trips = idle["Questions"] + idle["Com_admin_commands"]
                added = used["Questions"] + used["Com_admin_commands"] - 2
                row += [_fmt(idle["Com_rollback"]), _fmt(idle["Com_admin_commands"]),
                        _fmt(idle["Questions"]), _fmt(trips), _fmt(added)]
                if name == WITH:
                    targets.append(Target(
                        "MariaDB: returning an idle connection sends nothing to the server",
                        f"{trips:.2f} round trips per cycle untouched, {added:.2f} added "
                        "after SELECT 1 + COMMIT",
                        trips < 0.005 and added < 0.005))
            rows.append(row)
        if traffic:
            traffic.close()
        for contender in found.values():
            contender.close()
        if kind == "postgresql":
            targets[:0] = cycle_targets(results)
        note = ("" if kind == "postgresql" else
                "\n\nRound trips: ROLLBACK and other statements count in `Questions`, pings "
                "in `Com_admin_commands`; the SHOW that reads them is subtracted. The last "
                "column is what the pool sent on top of a request's own SELECT 1 and COMMIT.")
        sections.append(
            f"### Pool cycle, {TITLES[kind]} (one thread; median of {rounds} interleaved "
            f"rounds of {n} cycles)\n\n" + table(headers, rows) + note)
    return Section("\n\n".join(sections), targets)
