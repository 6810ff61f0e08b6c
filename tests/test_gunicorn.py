"""Real gunicorn processes against the real servers: worker classes, preload, exits, reloads.

Each server is started by the ``gunicorn`` fixture and stopped by its own pid (SIGTERM,
then SIGKILL after 15 s) when the test ends, whatever happened.
"""

import importlib.util
import inspect
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

import wsgipool.gunicorn as hooks
from servers import ROOT, Gunicorn, get

APPS = os.path.join(ROOT, "tests", "gunicorn_apps")
CONFIG = os.path.join(APPS, "gunicorn_test.conf.py")
EXAMPLES = os.path.join(ROOT, "examples")
MAX_SIZE = 3
WORKERS = 2
STOP_TIMEOUT = 15  # seconds between SIGTERM and SIGKILL
GONE_TIMEOUT = 5  # seconds the server may take to notice a closed session

HAVE_GEVENT = importlib.util.find_spec("gevent") is not None
WORKER_CLASSES = [
    pytest.param("sync", id="sync"),
    pytest.param("gthread", id="gthread"),
    pytest.param("gevent", id="gevent", marks=pytest.mark.skipif(
        not HAVE_GEVENT, reason="gevent is not installed (pip install gevent)")),
]

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc for workers")


@pytest.fixture
def gunicorn(tmp_path):
    """Start a gunicorn master (ready to accept); every one is stopped at the test's end."""
    started = []

    def start(app, *args, cwd=APPS, env=None):
        server = Gunicorn(app, *args, cwd=cwd, env=env,
                          log_path=str(tmp_path / f"gunicorn-{len(started)}.log"))
        started.append(server)
        server.wait_ready()
        wait_booted(server)
        return server

    yield start
    for server in started:
        server.stop(timeout=STOP_TIMEOUT)


def wait_booted(server, leaving=(), timeout=20):
    """Wait until the master has its WORKERS workers, none of them in ``leaving``, and
    each has run post_worker_init (its budget line is in the log).

    A worker signalled before it installs its own handlers (a gevent worker spends a
    while monkey-patching first) loses the signal in gunicorn's inherited handler and is
    SIGKILLed after graceful_timeout: never stop or reload a server with one booting.
    """
    deadline = time.monotonic() + timeout
    while server.process.poll() is None and time.monotonic() < deadline:
        workers = children(server.process.pid)
        booted = {pid for pid, _, _, _ in budget_lines(server.log())}
        if len(workers) == WORKERS and workers <= booted and not workers & set(leaving):
            return workers
        time.sleep(0.05)
    raise AssertionError(f"workers did not boot: {server.log()[-3000:]}")


def stop(server, leaving=()):
    """Stop gracefully (SIGTERM to the master's pid) once no worker is booting."""
    wait_booted(server, leaving)
    return server.stop(timeout=STOP_TIMEOUT)


def settings(db, tmp_path, **more):
    """The environment the test config and app read."""
    env = {"DATABASE_URL": db.url, "POOL_MAX_SIZE": str(MAX_SIZE), "WORKERS": str(WORKERS),
           "MASTER_SESSION_FILE": str(tmp_path / "master_session")}
    env.update({key: str(value) for key, value in more.items()})
    return env


def serve(server, requests=160, clients=8):
    """Send requests from 8 concurrent clients; return [(status, worker pid, session id)]."""
    def one(_):
        status, body = get(server.url + "/")
        pid, sid = body.split() if status == 200 else (b"0", b"0")
        return status, int(pid), int(sid)

    with ThreadPoolExecutor(clients) as executor:
        return list(executor.map(one, range(requests)))


class Traffic:
    """8 clients sending requests back to back, until stopped."""

    def __init__(self, server, clients=8):
        self.url = server.url + "/"
        self.results = []  # (status, worker pid, session id); status is text on failure
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                status, body = get(self.url)
            except Exception as exc:  # refused, reset...: a failed request, not a crash
                self.results.append((repr(exc), 0, 0))
                continue
            pid, sid = body.split() if status == 200 else (b"0", b"0")
            self.results.append((status, int(pid), int(sid)))

    def wait_for(self, condition, timeout=20):
        deadline = time.monotonic() + timeout
        while not condition(list(self.results)):
            assert time.monotonic() < deadline, f"timed out; {statuses(self.results)}"
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in self._threads)
        return list(self.results)


