"""Overload: more clients than the pool can serve, refused clients retrying at once.

The scenario of issue 16: gunicorn's gevent worker (1 worker), a pool of 4 psycopg 3
connections, each request holding its connection 5 ms (``overload_app.py``), 300
keep-alive clients (``loadgen.py``, a plain-Python load client in its own process).
Each row is its own gunicorn, started, warmed and measured alone:

* wsgipool as it ships (``timeout`` 10 s, no bound on the queue): nobody is refused,
  so its successes/s is the **saturation** throughput the other rows are held to;
* wsgipool with ``max_waiting=16``, and with ``timeout=0.05``;
* psycopg_pool without and with ``max_waiting=16``; SQLAlchemy's QueuePool (10 s).

Two client behaviours: refused clients retry at once (the hard case: a refusal must cost
next to nothing, or refusals eat the CPU the work in hand needs), and clients that
honour ``Retry-After``. Reported per row: successes/s and as a fraction of saturation,
p50/p99 of successes, refusals/s and the p99 time to a refusal, requests unanswered when
the window closed. Targets (issue 16, point 6): with ``max_waiting`` or a short
``timeout``, successes >= 0.8 × saturation and refusals answered within 100 ms at p99.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any, Dict, List, Optional

from .common import POSTGRESQL_URL, Section, Target, table
from .e2e import HERE, ROOT, Server

CLIENTS = 300
MAX_WAITING = "16"
# key -> (label, environment of overload_app.py)
ROWS: Dict[str, Any] = {
    "wsgipool": ("wsgipool (timeout 10 s)", {"OVERLOAD_WAY": "wsgipool"}),
    "wsgipool_max_waiting": ("wsgipool, max_waiting=16",
                             {"OVERLOAD_WAY": "wsgipool", "OVERLOAD_MAX_WAITING": MAX_WAITING}),
    "wsgipool_short": ("wsgipool, timeout=0.05",
                       {"OVERLOAD_WAY": "wsgipool", "OVERLOAD_TIMEOUT": "0.05"}),
    "wsgipool_unpaced": ("wsgipool, max_waiting=16, pace_refusals=0 (no pacing)",
                         {"OVERLOAD_WAY": "wsgipool", "OVERLOAD_MAX_WAITING": MAX_WAITING,
                          "OVERLOAD_PACE": "0"}),
    "psycopg_pool": ("psycopg_pool (timeout 10 s)", {"OVERLOAD_WAY": "psycopg_pool"}),
    "psycopg_pool_max_waiting": ("psycopg_pool, max_waiting=16",
                                 {"OVERLOAD_WAY": "psycopg_pool",
                                  "OVERLOAD_MAX_WAITING": MAX_WAITING}),
    "sqlalchemy": ("SQLAlchemy QueuePool (timeout 10 s)", {"OVERLOAD_WAY": "sqlalchemy"}),
}
# Rows held to the targets: ours that refuse, with the defaults.
TARGETED = ("wsgipool_max_waiting", "wsgipool_short")
# Rows that refuse nobody: the best of them is the saturation throughput.
UNBOUNDED = ("wsgipool", "psycopg_pool")
SCENARIOS = {"retry at once": False, "honour Retry-After": True}
GOODPUT_TARGET = 0.8
REFUSAL_P99_TARGET = 0.100  # seconds


class OverloadServer(Server):
    """gunicorn -k gevent, 1 worker, serving overload_app.py for one row."""

    def __init__(self, key: str, logdir: str) -> None:
        import socket
        import subprocess

        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        listener.set_inheritable(True)
        self.way = key
        self.port = listener.getsockname()[1]
        self.log_path = os.path.join(logdir, f"gunicorn-{key}.log")
        env = dict(os.environ, DATABASE_URL=POSTGRESQL_URL, **ROWS[key][1],
                   PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--no-control-socket",
                 "--bind", f"fd://{listener.fileno()}", "--workers", "1",
                 "--worker-class", "gevent", "--worker-connections", "1000",
                 "--log-level", "warning", "--graceful-timeout", "5",
                 env.get("OVERLOAD_APP", "overload_app:app")],
                cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),))
        listener.close()
        self.url = f"http://127.0.0.1:{self.port}/"


def load(port: int, seconds: float, warm: float, honour: bool) -> Dict[str, Any]:
    """Run the load client in its own process; its JSON result."""
    import subprocess

    command = [sys.executable, "-m", "benchmarks.loadgen", "--port", str(port),
               "--clients", str(CLIENTS), "--seconds", str(seconds), "--warm", str(warm)]
    if honour:
        command.append("--honour-retry-after")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=seconds + warm + 60)
    if done.returncode != 0:
        raise RuntimeError(f"load client failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def measure(seconds: float, warm: float, rounds: int = 1, rows=ROWS,
            scenarios=SCENARIOS) -> Dict[str, Dict[str, List[Dict[str, Any]]]]:
    """Every row's server started together (idle, one costs nothing), then measured in
    interleaved rounds, one row at a time: a machine whose load drifts slows all alike."""
    import time

    results: Dict[str, Dict[str, List[Dict[str, Any]]]] = {
        name: {key: [] for key in rows} for name in scenarios}
    servers: Dict[str, OverloadServer] = {}
    with tempfile.TemporaryDirectory(prefix="wsgipool-overload-") as logdir:
        try:
            for key in rows:
                servers[key] = OverloadServer(key, logdir)
            deadline = time.monotonic() + 30
            for server in servers.values():
                server.wait_ready(deadline)
            for name, honour in scenarios.items():
                for round_ in range(rounds):
                    for key, server in servers.items():
                        print(f"  overload, clients {name}, round {round_ + 1}: "
                              f"{ROWS[key][0]}...", file=sys.stderr, flush=True)
                        results[name][key].append(load(server.port, seconds, warm, honour))
        finally:
            for server in servers.values():
                server.stop()
    return results


def _median_run(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The round with the median number of successes."""
    return sorted(runs, key=lambda run: run["ok"])[len(runs) // 2]


def _ms(seconds: Optional[float]) -> str:
    return "–" if seconds is None else f"{seconds * 1e3:.0f}"


def report(results: Dict[str, Dict[str, List[Dict[str, Any]]]], seconds: float,
           rounds: int = 1) -> Section:
    texts, targets = [], []
    for name, by_row in results.items():
        runs = {key: _median_run(found) for key, found in by_row.items() if found}
        bases = [runs[key]["ok"] / seconds for key in UNBOUNDED if key in runs]
        saturation = max(bases) if bases else 0.0
        rows = []
        for key, run in runs.items():
            rate = run["ok"] / seconds
            others = sum(run["other"].values()) + run["errors"]
            each = " ".join(f"{found['ok'] / seconds:.0f}" for found in by_row[key])
            rows.append([
                ROWS[key][0], f"{rate:.0f}",
                f"{rate / saturation:.2f}" if saturation else "–", each,
                _ms(run["ok_p50"]), _ms(run["ok_p99"]), _ms(run["ok_max"]),
                f"{run['refused'] / seconds:.0f}", _ms(run["refused_p99"]),
                others, run["unanswered"], f"{run['client_cpu'] / (seconds + 1):.2f}",
            ])
            if key in TARGETED and saturation:
                where = f"overload, {ROWS[key][0]}, clients {name}"
                goodput = rate / saturation
                refusal = run["refused_p99"]
                targets.append(Target(
                    f"{where}: successes >= {GOODPUT_TARGET} × saturation",
                    f"{goodput:.2f} × {saturation:.0f}/s (rounds {each})",
                    goodput >= GOODPUT_TARGET))
                targets.append(Target(
                    f"{where}: refusals' p99 <= {REFUSAL_P99_TARGET * 1e3:.0f} ms",
                    f"{_ms(refusal)} ms",
                    refusal is None or refusal <= REFUSAL_P99_TARGET))
        texts.append(
            f"### Overload, clients {name} ({CLIENTS} keep-alive clients; {seconds:g} s "
            f"per row and round, {rounds} interleaved round(s), figures from the round with the "
            "median successes; gunicorn -k gevent, "
            "1 worker; pool of 4 on psycopg 3, 5 ms per request)"
            f"\n\nSaturation: {saturation:.0f} successes/s (the best row that refuses "
            f"nobody). Targets for wsgipool's rows that refuse: successes ≥ "
            f"{GOODPUT_TARGET} × saturation, refusals' p99 ≤ "
            f"{REFUSAL_P99_TARGET * 1e3:.0f} ms. Unanswered: requests still waiting when "
            "the window closed (a row that answers some requests only after seconds "
            "leaves them out of its p99).\n\n"
            + table(["pool", "successes/s", "÷ saturation", "each round", "p50 ms",
                     "p99 ms", "max ms",
                     "refusals/s", "refusal p99 ms", "errors", "unanswered at end",
                     "client CPU (cores)"], rows))
    return Section("\n\n".join(texts), targets)


def run(quick: bool = False, seconds: Optional[float] = None,
        rounds: Optional[int] = None) -> Section:
    seconds = seconds or (1.0 if quick else 5.0)
    rounds = rounds or 1
    warm = 0.5 if quick else 1.0
    return report(measure(seconds, warm, rounds), seconds, rounds)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.overload",
                                     description="The overload section alone.")
    parser.add_argument("--seconds", type=float, default=5.0, help="per row and round")
    parser.add_argument("--warm", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--rows", default=",".join(ROWS), help="of: " + ", ".join(ROWS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="of: " + ", ".join(SCENARIOS))
    args = parser.parse_args()
    chosen = {key: ROWS[key] for key in args.rows.split(",")}
    scenarios = {name: SCENARIOS[name] for name in args.scenarios.split(",")}
    found = measure(args.seconds, args.warm, args.rounds, chosen, scenarios)
    print(report(found, args.seconds, args.rounds).markdown)
