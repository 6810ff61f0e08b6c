"""Apache httpd with mod_wsgi (embedded and daemon mode) and with mod_python, for real.

Each server runs the README's configuration (its snippets, see apache.SITES) with children
as www-data, against the real PostgreSQL and MariaDB. Observed here, and asserted:

* Neither mod_wsgi nor mod_python imports the app in Apache's parent: both import it in
  each child (mod_wsgi daemon processes included), so children never share a session.
* mod_wsgi runs ``atexit`` when a child's interpreter shuts down (graceful stop, graceful
  restart, ``maximum-requests`` and ``MaxConnectionsPerChild`` recycling); mod_python
  runs none, only ``mod_python.apache.register_cleanup`` callbacks, which wsgipool
  registers itself. Either way every session is closed politely: MariaDB's
  ``Aborted_clients`` does not move.
* ``SetEnv`` reaches each request's environ, never ``os.environ``: ``PoolMiddleware(app)``
  with no URL makes its pool at the first request. A server-level ``PythonOption``
  (mod_python) is readable at import, so the pool is made then.
"""

import os
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

import apache
from conftest import REQUIRE_SERVERS
from servers import get

MAX_SIZE = 3
PROCESSES = 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def apache_installed():
    why = apache.missing()
    if why is None:
        try:
            apache.system_venv()
        except Exception as exc:  # pip or venv failed: say so once
            why = f"cannot build the system-Python venv for Apache ({exc})"
    if why:
        if REQUIRE_SERVERS:
            pytest.fail(f"CI requires Apache: {why}")
        pytest.skip(f"Apache tests need: {why}")


# (template, MPM, how many threads serve in each process)
MODES = {
    "mod_wsgi-embedded-prefork": ("mod_wsgi_embedded", "prefork", 1),
    "mod_wsgi-embedded-event": ("mod_wsgi_embedded", "event", 4),
    "mod_wsgi-daemon-prefork": ("mod_wsgi_daemon", "prefork", 4),
    "mod_wsgi-daemon-event": ("mod_wsgi_daemon", "event", 4),
    "mod_python-prefork": ("mod_python", "prefork", 1),
    "mod_python-worker": ("mod_python", "worker", 4),
}


def start(mode, db, **settings):
    template, mpm, _ = MODES[mode]
    settings.setdefault("maximum_requests", 0)
    return apache.Apache(template, mpm=mpm, processes=PROCESSES, url=db.url,
                         max_size=MAX_SIZE, **settings)


def load(httpd, requests=160, clients=8):
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(lambda _: get(httpd.url + "/"), range(requests)))
    assert [status for status, _ in answers] == [200] * requests, httpd.log()[-3000:]
    sessions = defaultdict(set)
    for _, body in answers:
        pid, sid = map(int, body.split())
        sessions[pid].add(sid)
    return sessions


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_closed(db, sids, timeout=10):
    deadline = time.monotonic() + timeout
    while db.live_sessions(sids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return db.live_sessions(sids)


def aborted_clients(db):
    return db.status("Aborted_clients") if db.kind == "mysql" else 0


@pytest.mark.parametrize("mode", list(MODES))
def test_serves_reuses_and_closes_on_graceful_stop(mode, server_db):
    """Hundreds of concurrent requests: all served; each process keeps at most max_size
    sessions and reuses them; graceful stop closes every one politely."""
    before = aborted_clients(server_db)
    httpd = start(mode, server_db)
    with httpd:
        sessions = load(httpd)
        log = httpd.log()
        parent = httpd.process.pid
        httpd.stop(graceful=True)
    served = set().union(*sessions.values())
    # Each pool was made in a process that served, never in Apache's parent: no
    # connection can have crossed a fork.
    makers = {int(pid) for pid in re.findall(r"pool \S+ (?:created|made from the first "
                                             r"request's environ) in pid (\d+)", log)}
    assert makers and parent not in makers and set(sessions) <= makers, (parent, makers)
    assert len(sessions) <= PROCESSES and all(len(s) <= MAX_SIZE for s in sessions.values())
    assert len(served) <= PROCESSES * MAX_SIZE
    if MODES[mode][2] == 1:  # one thread per process: one session each, reused
        assert all(len(s) == 1 for s in sessions.values())
    assert wait_closed(server_db, served) == set()
    assert aborted_clients(server_db) == before
    server = "mod_python" if "python" in mode else "mod_wsgi"
    line = re.search(rf"opens at most {MAX_SIZE} connections in pid (\d+); "
                     rf"(\d+) {server} processes can open (\d+) in all", log)
    assert line, log[-3000:]
    assert int(line.group(3)) == int(line.group(2)) * MAX_SIZE


@pytest.mark.parametrize("mode", ["mod_wsgi-embedded-prefork", "mod_wsgi-daemon-event",
                                  "mod_python-worker"])
def test_recycling_and_graceful_restart_close_every_session(mode, server_db):
    """Children recycled after a few requests (MaxConnectionsPerChild, mod_wsgi's
    maximum-requests), then a graceful restart: every exited child's sessions are closed,
    none aborted, and the server serves throughout."""
    before = aborted_clients(server_db)
    daemon = "daemon" in mode
    httpd = start(mode, server_db, maximum_requests=8 if daemon else 0,
                  max_connections_per_child=0 if daemon else 25)
    with httpd:
        sessions = defaultdict(set)
        for _ in range(4):  # in bursts: a recycled process exits once it is idle
            for pid, sids in load(httpd, requests=20).items():
                sessions[pid] |= sids
            time.sleep(0.3)
        assert len(sessions) > PROCESSES  # children were recycled and replaced
        time.sleep(0.5)  # a recycled child finishes exiting
        gone = {pid: sids for pid, sids in sessions.items() if not alive(pid)}
        assert gone, "no child was recycled"
        assert wait_closed(server_db, set().union(*gone.values())) == set()
        httpd.graceful_restart()
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in sessions) and time.monotonic() < deadline:
            get(httpd.url + "/")  # served while the old children finish
            time.sleep(0.1)
        assert not any(alive(pid) for pid in sessions)
        assert wait_closed(server_db, set().union(*sessions.values())) == set()
        after = load(httpd, requests=40)
        assert not set(after) & set(sessions)  # new children, new sessions
        httpd.stop(graceful=True)
    assert wait_closed(server_db, set().union(*after.values())) == set()
    assert aborted_clients(server_db) == before


def test_mod_python_setenv_alone_configures_the_pool_at_the_first_request(postgresql):
    """Without the server-level PythonOption, mod_python's SetEnv reaches the request
    environ only: the pool is made at the first request, and reused after."""
    httpd = apache.Apache("mod_python_setenv", mpm="prefork", processes=1,
                          url=postgresql.url, max_size=MAX_SIZE)
    with httpd:
        sessions = load(httpd, requests=30, clients=1)
        log = httpd.log()
        httpd.stop(graceful=True)
    assert len(sessions) == 1 and all(len(s) == 1 for s in sessions.values())
    assert "made from the first request's environ" in log
