"""Drivers under ``gunicorn -k gevent``: requests/s of one worker, a pool of 4, a handler
that holds its connection 5 ms in the database, per driver (issue 16, point 7).

    python -m benchmarks.gevent_drivers [--seconds 5] [--rounds 3]

One gunicorn per driver (1 gevent worker each, started together, stopped by pid), driven
by wrk in interleaved rounds; the median of each, and its ratio to psycopg 3. A driver
that blocks the hub serves one query at a time: about 1 / 5 ms = 200 requests/s at most,
whatever max_size says; one that cooperates can have 4 sleeps in flight.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from . import e2e
from .common import median, table
from .e2e import HERE, ROOT, Server, wrk

PG = "postgresql://postgres@127.0.0.1:5432/test"
MY = "mysql://root@127.0.0.1:3306/test"
# label -> (URL, extra environment)
DRIVERS = {
    "psycopg2 + wsgipool's wait callback": (PG, {}),
    "psycopg2, WSGIPOOL_PSYCOPG2_WAIT_CALLBACK=off": (
        PG, {"WSGIPOOL_PSYCOPG2_WAIT_CALLBACK": "off"}),
    "psycopg 3": (PG.replace("postgresql:", "postgresql+psycopg:"), {}),
    "mysqlclient": (MY, {}),
    "PyMySQL": (MY.replace("mysql:", "mysql+pymysql:"), {}),
}
WRK_CONNECTIONS = 16


class GeventServer(Server):
    """e2e's gunicorn, with one gevent worker serving ``gevent_app``."""

    def __init__(self, label: str, logdir: str) -> None:  # its own command: no super()
        url, extra = DRIVERS[label]
        self.way = label
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.set_inheritable(True)
        self.port = listener.getsockname()[1]
        self.log_path = os.path.join(logdir, f"gunicorn-{self.port}.log")
        env = dict(os.environ, DATABASE_URL=url, PYTHONPATH=os.pathsep.join([ROOT, HERE]),
                   **extra)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--no-control-socket",
                 "--bind", f"fd://{listener.fileno()}", "--workers", "1",
                 "--worker-class", "gevent", "--log-level", "warning",
                 "--graceful-timeout", "5", "gevent_app:app"],
                cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),))
        listener.close()
        self.url = f"http://127.0.0.1:{self.port}/"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    e2e.WRK = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", "--latency", "--timeout", "5s"]
    logdir = tempfile.mkdtemp(prefix="wsgipool-gevent-")
    servers: Dict[str, GeventServer] = {}
    try:
        for label in DRIVERS:
            servers[label] = GeventServer(label, logdir)
        deadline = time.monotonic() + 30
        for server in servers.values():
            server.wait_ready(deadline)
            wrk(server.url, 1, keep_alive=True)  # warm: 4 connections open
        rates: Dict[str, List[float]] = {label: [] for label in DRIVERS}
        errors = dict.fromkeys(DRIVERS, 0)
        for _ in range(args.rounds):
            for label, server in servers.items():
                run = wrk(server.url, args.seconds, keep_alive=True)
                rates[label].append(run.rate)
                errors[label] += run.errors
    finally:
        for server in servers.values():
            server.stop()
    base = median(rates["psycopg 3"])
    print(f"gunicorn -k gevent, 1 worker, pool of 4, 5 ms in the database per request; "
          f"wrk -c{WRK_CONNECTIONS} keep-alive, {args.rounds} x {args.seconds} s interleaved")
    print(table(["driver", "requests/s (median)", "rounds", "vs psycopg 3", "errors"], [
        [label, f"{median(values):.0f}", " ".join(f"{v:.0f}" for v in values),
         f"{median(values) / base:.2f}×", errors[label]] for label, values in rates.items()]))


if __name__ == "__main__":
    main()
