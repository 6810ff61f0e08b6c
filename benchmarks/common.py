"""What every benchmark shares: interleaved timing, the servers, and the report's header.

Rounds are interleaved (A B C A B C ...) so that a machine whose speed drifts slows every
contender alike; each figure is the median of its rounds, and each ratio is the median of
the per-round ratios.
"""

import os
import platform
import statistics
import time
from importlib import metadata
from typing import Callable, Dict, List, Sequence

POSTGRESQL_URL = os.environ.get("WSGIPOOL_TEST_POSTGRESQL_URL",
                                "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("WSGIPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
PG = dict(host="127.0.0.1", port=5432, user="postgres", dbname="test")
MY = dict(host="127.0.0.1", port=3306, user="root", database="test")


def interleaved(contenders: Dict[str, Callable[[], float]], rounds: int) -> Dict[str, List[float]]:
    """Run each contender once per round, in turn; each returns its figure for the round."""
    results: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    return results


def per_op(loop: Callable[[int], None], n: int) -> Callable[[], float]:
    """A contender timing ``loop(n)``: microseconds per operation."""
    def run() -> float:
        started = time.perf_counter()
        loop(n)
        return (time.perf_counter() - started) / n * 1e6
    return run


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(mine: Sequence[float], theirs: Sequence[float]) -> float:
    """Median of the round-by-round ratios ``theirs / mine`` (> 1: wsgipool is faster)."""
    return statistics.median(t / m for m, t in zip(mine, theirs))


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def header() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = []
    for package in ("wsgipool", "psycopg2-binary", "mysqlclient", "SQLAlchemy", "psycopg",
                    "psycopg-pool", "DBUtils", "gunicorn"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return "\n".join([
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}; " + ", ".join(versions),
        f"- servers: {server_versions()}",
    ])


def server_versions() -> str:
    found = []
    try:
        import psycopg2

        with psycopg2.connect(**PG) as conn, conn.cursor() as cur:
            cur.execute("SHOW server_version")
            found.append(f"PostgreSQL {cur.fetchone()[0]}")
        conn.close()
    except Exception as exc:
        found.append(f"PostgreSQL unavailable ({type(exc).__name__})")
    try:
        import MySQLdb

        conn = MySQLdb.connect(**MY)
        cur = conn.cursor()
        cur.execute("SELECT VERSION()")
        found.append(f"MariaDB {cur.fetchone()[0]}")
        conn.close()
    except Exception as exc:
        found.append(f"MariaDB unavailable ({type(exc).__name__})")
    return ", ".join(found)
