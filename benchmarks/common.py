"""What every benchmark shares: the servers, interleaved timing, tables, targets, the header.

Rounds are interleaved (A B C A B C ...) so that a machine whose speed drifts (another
process, a CPU changing clock) slows every contender alike. Each absolute figure is the
median of its rounds; each ratio is the median of the round-by-round ratios, so the two
figures compared were always measured seconds apart.

The servers are the ones the test suite uses (``WSGIPOOL_TEST_POSTGRESQL_URL``,
``WSGIPOOL_TEST_MYSQL_URL``; defaults: the local services).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Dict, List, Optional, Sequence

from wsgipool.urls import parse_url

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POSTGRESQL_URL = os.environ.get("WSGIPOOL_TEST_POSTGRESQL_URL",
                                "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("WSGIPOOL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
URLS = {"postgresql": POSTGRESQL_URL, "mysql": MYSQL_URL}
TITLES = {"postgresql": "PostgreSQL", "mysql": "MariaDB"}


def connect_args(kind: str) -> Dict[str, Any]:
    """Keyword arguments for the plain driver's ``connect()`` (psycopg2 or MySQLdb)."""
    url = parse_url(URLS[kind])
    database = "dbname" if kind == "postgresql" else "database"
    found = {"host": url.host, "port": url.port, "user": url.username,
             "password": url.password, database: url.path.lstrip("/") or None}
    found = {key: value for key, value in found.items() if value is not None}
    if kind == "postgresql":  # libpq takes any option as text; mysqlclient needs types
        found.update(url.query)
    return found


def driver_module(kind: str) -> Any:
    if kind == "postgresql":
        import psycopg2

        return psycopg2
    import MySQLdb

    return MySQLdb


def plain_connect(kind: str) -> Callable[[], Any]:
    """A function opening a plain driver connection (no pool, no wsgipool subclass)."""
    module, args = driver_module(kind), connect_args(kind)
    return lambda: module.connect(**args)


# -- timing -----------------------------------------------------------------------------

def interleaved(contenders: Dict[str, Callable[[], Any]], rounds: int) -> Dict[str, List[Any]]:
    """Run each contender once per round, in turn; each returns its figure for the round."""
    results: Dict[str, List[Any]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            results[name].append(run())
    return results


def per_op(loop: Callable[[int], None], n: int) -> Callable[[], float]:
    """A contender timing ``loop(n)`` with ``perf_counter``: microseconds per operation."""
    def run() -> float:
        started = time.perf_counter()
        loop(n)
        return (time.perf_counter() - started) / n * 1e6
    return run


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def paired_ratio(theirs: Sequence[float], ours: Sequence[float]) -> float:
    """Median of the round-by-round ratios ``theirs / ours``."""
    return statistics.median(t / o for t, o in zip(theirs, ours))


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` of a sorted sequence (nearest rank)."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


# -- report -----------------------------------------------------------------------------

def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


@dataclass
class Target:
    """One of the issue's targets, and where this run put wsgipool against it."""

    what: str
    measured: str
    met: Optional[bool]  # None: could not be measured in this run
    note: str = ""  # added to the verdict, e.g. how large this run's noise was

    def row(self) -> List[str]:
        verdict = {True: "met", False: "**missed**", None: "not measured"}[self.met]
        return [self.what, self.measured, verdict + (f" ({self.note})" if self.note else "")]


@dataclass
class Section:
    markdown: str
    targets: List[Target]


def targets_table(targets: Sequence[Target]) -> str:
    return table(["target", "this run", "verdict"], [target.row() for target in targets])


def header() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = [f"wsgipool {_wsgipool_version()}"]
    for label, distributions in (
        ("psycopg2", ("psycopg2-binary", "psycopg2")), ("mysqlclient", ("mysqlclient",)),
        ("SQLAlchemy", ("SQLAlchemy",)), ("psycopg", ("psycopg",)),
        ("psycopg_pool", ("psycopg-pool",)), ("DBUtils", ("DBUtils",)),
        ("gunicorn", ("gunicorn",)),
    ):
        versions.append(f"{label} {_version(distributions)}")
    return "\n".join([
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        "- packages: " + ", ".join(versions),
        f"- servers: {server_versions()}; load generator: {wrk_version()}",
    ])


def _version(distributions: Sequence[str]) -> str:
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _wsgipool_version() -> str:
    """The installed version, else the source tree's, with its git commit."""
    import wsgipool

    version = _version(("wsgipool",))
    if version == "not installed":
        version = f"{wsgipool.__version__} (source tree)"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "wsgipool"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit:
            version += f" at {commit}" + (" + uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def server_versions() -> str:
    found = []
    for kind in ("postgresql", "mysql"):
        try:
            conn = plain_connect(kind)()
            try:
                cursor = conn.cursor()
                cursor.execute("SELECT version()")
                version = cursor.fetchone()[0].split(", compiled by")[0]
                found.append(f"{TITLES[kind]}: {version}")
            finally:
                conn.close()
        except Exception as exc:
            found.append(f"{TITLES[kind]} unavailable ({type(exc).__name__}: {exc})")
    return "; ".join(found)


def wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "wrk not installed"
    line = (done.stdout or done.stderr).strip().splitlines()
    return line[0].split(" Copyright")[0] if line else "wrk (unknown version)"
