"""Real gunicorn processes against the real servers: workers, preload, exits, reloads."""

import inspect
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

import wsgipool.gunicorn as hooks
from servers import ROOT, Gunicorn, get

APPS = os.path.join(ROOT, "tests", "gunicorn_apps")
CONFIG = os.path.join(APPS, "gunicorn_test.conf.py")
MAX_SIZE = 3
WORKERS = 2


def have_gevent():
    try:
        import gevent  # noqa: F401
    except ImportError:
        return False
    return True


def serve(server, requests=120, clients=8, path="/"):
    """Send requests concurrently; return [(status, worker pid, session id)]."""
    def one(_):
        status, body = get(server.url + path)
        pid, sid = body.split() if status == 200 else (b"0", b"0")
        return status, int(pid), int(sid)

    with ThreadPoolExecutor(clients) as executor:
        return list(executor.map(one, range(requests)))


def wait_gone(db, ids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while db.live_sessions(ids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return db.live_sessions(ids)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def start(db, tmp_path, **settings):
    env = {"DATABASE_URL": db.url, "POOL_MAX_SIZE": str(MAX_SIZE), "WORKERS": str(WORKERS),
           "MASTER_SESSION_FILE": str(tmp_path / "master_sid")}
    env.update({key: str(value) for key, value in settings.items()})
    return Gunicorn("sessions_app:app", "-c", CONFIG, cwd=APPS, env=env,
                    log_path=str(tmp_path / "gunicorn.log"))


WORKER_CLASSES = ["sync", "gthread"] + (["gevent"] if have_gevent() else [])


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_workers_serve_reuse_and_clean_up(server_db, tmp_path, worker_class, preload):
    aborted_before = server_db.status("Aborted_clients") if server_db.kind == "mysql" else 0
    server = start(server_db, tmp_path, WORKER_CLASS=worker_class, PRELOAD=int(preload),
                   OPEN_AT_IMPORT=int(preload))
    with server:
        results = serve(server)
        master_sid = int((tmp_path / "master_sid").read_text()) if preload else None
        if preload:  # the master's own session, opened before the fork, is intact
            assert server_db.live_sessions([master_sid]) == {master_sid}
    assert [status for status, _, _ in results] == [200] * len(results)
    by_worker = defaultdict(set)
    for _, pid, sid in results:
        by_worker[pid].add(sid)
    assert all(len(sids) <= MAX_SIZE for sids in by_worker.values()), by_worker
    seen = set().union(*by_worker.values())
    assert len(seen) <= WORKERS * MAX_SIZE < len(results)  # reused, not one per request
    if preload:
        assert master_sid not in seen
        seen.add(master_sid)
    # Graceful stop: every session of ours is closed properly.
    assert wait_gone(server_db, seen) == set()
    if server_db.kind == "mysql":
        assert server_db.status("Aborted_clients") == aborted_before
    log = server.log()
    assert "Traceback" not in log, log[-3000:]


def test_max_requests_recycling_closes_connections(server_db, tmp_path):
    aborted_before = server_db.status("Aborted_clients") if server_db.kind == "mysql" else 0
    server = start(server_db, tmp_path, WORKER_CLASS="sync", MAX_REQUESTS=20)
    with server:
        results = serve(server, requests=100, clients=4)
        pids = {pid for _, pid, _ in results}
        seen = {sid for _, _, sid in results}
        assert len(pids) > WORKERS  # workers were recycled
        time.sleep(0.5)
        exited = {pid for pid in pids if not alive(pid)}
        assert exited
        # Sessions of workers that already exited are gone while the server still runs.
        assert wait_gone(server_db, {sid for _, pid, sid in results if pid in exited}) == set()
    assert [status for status, _, _ in results] == [200] * 100
    assert wait_gone(server_db, seen) == set()
    if server_db.kind == "mysql":
        assert server_db.status("Aborted_clients") == aborted_before


def test_startup_line_states_the_connection_budget(postgresql, tmp_path):
    with start(postgresql, tmp_path) as server:
        assert serve(server, requests=4)[0][0] == 200
    log = server.log()
    assert f"opens at most {MAX_SIZE} connections; {WORKERS} workers can open " \
           f"{WORKERS * MAX_SIZE} in all" in log
    assert "4 threads per worker share max_size=3" in log  # threads > max_size warned


def test_config_alone_wraps_a_plain_app(server_db, tmp_path):
    with start(server_db, tmp_path, PLAIN=1, WRAP_APP=1) as server:
        results = serve(server, requests=40)
    assert [status for status, _, _ in results] == [200] * 40
    assert len({sid for _, _, sid in results}) <= WORKERS * MAX_SIZE


def test_sighup_reload_keeps_serving_within_bounds(postgresql, tmp_path):
    with start(postgresql, tmp_path) as server:
        before = serve(server, requests=40)
        server.signal(signal.SIGHUP)
        time.sleep(2)  # new workers boot from the re-read config
        after = serve(server, requests=60)
    statuses = [status for status, _, _ in before + after]
    assert statuses == [200] * 100
    by_worker = defaultdict(set)
    for _, pid, sid in after:
        by_worker[pid].add(sid)
    assert all(len(sids) <= MAX_SIZE for sids in by_worker.values())
    assert {pid for _, pid, _ in before}.isdisjoint({pid for _, pid, _ in after})


def test_example_config_serves_the_guestbook(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/guestbook.db", "WORKERS": "2",
           "THREADS": "2"}
    examples = os.path.join(ROOT, "examples")
    server = Gunicorn("guestbook:app", "-c", "gunicorn.conf.py", cwd=examples, env=env,
                      log_path=str(tmp_path / "gunicorn.log"))
    with server:
        status, _ = get(server.url + "/sign", data=b"name=Ada&message=Hello+there")
        assert status == 200  # urllib follows the 303 to the page
        pages = [get(server.url + "/") for _ in range(10)]
    assert all(status == 200 and b"Hello there" in body for status, body in pages)
    assert "2 workers can open 4 in all" in server.log()


def test_importing_wsgipool_does_not_import_gunicorn():
    code = ("import sys, wsgipool, wsgipool.gunicorn; "
            "sys.exit(1 if any(m == 'gunicorn' or m.startswith('gunicorn.') "
            "for m in sys.modules) else 0)")
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=ROOT),
                          timeout=30)
    assert done.returncode == 0


@pytest.mark.parametrize("hook, arity", [
    pytest.param(hooks.post_fork, 2, id="post_fork"),
    pytest.param(hooks.post_worker_init, 1, id="post_worker_init"),
    pytest.param(hooks.worker_exit, 2, id="worker_exit"),
    pytest.param(hooks.on_exit, 1, id="on_exit"),
])
def test_hooks_have_gunicorns_arity(hook, arity):
    assert len(inspect.signature(hook).parameters) == arity