def sessions_by_worker(results):
    by_worker = defaultdict(set)
    for _, pid, sid in results:
        by_worker[pid].add(sid)
    return dict(by_worker)


def statuses(results):
    return Counter(status for status, _, _ in results)


def children(pid):
    """The live (not zombie) child processes of ``pid``: a gunicorn master's workers."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


def wait_gone(db, ids, timeout=GONE_TIMEOUT):
    """Which of ``ids`` the server still has after up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while db.live_sessions(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return db.live_sessions(ids)


def mariadb_error_log(db):
    """The server's error log, if this process can read it and it names aborted sessions."""
    admin = db.admin()
    try:
        cursor = admin.cursor()
        cursor.execute("SELECT @@log_error, @@log_warnings")
        path, warnings = cursor.fetchone()
    finally:
        admin.close()
    return path if warnings >= 2 and path and os.access(path, os.R_OK) else None


def aborted_mark(db):
    """Where MariaDB's count of aborted clients (and its error log) stand now."""
    if db.kind != "mysql":
        return None  # PostgreSQL: a session is either there or not
    path = mariadb_error_log(db)
    return db.status("Aborted_clients"), path, path and os.path.getsize(path)


def assert_none_aborted(db, mark, ids):
    """None of ``ids`` ended without COM_QUIT: Aborted_clients did not grow since ``mark``.

    Other clients of a shared server can make it grow meanwhile; then the server's error
    log, if this process can read it, says whose sessions were aborted.
    """
    if mark is None:
        return
    before, path, offset = mark
    grown = db.status("Aborted_clients") - before
    if grown:
        assert path, f"Aborted_clients grew by {grown} (no readable error log to say whose)"
        with open(path, "rb") as handle:
            handle.seek(offset)
            logged = handle.read().decode("utf-8", "replace")
        aborted = {int(sid) for sid in re.findall(r"Aborted connection (\d+) ", logged)}
        assert aborted & set(ids) == set()


def budget_lines(log):
    """(worker pid, max_size, workers, total) of each wsgipool startup line."""
    return [tuple(map(int, found)) for found in re.findall(
        r"worker pid (\d+): pool .* opens at most (\d+) connections; "
        r"(\d+) workers can open (\d+) in all", log)]


def closed_in(log):
    """The pids whose pools were closed explicitly (worker_exit), per the log."""
    return {int(pid) for pid in re.findall(r"pool .* closed in pid (\d+)", log)}


def read_numbers(path):
    with open(path) as handle:
        return [int(word) for word in handle.read().split()]


@pytest.mark.parametrize("mode", [
    pytest.param("no-preload", id="no-preload"),
    pytest.param("preload", id="preload"),
    pytest.param("preload-open", id="preload-open-at-import"),
])
@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_workers_reuse_bounded_sessions_and_close_them_on_stop(
        server_db, gunicorn, tmp_path, worker_class, mode):
    """Every request succeeds; each worker keeps to max_size sessions and reuses them.

    With preload_app and a connection opened at import, the master's session survives
    the fork and the workers (it is alive while they serve, and the master queries it
    again at exit). After a graceful stop no session is left and no client aborted.
    """
    aborted = aborted_mark(server_db)
    env = settings(server_db, tmp_path, WORKER_CLASS=worker_class,
                   PRELOAD=int(mode != "no-preload"), OPEN_AT_IMPORT=int(mode == "preload-open"))
    if mode == "preload-open":
        env["MASTER_EXIT_FILE"] = str(tmp_path / "master_exit")
    server = gunicorn("sessions_app:app", "-c", CONFIG, env=env)
    master = server.process.pid
    results = serve(server)
    workers = children(master)
    if mode == "preload-open":
        opener, master_sid = read_numbers(tmp_path / "master_session")
        assert opener == master  # opened in the master, before the fork
        assert server_db.live_sessions([master_sid]) == {master_sid}  # while workers serve
    assert stop(server) == 0
    log = server.log()

    assert statuses(results) == {200: len(results)}, log[-3000:]
    by_worker = sessions_by_worker(results)
    assert len(workers) == WORKERS and set(by_worker) <= workers
    assert log.count("Booting worker with pid") == WORKERS  # none crashed and came back
    assert f"Using worker: {worker_class}" in log
    # A sync worker serves one request at a time: one session is all it ever needs.
    bound = 1 if worker_class == "sync" else MAX_SIZE
    assert all(1 <= len(sids) <= bound for sids in by_worker.values()), by_worker
    seen = set().union(*by_worker.values())
    assert len(seen) <= WORKERS * bound < len(results)  # reused, not one per request
    if mode == "preload-open":
        assert master_sid not in seen  # no worker used the master's connection
        # At exit, after every worker is gone, the master's pool still has its one
        # connection, open since before the fork, and it still answers.
        assert read_numbers(tmp_path / "master_exit") == [master, master_sid, 1]
        seen.add(master_sid)
    assert closed_in(log) >= workers  # worker_exit closed each worker's pool
    assert wait_gone(server_db, seen) == set()
    assert_none_aborted(server_db, aborted, seen)  # every session closed with COM_QUIT
    assert "Traceback" not in log, log[-3000:]
    assert "rolled back a transaction" not in log  # the app ended its own


def test_max_requests_recycling_closes_each_workers_sessions(server_db, gunicorn, tmp_path):
    """A worker retired by max_requests closes its session as it goes; the rest stay open."""
    aborted = aborted_mark(server_db)
    env = settings(server_db, tmp_path, WORKER_CLASS="sync", MAX_REQUESTS=20)
    server = gunicorn("sessions_app:app", "-c", CONFIG, env=env)
    results = serve(server, requests=100)
    assert statuses(results) == {200: 100}, server.log()[-3000:]
    served = Counter(pid for _, pid, _ in results)
    by_worker = sessions_by_worker(results)
    retired = {pid for pid, count in served.items() if count >= 20}
    staying = set(served) - retired
    assert len(retired) >= 3  # 100 requests, 20 per worker
    # While the server runs: the retired workers' sessions are closed, the others' open.
    assert wait_gone(server_db, set().union(*(by_worker[pid] for pid in retired))) == set()
    staying_sids = set().union(set(), *(by_worker[pid] for pid in staying))
    assert server_db.live_sessions(staying_sids) == staying_sids
    assert stop(server, leaving=retired) == 0
    log = server.log()

    assert all(served[pid] == 20 for pid in retired)
    assert closed_in(log) >= set(served)  # each retired worker closed its pool on exit
    assert all(len(sids) == 1 for sids in by_worker.values()), by_worker
    seen = set().union(*by_worker.values())
    assert wait_gone(server_db, seen) == set()
    assert_none_aborted(server_db, aborted, seen)
    assert "Traceback" not in log, log[-3000:]


def test_startup_line_states_the_connection_budget(postgresql, gunicorn, tmp_path):
    """Each worker logs, once, what it may open and what all the workers may open."""
    env = settings(postgresql, tmp_path, WORKER_CLASS="gthread", THREADS=4)
    server = gunicorn("sessions_app:app", "-c", CONFIG, env=env)
    results = serve(server, requests=40)
    assert stop(server) == 0
    log = server.log()

    assert statuses(results) == {200: 40}
    assert f"opens at most {MAX_SIZE} connections; {WORKERS} workers can open " \
           f"{WORKERS * MAX_SIZE} in all" in log
    lines = budget_lines(log)
    assert len(lines) == WORKERS
    assert {pid for pid, _, _, _ in lines} >= {pid for _, pid, _ in results}
    assert {line[1:] for line in lines} == {(MAX_SIZE, WORKERS, WORKERS * MAX_SIZE)}
    assert log.count("4 threads per worker share max_size=3 connections") == WORKERS


def test_example_config_serves_the_guestbook(gunicorn, tmp_path):
    """examples/gunicorn.conf.py loads, and the guestbook it configures serves."""
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/guestbook.db", "WORKERS": "2",
           "THREADS": "2"}
    server = gunicorn("guestbook:app", "-c", os.path.join("examples", "gunicorn.conf.py"),
                      "--chdir", EXAMPLES, cwd=ROOT, env=env)
    status, _ = get(server.url + "/sign", data=b"name=Ada&message=Hello+there")
    pages = [get(server.url + "/") for _ in range(10)]
    assert stop(server) == 0
    log = server.log()

    assert status == 200, log[-3000:]  # urllib followed the 303 to the page
    assert all(status == 200 and b"Hello there" in body for status, body in pages)
    assert (tmp_path / "guestbook.db").exists()  # DATABASE_URL was used, not the default
    assert "2 workers can open 4 in all" in log  # max_size = threads
    assert "max_connections" not in log  # SQLite: a file, no server to compare with
    assert "Traceback" not in log, log[-3000:]


