"""End to end: gunicorn serving a SELECT 1 handler, driven by wrk on loopback.

The same handler gets its connection four ways: wsgipool, a new connection per request,
a thread-local persistent connection (the ideal: no pool, no waiting, nothing to share),
and SQLAlchemy's QueuePool. Every gunicorn is stopped by its own pid.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

from .common import MYSQL_URL, POSTGRESQL_URL, median, table

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WAYS = ("wsgipool", "threadlocal", "connect", "sqlalchemy")
SETUPS = {"gthread 2×4": ["--workers", "2", "--worker-class", "gthread", "--threads", "4"],
          "sync 2": ["--workers", "2", "--worker-class", "sync"]}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(way, url, setup):
    port = free_port()
    env = dict(os.environ, BENCH_APP=way, DATABASE_URL=url,
               PYTHONPATH=os.pathsep.join([ROOT, HERE]))
    process = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "--no-control-socket",
         "-b", f"127.0.0.1:{port}", *SETUPS[setup], "e2e_app:app"],
        cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                raise RuntimeError(f"gunicorn for {way} did not start")
            time.sleep(0.05)
    return process, f"http://127.0.0.1:{port}/"


def stop(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wrk(target, seconds):
    done = subprocess.run(["wrk", "-t2", "-c8", f"-d{seconds}s", "--latency", target],
                          capture_output=True, text=True, timeout=seconds + 30)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", done.stdout).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", done.stdout)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    return rate, float(p99.group(1)) * scale, int(errors.group(1)) if errors else 0


def run(quick=False):
    if not shutil.which("wrk"):
        return "### End to end\n\nskipped: wrk is not installed (Debian package wrk)"
    seconds, rounds = (2, 1) if quick else (4, 3)
    sections = []
    for title, url in (("PostgreSQL", POSTGRESQL_URL), ("MariaDB", MYSQL_URL)):
        for setup in SETUPS:
            figures = {way: [] for way in WAYS}
            for _ in range(rounds):
                for way in WAYS:
                    process, target = serve(way, url, setup)
                    try:
                        wrk(target, 1)  # warm up: connections open, code loaded
                        figures[way].append(wrk(target, seconds))
                    finally:
                        stop(process)
            ideal = figures["threadlocal"]
            rows = []
            for way, runs in figures.items():
                # Ratios round by round (the runs were interleaved), then their median.
                rate_ratio = median([r[0] / i[0] for r, i in zip(runs, ideal)])
                p99_ratio = median([r[1] / i[1] for r, i in zip(runs, ideal)])
                rows.append([way, f"{median([r for r, _, _ in runs]):.0f}", f"{rate_ratio:.2f}",
                             f"{median([p for _, p, _ in runs]):.2f}", f"{p99_ratio:.2f}",
                             sum(e for _, _, e in runs)])
            sections.append(
                f"### End to end, {title}, gunicorn {setup} (wrk -t2 -c8, {seconds} s, "
                f"median of {rounds})\n\n"
                + table(["connection", "requests/s", "vs thread-local ideal", "p99 ms",
                         "p99 vs ideal", "non-2xx"], rows))
    return "\n\n".join(sections)
