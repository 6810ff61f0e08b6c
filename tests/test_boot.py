"""A wrong database URL is found at boot, not by the first user; ``Pool.open()``."""

import logging
import os
import re
import time

import pytest

from servers import ROOT, Gunicorn, get
from wsgipool import ConnectError

APPS = os.path.join(ROOT, "tests", "gunicorn_apps")
WORKERS = 2


def _wrong_database(url):
    """The same server and user, a database that does not exist."""
    return re.sub(r"/test(\?|$)", r"/no_such_database_\1", url, count=1)


def _env(url, **more):
    return {"DATABASE_URL": url, "POOL_MAX_SIZE": "2", "WORKERS": str(WORKERS),
            "WORKER_CLASS": "sync", "WRAP_APP": "1", **more}


def test_wrong_database_is_logged_once_per_worker_at_boot(server_db, tmp_path):
    """Each worker logs the cause once, at boot, as an ERROR; the server stays up (a
    database restarting must not crash-loop it) and answers 503 until it can connect."""
    log_path = str(tmp_path / "gunicorn.log")
    server = Gunicorn("plain_app:app", "-c", "gunicorn_test.conf.py", cwd=APPS,
                      env=_env(_wrong_database(server_db.url)), log_path=log_path)
    try:
        server.wait_ready()
        deadline = time.monotonic() + 20
        boot_errors = []
        while time.monotonic() < deadline:
            boot_errors = [line for line in server.log().splitlines()
                           if "[ERROR]" in line and "at boot of pid" in line]
            if len(boot_errors) >= WORKERS:
                break
            time.sleep(0.1)
        assert len(boot_errors) == WORKERS, server.log()[-3000:]
        assert all("no_such_database_" in line and "cannot connect" in line
                   for line in boot_errors), boot_errors
        pids = {re.search(r"at boot of pid (\d+)", line).group(1) for line in boot_errors}
        assert len(pids) == WORKERS  # once per worker, not once per retry
        status, _ = get(server.url + "/")
        assert status == 503
        assert server.process.poll() is None  # still serving
    finally:
        server.stop(timeout=15)


def test_fail_at_boot_stops_gunicorn(server_db, tmp_path):
    """``WSGIPOOL_FAIL_AT_BOOT=true``: a worker whose pool cannot connect fails to boot,
    and gunicorn stops instead of going live against a wrong database."""
    log_path = str(tmp_path / "gunicorn.log")
    server = Gunicorn("plain_app:app", "-c", "gunicorn_test.conf.py", cwd=APPS,
                      env=_env(_wrong_database(server_db.url), WSGIPOOL_FAIL_AT_BOOT="true"),
                      log_path=log_path)
    try:
        code = server.process.wait(30)
        assert code != 0, server.log()[-3000:]
        log = server.log()
        assert "Worker failed to boot" in log and "no_such_database_" in log, log[-3000:]
    finally:
        server.stop(timeout=15)


@pytest.mark.parametrize("app, more", [
    pytest.param("plain_app:app", {}, id="pool-made-in-each-worker"),
    pytest.param("sessions_app:app", {"PRELOAD": "1", "WRAP_APP": "0"},
                 id="preloaded-pool-made-in-the-master"),
])
def test_right_database_opens_min_size_at_boot(postgresql, tmp_path, app, more):
    """With the right URL, each worker has ``min_size`` sessions before any request; a
    pool made in the master (``preload_app``) keeps none there. (PostgreSQL: its
    sessions are counted exactly, by application_name.)"""
    server_db = postgresql
    log_path = str(tmp_path / "gunicorn.log")
    server = Gunicorn(app, "-c", "gunicorn_test.conf.py", cwd=APPS,
                      env=_env(server_db.url, WSGIPOOL_MIN_SIZE="2", **more),
                      log_path=log_path)
    try:
        server.wait_ready()
        deadline = time.monotonic() + 20
        sessions = set()
        while time.monotonic() < deadline:
            sessions = _sessions_of(server_db)
            if len(sessions) >= 2 * WORKERS:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # a master that opened some would have by now
        sessions = _sessions_of(server_db)
        assert len(sessions) == 2 * WORKERS, (sessions, server.log()[-2000:])
        assert "[ERROR]" not in server.log()
    finally:
        server.stop(timeout=15)


