"""End to end across servers: the same wsgipool SELECT 1 app under gunicorn gthread,
uWSGI and Apache mod_wsgi (daemon mode), each 2 processes × 4 threads, driven by wrk.

The app is ``e2e_app.py`` with ``BENCH_WAY=wsgipool`` (PoolMiddleware, max_size=4), on
PostgreSQL. The three servers run at once and are measured in interleaved rounds (A B C
A B C), as the gunicorn end-to-end figures are, with ``Connection: close``; ratios are
to gunicorn, round by round. Each server is stopped by its own pid.

Apache's children run as ``www-data``, which cannot read a Python installed under
``/root``; mod_wsgi is therefore built for the system Python (``/usr/bin/python3``) in a
virtual environment of its own, ``.venv-system`` (made on first use; the Apache tests
share it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

from .common import URLS, Section, median, paired_ratio, table
from .e2e import HERE, ROOT, Run, Server, wrk, wrk_command

SETUP = "gthread 2 workers × 4 threads"


def system_venv() -> str:
    """The system-Python virtual environment the Apache tests make (tests/apache.py)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        import apache  # tests/apache.py
    finally:
        sys.path.pop(0)
    return apache.system_venv()


class ModWsgi:
    """mod_wsgi-express in daemon mode, 2 processes × 4 threads, children as www-data."""

    def __init__(self, url: str, port: int, logdir: str) -> None:
        venv = system_venv()
        self.root = tempfile.mkdtemp(prefix="modwsgi-", dir=logdir)
        os.chmod(self.root, 0o755)
        subprocess.run(
            [os.path.join(venv, "bin", "mod_wsgi-express"), "setup-server", "e2e_app.py", "--callable-object", "app",
             "--processes", "2", "--threads", "4", "--host", "127.0.0.1",
             "--port", str(port), "--user", "www-data", "--group", "www-data",
             "--server-root", self.root, "--python-path", HERE, "--python-path", ROOT,
             "--log-level", "warn"],
            cwd=HERE, check=True, capture_output=True, timeout=60)
        env = dict(os.environ, BENCH_WAY="wsgipool", DATABASE_URL=url, LC_ALL="C.UTF-8")
        subprocess.run([os.path.join(self.root, "apachectl"), "start"], env=env, check=True,
                       capture_output=True, timeout=60)
        self.url = f"http://127.0.0.1:{port}/"
        self.port = port

    def pid(self) -> int:
        with open(os.path.join(self.root, "httpd.pid")) as file:
            return int(file.read())

    def stop(self) -> None:
        try:
            pid = self.pid()
        except (OSError, ValueError):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


class Uwsgi:
    """uWSGI (the pyuwsgi wheel of this venv): master, 2 processes × 4 threads."""

    def __init__(self, url: str, port: int, logdir: str) -> None:
        uwsgi = os.path.join(os.path.dirname(sys.executable), "uwsgi")
        env = dict(os.environ, BENCH_WAY="wsgipool", DATABASE_URL=url,
                   PYTHONPATH=os.pathsep.join([ROOT, HERE]))
        self.log = open(os.path.join(logdir, f"uwsgi-{port}.log"), "wb")
        self.process = subprocess.Popen(
            [uwsgi, "--master", "--processes", "2", "--threads", "4",
             "--http-socket", f"127.0.0.1:{port}", "--module", "e2e_app:app",
             "--chdir", HERE, "--disable-logging", "--die-on-term"],
            cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
            stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/"
        self.port = port

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.close()


def _wait_ready(url: str, deadline: float) -> None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    while True:
        try:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            conn.request("GET", "/")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200")
        time.sleep(0.2)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(quick: bool = False, keep_alive: bool = False) -> Section:
    if not shutil.which("wrk") or not shutil.which("apache2", path="/usr/sbin"):
        return Section("### Servers\n\nskipped: needs wrk and Apache "
                       "(apt-get install wrk apache2 apache2-dev python3-dev python3-venv)\n",
                       [])
    seconds, rounds = (3, 2) if quick else (5, 3)
    url = URLS["postgresql"]
    logdir = tempfile.mkdtemp(prefix="wsgipool-servers-")
    os.chmod(logdir, 0o755)
    servers: Dict[str, object] = {}
    try:
        servers["gunicorn gthread 2 × 4"] = Server("wsgipool", url, SETUP, logdir)
        servers["uWSGI 2 × 4"] = Uwsgi(url, _free_port(), logdir)
        servers["Apache mod_wsgi daemon 2 × 4"] = ModWsgi(url, _free_port(), logdir)
        deadline = time.monotonic() + 60
        for server in servers.values():
            _wait_ready(server.url, deadline)
        for server in servers.values():
            wrk(server.url, 1, keep_alive)  # warm: connections open, code loaded
        runs: Dict[str, List[Run]] = {name: [] for name in servers}
        for _ in range(rounds):
            for name, server in servers.items():
                runs[name].append(wrk(server.url, seconds, keep_alive))
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(logdir, ignore_errors=True)
    base = [run.rate for run in runs["gunicorn gthread 2 × 4"]]
    base_p99 = [run.p99 for run in runs["gunicorn gthread 2 × 4"]]
    rows = []
    for name, figures in runs.items():
        rates, p99s = [r.rate for r in figures], [r.p99 for r in figures]
        rows.append([name, f"{median(rates):.0f}", f"{paired_ratio(rates, base):.2f}",
                     f"{median(p99s):.2f}", f"{paired_ratio(p99s, base_p99):.2f}",
                     sum(r.errors for r in figures)])
    command = " ".join(wrk_command(seconds, keep_alive))
    return Section(
        f"### One app, three servers: wsgipool SELECT 1 on PostgreSQL, 2 processes × 4 "
        f"threads each (`{command}`; median of {rounds} interleaved rounds)\n\n"
        + table(["server", "requests/s", "÷ gunicorn", "p99 ms", "p99 ÷ gunicorn's",
                 "errors"], rows),
        [])