def test_config_alone_wraps_a_plain_app(server_db, gunicorn, tmp_path):
    """configure(wrap_app=True): an app with no PoolMiddleware gets environ["db.conn"]."""
    aborted = aborted_mark(server_db)
    env = settings(server_db, tmp_path, WORKER_CLASS="gthread", WRAP_APP=1)
    server = gunicorn("plain_app:app", "-c", CONFIG, env=env)
    results = serve(server, requests=120)
    assert stop(server) == 0
    log = server.log()

    assert statuses(results) == {200: 120}, log[-3000:]
    by_worker = sessions_by_worker(results)
    assert all(len(sids) <= MAX_SIZE for sids in by_worker.values()), by_worker
    seen = set().union(*by_worker.values())
    assert len(seen) <= WORKERS * MAX_SIZE
    assert len(seen) < 120  # reused, not one per request
    assert wait_gone(server_db, seen) == set()  # worker_exit closed the wrapped pools
    assert_none_aborted(server_db, aborted, seen)
    assert "Traceback" not in log, log[-3000:]


def test_sighup_reload_under_load_keeps_serving_within_bounds(server_db, gunicorn, tmp_path):
    """SIGHUP while clients keep sending: gunicorn re-runs the config (configure() again)
    and replaces the workers; no request fails, every worker keeps to the same bound,
    and the old workers' sessions are closed as they go."""
    aborted = aborted_mark(server_db)
    env = settings(server_db, tmp_path, WORKER_CLASS="gthread")
    server = gunicorn("sessions_app:app", "-c", CONFIG, env=env)
    old_workers = children(server.process.pid)
    traffic = Traffic(server)
    try:
        traffic.wait_for(lambda results: len(results) >= 40)
        server.signal(signal.SIGHUP)  # no worker is booting: start() waited
        new_workers = wait_booted(server, leaving=old_workers)
        traffic.wait_for(lambda results: sum(pid in new_workers for _, pid, _ in results) >= 80)
    finally:
        results = traffic.stop()
    by_worker = sessions_by_worker(results)
    old_sids = set().union(*(by_worker.get(pid, set()) for pid in old_workers))
    assert wait_gone(server_db, old_sids) == set()  # while the server runs on
    assert stop(server) == 0
    log = server.log()

    assert statuses(results) == {200: len(results)}, log[-3000:]
    assert "Handling signal: hup" in log
    assert set(by_worker) <= old_workers | new_workers
    assert old_sids and len(results) > sum(pid in new_workers for _, pid, _ in results) >= 80
    assert all(len(sids) <= MAX_SIZE for sids in by_worker.values()), by_worker
    # Every worker, old and new, had the same budget: configure() replaced, not added.
    lines = budget_lines(log)
    assert len(lines) == 2 * WORKERS
    assert {line[1:] for line in lines} == {(MAX_SIZE, WORKERS, WORKERS * MAX_SIZE)}
    assert closed_in(log) >= old_workers | new_workers
    seen = set().union(*by_worker.values())
    assert wait_gone(server_db, seen) == set()
    assert_none_aborted(server_db, aborted, seen)
    assert "Traceback" not in log, log[-3000:]


