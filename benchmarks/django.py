"""Django: round trips and time per request, wsgipool's backends against Django's own ways.

In one process, Django's WSGI handler serves a view that runs one ORM query, on the test
project (tests/django_site: the example guestbook plus an alias per contender):
wsgipool's backend, ``CONN_MAX_AGE = 0``, persistent connections with
``CONN_HEALTH_CHECKS``, and (PostgreSQL) Django's native psycopg 3 pool. Round trips
are counted by the servers (see tests/django_site/roundtrips.py); time per request is
the median of interleaved rounds.
"""

from __future__ import annotations

import os
import sys
from typing import Dict, List

from .common import ROOT, Section, Target, interleaved, median, paired_ratio, per_op, table

CONTENDERS = {
    "postgresql": [("wsgipool", "pg"), ("CONN_MAX_AGE=0", "pg_age0"),
                   ("CONN_MAX_AGE=600 + health checks", "pg_persistent"),
                   ("Django's psycopg 3 pool", "pg_native")],
    "mysql": [("wsgipool", "my"), ("CONN_MAX_AGE=0", "my_age0"),
              ("CONN_MAX_AGE=600 + health checks", "my_persistent")],
}


def run(quick: bool = False) -> Section:
    sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "examples", "django")]
    from django_site import roundtrips
    from django_site.databases import PG_DB, call, pg_admin, set_up_django

    app = set_up_django()

    def request(path: str):
        status, body, _ = call(app, path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}: {body}")
        return status, body

    rows: List[List[object]] = []
    targets: List[Target] = []
    rounds, n = (3, 20) if quick else (7, 200)
    for kind, contenders in CONTENDERS.items():
        counts: Dict[str, Dict[str, float]] = {}
        if kind == "mysql":
            for _, alias in contenders:
                counts[alias] = roundtrips.measure_my(request, alias)
        elif roundtrips.pg_log_readable():
            conn = pg_admin()
            with conn.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {PG_DB} SET log_statement = 'all'")
            try:
                for _, alias in contenders:
                    counts[alias] = roundtrips.measure_pg(request, alias, PG_DB)
            finally:
                with conn.cursor() as cursor:
                    cursor.execute(f"ALTER DATABASE {PG_DB} RESET log_statement")
                conn.close()
        for _, alias in contenders:
            roundtrips.reset_alias(alias)
            request(f"/t/{alias}/one")

        def loop_for(alias: str):
            def loop(count: int) -> None:
                for _ in range(count):
                    request(f"/t/{alias}/one")
            return loop

        times = interleaved({alias: per_op(loop_for(alias), n) for _, alias in contenders},
                            rounds)
        ours = contenders[0][1]
        for name, alias in contenders:
            found = counts.get(alias, {})
            rows.append([kind, name, _fmt(found.get("statements")), _fmt(found.get("sessions")),
                         f"{median(times[alias]):.0f}",
                         f"{paired_ratio(times[alias], times[ours]):.2f}x"])
        if counts:
            worst = all(counts[ours]["statements"] <= counts[alias]["statements"]
                        and counts[ours]["sessions"] <= counts[alias]["sessions"]
                        for _, alias in contenders[1:])
            targets.append(Target(
                f"Django on {kind}: round trips per request <= Django's own ways",
                f"{counts[ours]['statements']:.0f} statements, "
                f"{counts[ours]['sessions']:.0f} new sessions per request", worst))
    markdown = "### Django: one ORM query per request\n\n" + table(
        ["database", "Django with", "statements / request", "new sessions / request",
         "µs / request", "time vs wsgipool"], rows)
    return Section(markdown, targets)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.1f}"
