"""End to end: gunicorn serving a SELECT 1 handler, driven by wrk over loopback.

The same handler (``e2e_app.py``) gets its connection four ways: wsgipool's middleware,
a new connection per request, a thread-local persistent connection (the ideal: no pool,
no lock, nothing shared) and SQLAlchemy's QueuePool. Each runs under gunicorn gthread
(2 workers x 4 threads) and sync (2 workers), on PostgreSQL and MariaDB.

For one database and one worker setup, the servers are started together (each on a
listening socket of our own, bound to a free port and passed as ``fd://``, so no port
can be taken in between; each with ``--no-control-socket``), warmed up, then measured in
interleaved rounds (A B C D A B C D). Each server is stopped by its own pid; every
subprocess has a time limit. Ratios are taken round by round, then their median.

Noise. On a small machine wrk, the two workers and the database share a few cores, and
throughput moves by 10 % or more between identical runs. Two measures keep that in
check and in view. wrk sends ``Connection: close``, so requests, not wrk's eight
keep-alive connections, are spread between the workers: with keep-alive, how the kernel
happened to split those eight moved gthread's throughput by up to 2x from one run to the
next (``--e2e-keep-alive`` measures that way anyway). The price: every request also pays
a TCP handshake, which narrows every ratio, the gap to connect-per-request included. And
an A/A control, a second identical thread-local server, is measured like the others:
how far it strays from 1.00 is this run's noise, and the targets say when a margin is
smaller than that.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, NamedTuple, Optional, Tuple

from .common import URLS, Section, Target, TITLES, median, paired_ratio, table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# key -> (the app's BENCH_WAY, label)
WAYS = {
    "wsgipool": ("wsgipool", "wsgipool (PoolMiddleware)"),
    "threadlocal": ("threadlocal", "thread-local connection (ideal)"),
    "connect": ("connect", "connect per request"),
    "sqlalchemy": ("sqlalchemy", "SQLAlchemy QueuePool"),
    "control": ("threadlocal", "thread-local again (A/A control: noise)"),
}
SETUPS = {
    "gthread 2 workers × 4 threads": ["--workers", "2", "--worker-class", "gthread",
                                      "--threads", "4"],
    "sync 2 workers": ["--workers", "2", "--worker-class", "sync"],
}
WRK = ["wrk", "-t2", "-c8", "--latency", "--timeout", "5s"]
CLOSE = ["-H", "Connection: close"]  # left out with --e2e-keep-alive


class Server:
    """One gunicorn, on a socket bound here to a free port."""

    def __init__(self, key: str, url: str, setup: str, logdir: str) -> None:
        self.way = way = WAYS[key][0]
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        listener.set_inheritable(True)
        self.port = listener.getsockname()[1]
        self.log_path = os.path.join(logdir, f"gunicorn-{key}-{self.port}.log")
        env = dict(os.environ, BENCH_WAY=way, DATABASE_URL=url,
                   PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--no-control-socket",
                 "--bind", f"fd://{listener.fileno()}", *SETUPS[setup],
                 "--log-level", "warning", "--graceful-timeout", "5", "e2e_app:app"],
                cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, pass_fds=(listener.fileno(),))
        listener.close()  # gunicorn has its own copy
        self.url = f"http://127.0.0.1:{self.port}/"

    def wait_ready(self, deadline: float) -> None:
        """Until a request is answered 200 (the workers have booted and connect)."""
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn for {self.way} exited: {self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn for {self.way} did not answer 200: "
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return " | ".join(log.read().strip().splitlines()[-5:]) or "(no output)"
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM to this gunicorn's own pid; SIGKILL if it is not gone in time."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


class Run(NamedTuple):
    rate: float  # requests per second
    p99: float  # milliseconds
    errors: int  # non-2xx responses and socket errors


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_command(seconds: int, keep_alive: bool) -> List[str]:
    return [*WRK, *([] if keep_alive else CLOSE), f"-d{seconds}s"]


def wrk(url: str, seconds: int, keep_alive: bool) -> Run:
    done = subprocess.run([*wrk_command(seconds, keep_alive), url], capture_output=True,
                          text=True, timeout=seconds + 30)
    out = done.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if done.returncode != 0 or not rate or not p99:
        raise RuntimeError(f"wrk failed ({done.returncode}): {out} {done.stderr}")
    errors = sum(int(found) for found in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket_errors:
        # gunicorn's sync worker closes after each response: wrk may count those as read
        # errors; connect, write and timeout errors are real ones.
        errors += sum(int(socket_errors.group(i)) for i in (1, 3, 4))
    return Run(float(rate.group(1)), float(p99.group(1)) * _UNITS[p99.group(2)], errors)


def measure(url: str, setup: str, seconds: int, rounds: int, warm: int, keep_alive: bool,
            logdir: str) -> Dict[str, List[Run]]:
    servers = {}
    try:
        for key in WAYS:
            servers[key] = Server(key, url, setup, logdir)
        deadline = time.monotonic() + 30
        for server in servers.values():
            server.wait_ready(deadline)
        if warm:
            for server in servers.values():
                wrk(server.url, warm, keep_alive)  # connections open, code loaded
        runs: Dict[str, List[Run]] = {key: [] for key in WAYS}
        for _ in range(rounds):
            for key, server in servers.items():
                runs[key].append(wrk(server.url, seconds, keep_alive))
        return runs
    finally:
        for server in servers.values():
            server.stop()


def _spread(values: List[float]) -> str:
    return f"{min(values):.2f}–{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def report(kind: str, setup: str, runs: Dict[str, List[Run]], command: str,
           rounds: int) -> Tuple[str, List[Target]]:
    ideal = [run.rate for run in runs["threadlocal"]]
    ideal_p99 = [run.p99 for run in runs["threadlocal"]]
    connect = [run.rate for run in runs["connect"]]
    rows = []
    for key, (_, label) in WAYS.items():
        rates = [run.rate for run in runs[key]]
        rows.append([
            label, f"{median(rates):.0f}", f"{paired_ratio(rates, ideal):.2f}",
            " ".join(f"{rate / base:.2f}" for rate, base in zip(rates, ideal)),
            f"{median([run.p99 for run in runs[key]]):.2f}",
            f"{paired_ratio([run.p99 for run in runs[key]], ideal_p99):.2f}",
            f"{paired_ratio(rates, connect):.1f}",
            sum(run.errors for run in runs[key]),
        ])
    text = (f"### End to end, {TITLES[kind]}, gunicorn {setup} (`{command}`; "
            f"median of {rounds} interleaved rounds)\n\n"
            + table(["connection", "requests/s", "÷ ideal", "÷ ideal, each round",
                     "p99 ms", "p99 ÷ ideal's", "÷ connect per request", "errors"], rows))

    def versus_ideal(key: str, field: str) -> List[float]:
        """Round by round: this way's figure ÷ the ideal's."""
        return [getattr(run, field) / getattr(base, field)
                for run, base in zip(runs[key], runs["threadlocal"])]

    where = f"e2e {TITLES[kind]}, {setup.split(' ')[0]}"
    ours_rate, control_rate = versus_ideal("wsgipool", "rate"), versus_ideal("control", "rate")
    ours_p99, control_p99 = versus_ideal("wsgipool", "p99"), versus_ideal("control", "p99")
    rate_noise = max(abs(ratio - 1) for ratio in control_rate)
    p99_noise = max(abs(ratio - 1) for ratio in control_p99)
    speed, p99 = median(ours_rate), median(ours_p99)
    targets = [
        Target(f"{where}: requests/s >= 0.97 × the thread-local ideal's",
               f"{speed:.2f} (rounds {_spread(ours_rate)}; A/A control {_spread(control_rate)})",
               speed >= 0.97, _noise_note(speed - 0.97, rate_noise)),
        Target(f"{where}: p99 within 1.5 × the ideal's",
               f"{p99:.2f} (rounds {_spread(ours_p99)}; A/A control {_spread(control_p99)})",
               p99 <= 1.5, _noise_note(1.5 - p99, p99_noise)),
    ]
    if kind == "postgresql":
        versus = paired_ratio([run.rate for run in runs["wsgipool"]], connect)
        ceiling = paired_ratio(ideal, connect)
        targets.append(Target(f"{where}: requests/s >= 10 × connect per request",
                              f"{versus:.1f} (the thread-local ideal: {ceiling:.1f})",
                              versus >= 10))
    errors = sum(run.errors for run in runs["wsgipool"])
    if errors:
        targets.append(Target(f"{where}: no errors", f"{errors} errors", False))
    return text, targets


def _noise_note(margin: float, noise: float) -> str:
    """Whether a target was met or missed by less than the A/A control strayed from 1.00.

    ``margin``: how far on the good side of the threshold the figure is (negative: missed).
    """
    if abs(margin) <= noise:
        return (f"margin {margin:+.2f}, within this run's noise: "
                f"the A/A control strayed {noise:.2f}")
    return "" if margin > 0 else f"by more than this run's noise ({noise:.2f})"


def run(quick: bool = False, rounds: Optional[int] = None, seconds: Optional[int] = None,
        keep_alive: bool = False) -> Section:
    if not shutil.which("wrk"):
        return Section("### End to end\n\nskipped: wrk is not installed (Debian package wrk)",
                       [Target("end to end", "wrk not installed", None)])
    default_seconds, default_rounds, warm = (1, 1, 0) if quick else (3, 3, 1)
    seconds = seconds or default_seconds
    rounds = rounds or default_rounds
    sections, targets = [], []
    with tempfile.TemporaryDirectory(prefix="wsgipool-bench-") as logdir:
        for kind in ("postgresql", "mysql"):
            for setup in SETUPS:
                print(f"  e2e {TITLES[kind]}, {setup}...", file=sys.stderr, flush=True)
                runs = measure(URLS[kind], setup, seconds, rounds, warm, keep_alive, logdir)
                command = " ".join(f"'{arg}'" if " " in arg else arg
                                   for arg in wrk_command(seconds, keep_alive))
                text, found = report(kind, setup, runs, command, rounds)
                sections.append(text)
                targets += found
    return Section("\n\n".join(sections), targets)