def test_importing_wsgipool_does_not_import_gunicorn():
    """The hooks module reads only what gunicorn hands it: gunicorn stays optional."""
    code = ("import wsgipool, wsgipool.gunicorn, sys; "
            "assert 'gunicorn.app' not in sys.modules and 'gunicorn' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                          capture_output=True, timeout=30)
    assert (done.returncode, done.stderr) == (0, b"")


@pytest.mark.parametrize("hook, arity", [
    pytest.param(hooks.post_fork, 2, id="post_fork"),
    pytest.param(hooks.post_worker_init, 1, id="post_worker_init"),
    pytest.param(hooks.worker_exit, 2, id="worker_exit"),
    pytest.param(hooks.on_exit, 1, id="on_exit"),
])
def test_hooks_have_gunicorns_arity(hook, arity):
    """gunicorn refuses a hook whose positional parameters differ from its own."""
    parameters = inspect.signature(hook).parameters.values()
    assert [p.kind for p in parameters] == [inspect.Parameter.POSITIONAL_OR_KEYWORD] * arity


# Run as a separate process, so the pools closed are only its own and atexit never runs:
# the process exits through os._exit once the test has looked at the server.
HOOK_PROGRAM = """
import json, os, sys
import wsgipool.gunicorn as hooks
from wsgipool import Pool, PoolClosed

pools = [Pool(sys.argv[1], max_size=2), Pool(sys.argv[1], max_size=2, name="second")]
sids = []
for pool in pools:
    first, second = pool.checkout(), pool.checkout()
    for entry in (first, second):
        cursor = entry.conn.cursor()
        cursor.execute(sys.argv[2])
        sids.append(cursor.fetchone()[0])
        entry.conn.rollback()
    pool.checkin(first)
    pool.checkin(second)
getattr(hooks, sys.argv[3])(*([None] * int(sys.argv[4])))
refused = 0
for pool in pools:
    try:
        pool.checkout()
    except PoolClosed:
        refused += 1
print(json.dumps({"sids": sids, "refused": refused,
                  "stats": [pool.stats() for pool in pools]}), flush=True)
sys.stdin.read()  # alive until the test has checked the server
os._exit(0)
"""
# The wsgipool this test run imported (the checkout, unless PYTHONPATH says otherwise).
UNDER_TEST = os.path.dirname(os.path.dirname(os.path.abspath(hooks.__file__)))
SESSION_SQL = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


@pytest.mark.parametrize("hook, arity", [
    pytest.param("worker_exit", 2, id="worker_exit"),
    pytest.param("on_exit", 1, id="on_exit"),
])
def test_exit_hook_itself_closes_the_pools_and_their_sessions(server_db, tmp_path, hook,
                                                             arity):
    """The hook alone, not the atexit handler: the process is still running (and later
    leaves by os._exit) when its pools must be closed and its sessions gone."""
    import json

    aborted = aborted_mark(server_db)
    program = subprocess.Popen(
        [sys.executable, "-c", HOOK_PROGRAM, server_db.url, SESSION_SQL[server_db.kind],
         hook, str(arity)],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=UNDER_TEST), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = program.stdout.readline()
        assert line, program.stderr.read()
        seen = json.loads(line)
        still_open = wait_gone(server_db, seen["sids"])  # while the process lives on
        assert program.poll() is None
    finally:
        try:
            program.communicate("", timeout=15)
        except subprocess.TimeoutExpired:
            program.kill()
            program.communicate(timeout=15)
    assert len(set(seen["sids"])) == 4
    assert still_open == set()
    assert seen["refused"] == 2  # closed: no checkout any more
    for stats in seen["stats"]:
        assert (stats["size"], stats["closes"], stats["discard_reasons"]["pool_closed"]) == \
            (0, 2, 2)
    assert_none_aborted(server_db, aborted, seen["sids"])  # closed with COM_QUIT
