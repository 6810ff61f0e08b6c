"""Round trips per request, counted by the servers, for wsgipool's Django backends and
Django's own ways: ``CONN_MAX_AGE = 0``, persistent connections with health checks, and
(PostgreSQL) Django's native psycopg 3 pool.

Each request runs one ORM query (``/t/<alias>/one``). PostgreSQL: the database under
test logs every statement of its sessions (``ALTER DATABASE ... SET log_statement``,
this database only), and the server log is read for that database's lines; a session is
a backend pid. MariaDB: the session's own counters (``Questions`` + ``Com_admin_commands``,
so COM_PING counts too), read at the end of each request on the same connection.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Dict

PG_LOG = os.environ.get("WSGIPOOL_TEST_POSTGRESQL_LOG",
                        "/var/log/postgresql/postgresql-15-main.log")
_LINE = re.compile(r"\[(\d+)\] \S*@(\S+) LOG:  (?:statement|execute [^:]*): (.*)")


def pg_log_readable() -> bool:
    return os.access(PG_LOG, os.R_OK)


def _pg_lines(offset: int, database: str):
    with open(PG_LOG, "rb") as handle:
        handle.seek(offset)
        text = handle.read().decode("utf-8", "replace")
    for line in text.splitlines():
        found = _LINE.search(line)
        if found and found.group(2) == database:
            yield int(found.group(1)), found.group(3)


def reset_alias(alias: str) -> None:
    """Close the alias's connections and pools, so the next request starts afresh."""
    from django.db import connections

    import wsgipool.django

    conn = connections[alias]
    conn.close()
    if hasattr(conn, "close_pool") and conn.settings_dict["OPTIONS"].get("pool"):
        conn.close_pool()
    wsgipool.django.close_pool(alias)


def measure_pg(call: Callable[[str], Any], alias: str, database: str,
               requests: int = 5) -> Dict[str, float]:
    """Statements and new sessions per request on ``alias``, from the server's log."""
    reset_alias(alias)
    start = os.path.getsize(PG_LOG)
    for _ in range(2):  # warm: the pool made, Django's version check done
        call(f"/t/{alias}/one")
    time.sleep(0.1)
    warm_pids = {pid for pid, _ in _pg_lines(start, database)}
    offset = os.path.getsize(PG_LOG)
    for _ in range(requests):
        call(f"/t/{alias}/one")
    time.sleep(0.2)  # the server writes its log lines as it runs the statements
    lines = list(_pg_lines(offset, database))
    pids = {pid for pid, _ in lines}
    return {"statements": len(lines) / requests,
            "sessions": len(pids - warm_pids) / requests,
            "sample": sorted({statement for _, statement in lines})[:6]}


def measure_my(call: Callable[[str], Any], alias: str, requests: int = 5) -> Dict[str, float]:
    """Statements and new sessions per request on ``alias``, from MariaDB's own
    per-session counters, read by the next request on the same session (persistent and
    pooled), or at the end of each request's own session (CONN_MAX_AGE = 0)."""
    reset_alias(alias)
    for _ in range(2):
        call(f"/t/{alias}/one")
    answers = [call(f"/t/{alias}/count_status")[1] for _ in range(requests + 1)]
    ids = {a["pid"] for a in answers}
    if len(ids) == 1:  # one session: the counters' growth between requests
        grown = answers[-1]["statements"] - answers[0]["statements"]
        # each request also ran the view's two measuring statements (id and status)
        statements = grown / requests - 2
        sessions = 0.0
    else:  # a session per request: what it ran before its measuring statements
        # (the counters include the statement reading them, and the id's SELECT)
        statements = sum(a["statements"] for a in answers) / len(answers) - 2
        sessions = len(ids) / len(answers)
    return {"statements": statements, "sessions": sessions}