def _sessions_of(db):
    """The test's own server sessions (PostgreSQL: by their application_name)."""
    return db.live_sessions()


def test_open_waits_until_the_pool_can_serve(server_db, pools):
    pool = pools(server_db.url, min_size=3, max_size=4)
    pool.open()
    stats = pool.stats()
    assert (stats["size"], stats["idle"], stats["connects"]) == (3, 3, 3), stats


def test_open_raises_the_cause_and_logs_it_once(server_db, pools, caplog):
    pool = pools(_wrong_database(server_db.url), max_size=2)
    with caplog.at_level(logging.ERROR, logger="wsgipool"):
        with pytest.raises(ConnectError, match="no_such_database_"):
            pool.open()
    assert len(caplog.records) == 1, [r.getMessage() for r in caplog.records]
    stats = pool.stats()
    assert (stats["size"], stats["opening"], stats["connect_errors"]) == (0, 0, 1), stats


def test_refused_connect_under_a_request_is_logged_once_with_the_request(server_db, caplog):
    """Before: an ERROR from the pool, then a WARNING from the middleware, same cause."""
    from wsgipool import PoolMiddleware

    def app(environ, start_response):  # pragma: no cover - never reached
        start_response("200 OK", [])
        return [b""]

    middleware = PoolMiddleware(app, _wrong_database(server_db.url))
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/orders", "SCRIPT_NAME": ""}
    seen = []
    try:
        with caplog.at_level(logging.DEBUG, logger="wsgipool"):
            body = middleware(environ, lambda status, headers, exc_info=None:
                              seen.append(status))
            b"".join(body)
    finally:
        middleware.pool.close()
    assert seen == ["503 Service Unavailable"]
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.ERROR and "GET /orders" in lines[0].getMessage()


def test_pool_made_before_the_fork_is_checked_in_the_worker(server_db, pools):
    """Not in a server: ``check_at_boot`` is the same call the server hooks make."""
    pool = pools(server_db.url)
    assert pool.check_at_boot() is True
    bad = pools(_wrong_database(server_db.url))
    assert bad.check_at_boot() is False
    fatal = pools(_wrong_database(server_db.url), fail_at_boot=True)
    with pytest.raises(ConnectError):
        fatal.check_at_boot()


@pytest.mark.parametrize("flags", [pytest.param([], id="app-in-master"),
                                   pytest.param(["--lazy-apps"], id="lazy-apps")])
def test_uwsgi_workers_log_a_wrong_database_once_each_at_boot(postgresql, tmp_path, flags):
    """uWSGI: whether the app is imported in the master (checked after each fork) or in
    each worker, every worker logs the cause once at boot, and the server stays up."""
    import shutil

    from servers import BIN, Uwsgi

    if not shutil.which("uwsgi", path=BIN):
        pytest.skip("uWSGI is not installed: pip install pyuwsgi")
    server = Uwsgi("uwsgi_boot_app:app", "--processes", "2",
                   "--env", f"DATABASE_URL={_wrong_database(postgresql.url)}", *flags,
                   cwd=os.path.join(ROOT, "tests"), log_path=str(tmp_path / "uwsgi.log"))
    try:
        server.wait_ready()
        deadline = time.monotonic() + 20
        booted = set()
        while time.monotonic() < deadline and len(booted) < 2:
            booted = set(re.findall(r"ERROR wsgipool\.pool: cannot connect .*no_such_database_"
                                    r".*at boot of pid (\d+)", server.log()))
            time.sleep(0.1)
        assert len(booted) == 2, server.log()[-3000:]
        assert get(server.url + "/")[0] == 503
        lines = re.findall(r"at boot of pid \d+", server.log())
        assert len(lines) == 2, lines  # once per worker
    finally:
        server.stop()
