"""A remote database: the pools end to end, with 1 ms between the app and the database.

Most deployments have 0.2-1 ms between app and database; on one machine it is about
0.05 ms. There, every round trip a pool adds to a request (a ping before, a rollback
after, a BEGIN of its own) costs more than the whole pool's bookkeeping, and the
loopback benchmarks cannot see it. Here each gunicorn reaches the database through its
own :class:`~benchmarks.latency_proxy.LatencyProxy` (0.5 ms each way by default), which
also counts every statement and round trip the app's connections send: exact, and per
contender, whatever else runs on the database server.

The app is ``remote_app.py``: one handler reading one row by primary key, with each pool
set up as its users do (see there), and wsgipool a second time with ``pre_ping=True``,
the check the peers' pings make. PostgreSQL (psycopg2; psycopg 3 for psycopg_pool, with
wsgipool on psycopg 3 beside it) and MariaDB (mysqlclient). Every server runs gunicorn
gthread, 2 workers × 4 threads, pools of 4, ``--no-control-socket``, its log in a file;
wrk drives it with 8 connections, as the end-to-end section does. The servers of one
database run at once and are measured in interleaved rounds; ratios are to wsgipool on
the same driver, round by round, then their median.

Cross-check: on MariaDB the server's global ``Questions`` counter is read around each run
too (it counts every client's statements, so it matches the proxy's only when nobody else
is using the server; it does not count ``COM_PING``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional

from .common import URLS, Section, Target, TITLES, connect_args, driver_module, median, \
    paired_ratio, plain_connect, table
from .e2e import HERE, ROOT, Server, _UNITS, wrk_command
from .latency_proxy import LatencyProxy, round_trips

TABLE = "remote_items"
ROW = "a row from 1 ms away"
# kind -> key -> (label, the wsgipool row it is compared with)
WAYS = {
    "postgresql": {
        "wsgipool": ("wsgipool (PoolMiddleware), psycopg2", "wsgipool"),
        "wsgipool-ping": ("wsgipool, pre_ping=True", "wsgipool"),
        "sqlalchemy": ("SQLAlchemy QueuePool, psycopg2", "wsgipool"),
        "sqlalchemy-ping": ("SQLAlchemy QueuePool, pool_pre_ping=True", "wsgipool"),
        "dbutils": ("DBUtils PooledDB, psycopg2", "wsgipool"),
        "wsgipool-psycopg3": ("wsgipool (PoolMiddleware), psycopg 3", "wsgipool-psycopg3"),
        "psycopg_pool": ("psycopg_pool, check=None (default)", "wsgipool-psycopg3"),
        "psycopg_pool-check": ("psycopg_pool, check=check_connection", "wsgipool-psycopg3"),
    },
    "mysql": {
        "wsgipool": ("wsgipool (PoolMiddleware), mysqlclient", "wsgipool"),
        "wsgipool-ping": ("wsgipool, pre_ping=True", "wsgipool"),
        "sqlalchemy": ("SQLAlchemy QueuePool, mysqlclient", "wsgipool"),
        "sqlalchemy-ping": ("SQLAlchemy QueuePool, pool_pre_ping=True", "wsgipool"),
        "dbutils": ("DBUtils PooledDB, mysqlclient", "wsgipool"),
    },
}
SETUP = ["--workers", "2", "--worker-class", "gthread", "--threads", "4"]


class RemoteServer(Server):
    """gunicorn serving ``remote_app`` for one way, on a socket bound here (see e2e.Server)."""

    def __init__(self, key: str, url: str, logdir: str) -> None:
        import socket

        self.way = key
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.set_inheritable(True)
        self.port = listener.getsockname()[1]
        self.log_path = os.path.join(logdir, f"gunicorn-remote-{key}-{self.port}.log")
        env = dict(os.environ, BENCH_WAY=key, DATABASE_URL=url, BENCH_TABLE=TABLE,
                   PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--no-control-socket",
                 "--bind", f"fd://{listener.fileno()}", *SETUP,
                 "--log-level", "warning", "--graceful-timeout", "5", "remote_app:app"],
                cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),))
        listener.close()
        self.url = f"http://127.0.0.1:{self.port}/"


class Run(NamedTuple):
    rate: float  # requests per second
    p99: float  # milliseconds
    requests: int
    errors: int
    statements: int  # counted by the proxy during the run
    round_trips: int
    by_statement: Dict[str, int]
    server_questions: Optional[int]  # MariaDB's global Questions delta (None: PostgreSQL)
    late: float  # the proxy's mean lag past due, milliseconds


def wrk(url: str, seconds: int, keep_alive: bool) -> tuple:
    """(requests/s, p99 ms, requests, errors) of one wrk run."""
    done = subprocess.run([*wrk_command(seconds, keep_alive), url], capture_output=True,
                          text=True, timeout=seconds + 30)
    out = done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    requests = re.search(r"(\d+) requests in", out)
    if done.returncode != 0 or not rate or not p99 or not requests:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out} {done.stderr}")
    errors = sum(int(found) for found in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        errors += sum(int(socket_errors.group(i)) for i in (1, 3, 4))
    return (float(rate.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)],
            int(requests.group(1)), errors)


def prepare(kind: str) -> None:
    """The table the handler reads, with its one row (names prefixed ``remote_``)."""
    conn = plain_connect(kind)()
    try:
        cursor = conn.cursor()
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY, "
                       f"name VARCHAR(40) NOT NULL)")
        cursor.execute(f"DELETE FROM {TABLE}")
        cursor.execute(f"INSERT INTO {TABLE} (id, name) VALUES (1, %s)", (ROW,))
        conn.commit()
    finally:
        conn.close()


class Questions:
    """MariaDB's global ``Questions`` counter, from a direct connection of our own."""

    def __init__(self) -> None:
        self.conn = plain_connect("mysql")()

    def read(self) -> int:
        cursor = self.conn.cursor()
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
        value = int(cursor.fetchone()[1])
        cursor.close()
        return value

    def close(self) -> None:
        self.conn.close()


def target_of(kind: str) -> tuple:
    args = connect_args(kind)
    return (args.get("host", "127.0.0.1"),
            int(args.get("port") or {"postgresql": 5432, "mysql": 3306}[kind]))


def measure(kind: str, seconds: int, rounds: int, warm: int, delay: float, keep_alive: bool,
            logdir: str) -> Dict[str, List[Run]]:
    proxies: Dict[str, LatencyProxy] = {}
    servers: Dict[str, RemoteServer] = {}
    questions = Questions() if kind == "mysql" else None
    try:
        for key in WAYS[kind]:
            proxies[key] = proxy = LatencyProxy(target_of(kind), delay=delay, protocol=kind)
            servers[key] = RemoteServer(key, proxy.url_for(URLS[kind]), logdir)
        deadline = time.monotonic() + 60
        for server in servers.values():
            server.wait_ready(deadline)
        for server in servers.values():
            wrk(server.url, warm, keep_alive)  # every pool full, code loaded
        runs: Dict[str, List[Run]] = {key: [] for key in WAYS[kind]}
        for _ in range(rounds):
            for key, server in servers.items():
                before = proxies[key].counts()
                asked = questions.read() if questions else None
                rate, p99, requests, errors = wrk(server.url, seconds, keep_alive)
                after = proxies[key].counts()  # then the server's: all it saw has arrived
                asked = questions.read() - asked - 1 if questions else None  # - our SHOW
                was = before["by_statement"]
                by = {word: n - was.get(word, 0) for word, n in after["by_statement"].items()}
                by["COM_PING"] = (after["messages"].get("COM_PING", 0)
                                  - before["messages"].get("COM_PING", 0))
                chunks = after["chunks"] - before["chunks"]
                runs[key].append(Run(
                    rate, p99, requests, errors, after["statements"] - before["statements"],
                    after["round_trips"] - before["round_trips"],
                    {word: n for word, n in by.items() if n}, asked,
                    (after["late"] - before["late"]) / chunks * 1e3 if chunks else 0.0))
        return runs
    finally:
        for server in servers.values():
            server.stop()
        for proxy in proxies.values():
            proxy.close()
        if questions:
            questions.close()


def _per_request(runs: List[Run], field: str) -> float:
    return sum(getattr(run, field) for run in runs) / max(1, sum(run.requests for run in runs))


def _sent(runs: List[Run]) -> str:
    """What the connections sent per request, by first word: ``BEGIN 1, SELECT 1, ...``."""
    total: Dict[str, int] = {}
    for run in runs:
        for word, n in run.by_statement.items():
            total[word] = total.get(word, 0) + n
    requests = max(1, sum(run.requests for run in runs))
    return ", ".join(f"{word} {n / requests:.2f}" for word, n in
                     sorted(total.items(), key=lambda item: -item[1])) or "-"


def calibrate(kind: str, delay: float, n: int = 300) -> str:
    """The ``SELECT 1`` round trip direct and through a proxy: what the proxy really adds."""
    import statistics

    module, args = driver_module(kind), connect_args(kind)
    direct = statistics.median(round_trips(lambda: module.connect(**args), n)) * 1e3
    with LatencyProxy(target_of(kind), delay=delay, protocol=kind) as proxy:
        through = statistics.median(round_trips(
            lambda: module.connect(**dict(args, host=proxy.host, port=proxy.port)), n)) * 1e3
    return (f"`SELECT 1` round trip, median of {n} on one connection: direct {direct:.3f} ms, "
            f"through the proxy {through:.3f} ms (+{through - direct:.3f} ms). Load average "
            f"at the start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the proxy "
            f"lag column shows when the machine was too busy to keep the delay).")


def report(kind: str, runs: Dict[str, List[Run]], command: str, rounds: int,
           delay: float, calibration: str) -> tuple:
    rows = []
    for key, (label, base) in WAYS[kind].items():
        rates, p99s = [r.rate for r in runs[key]], [r.p99 for r in runs[key]]
        base_rates, base_p99s = [r.rate for r in runs[base]], [r.p99 for r in runs[base]]
        row = [label, f"{median(rates):.0f}", f"{paired_ratio(rates, base_rates):.2f}",
               f"{median(p99s):.2f}", f"{paired_ratio(p99s, base_p99s):.2f}",
               f"{_per_request(runs[key], 'statements'):.2f}",
               f"{_per_request(runs[key], 'round_trips'):.2f}", _sent(runs[key])]
        if kind == "mysql":
            row.append(f"{_per_request(runs[key], 'server_questions'):.2f}")
        row += [f"{median([r.late for r in runs[key]]):.3f}",
                sum(r.errors for r in runs[key])]
        rows.append(row)
    headers = ["pool", "requests/s", "÷ wsgipool", "p99 ms", "p99 ÷ wsgipool's",
               "statements / request", "round trips / request", "sent per request"]
    if kind == "mysql":
        headers.append("server Questions / request (global)")
    headers += ["proxy lag ms", "errors"]
    ours = _per_request(runs["wsgipool"], "round_trips")
    fewest = min(_per_request(runs[key], "round_trips") for key in WAYS[kind]
                 if not key.startswith("wsgipool"))
    if any(not _per_request(runs[key], "statements") for key in WAYS[kind]):
        rows.append(["(statements not counted: the proxy cannot read encrypted traffic; "
                     "add sslmode=disable to the database URL)"] + [""] * (len(headers) - 1))
    text = (
        f"### Remote database, {TITLES[kind]}: {delay * 1e3:g} ms each way through "
        f"benchmarks/latency_proxy.py, gunicorn gthread 2 workers × 4 threads, pools of 4 "
        f"(`{command}`; median of {rounds} interleaved rounds; ratios to wsgipool on the "
        f"same driver)\n\n{calibration}\n\n" + table(headers, rows) + "\n\n"
        + _meaning(kind, runs, delay))
    targets = [Target(
        f"remote {TITLES[kind]}: wsgipool's round trips per request <= the fewest of a peer's",
        f"{ours:.2f} (fewest peer: {fewest:.2f})", ours <= fewest + 0.01)]
    errors = sum(r.errors for key in WAYS[kind] if key.startswith("wsgipool")
                 for r in runs[key])
    if errors:
        targets.append(Target(f"remote {TITLES[kind]}: no errors", f"{errors} errors", False))
    return text, targets


def _meaning(kind: str, runs: Dict[str, List[Run]], delay: float) -> str:
    """One line: what the table says, from this run's own figures."""
    trips = {key: _per_request(runs[key], "round_trips") for key in WAYS[kind]}
    said = []
    for key, (label, base) in WAYS[kind].items():
        if key == base:
            continue
        ratio = paired_ratio([r.rate for r in runs[key]], [r.rate for r in runs[base]])
        added = round(trips[key] - trips[base], 2) + 0.0  # no "-0.00"
        said.append(f"{label} {added:+.2f} round trips, {ratio:.2f}×")
        if key == "dbutils" and ratio < 0.9:
            said[-1] += (" (PooledDB makes its round trips, the ping on checkout where "
                         "the driver has one and the rollback on return, while holding "
                         "its pool's lock: a worker's requests queue behind each other's)")
    return (f"What it means: at {2 * delay * 1e3:g} ms per round trip a request's time is "
            f"mostly its round trips, so a pool costs what it adds to them, not its own "
            f"microseconds. Against wsgipool on the same driver (round trips added per "
            f"request, requests/s ratio): " + "; ".join(said) + ".")


def run(quick: bool = False, rounds: Optional[int] = None, seconds: Optional[int] = None,
        delay: float = 0.0005, keep_alive: bool = False) -> Section:
    if not shutil.which("wrk"):
        return Section("### Remote database\n\nskipped: wrk is not installed (Debian package wrk)",
                       [Target("remote database", "wrk not installed", None)])
    default_seconds, default_rounds, warm = (1, 1, 1) if quick else (3, 2, 1)
    seconds, rounds = seconds or default_seconds, rounds or default_rounds
    command = " ".join(f"'{arg}'" if " " in arg else arg
                       for arg in wrk_command(seconds, keep_alive))
    sections, targets = [], []
    with tempfile.TemporaryDirectory(prefix="wsgipool-remote-") as logdir:
        for kind in WAYS:
            print(f"  remote {TITLES[kind]}...", file=sys.stderr, flush=True)
            prepare(kind)
            calibration = calibrate(kind, delay)
            runs = measure(kind, seconds, rounds, warm, delay, keep_alive, logdir)
            text, found = report(kind, runs, command, rounds, delay, calibration)
            sections.append(text)
            targets += found
    return Section("\n\n".join(sections), targets)
