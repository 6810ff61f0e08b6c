"""Django's ORM on wsgipool's pool (issue 17, points 1-4), against the real databases.

In this process: Django set up with tests/django_site (the example project plus test
views and one alias per database), requests run through Django's own WSGI handler, so
its request signals close (give back) connections as under a server. In subprocesses:
gunicorn gthread serving the example project once per database, and ``manage.py test``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from servers import ROOT, Gunicorn, get

from django_site.databases import (EXAMPLE, ENV, MY_DB, MY_HOST, PG_DB, PG_HOST,
                                   SQLITE_PATH, call, set_up_django)
from django_site.databases import my_admin as _my_admin
from django_site.databases import pg_admin as _pg_admin

ALIASES = [pytest.param("pg", id="postgresql"), pytest.param("my", id="mariadb"),
           pytest.param("lite", id="sqlite")]


@pytest.fixture(scope="module")
def django_site():
    """Django set up in this process on the test project, every alias migrated (it
    needs both servers: skipped without them, failed under CI)."""
    from conftest import _require

    _require("postgresql")
    _require("mysql")
    pytest.importorskip("django")
    os.environ["WSGIPOOL_TEST_DJANGO_WITH_ATOMIC"] = "1"
    app = set_up_django()
    yield app
    from django.db import connections

    connections.close_all()


def pool_stats(alias):
    import wsgipool.django

    return wsgipool.django.stats()[alias]


@pytest.mark.parametrize("alias", ALIASES)
def test_orm_reuses_one_connection_set_up_once(django_site, alias):
    """Requests reuse the same server session; Django's setup (and connection_created)
    ran once for it, not per request."""
    answers = [call(django_site, f"/t/{alias}/count") for _ in range(4)]
    assert [status for status, _, _ in answers] == [200] * 4
    pids = {body["pid"] for _, body, _ in answers}
    assert len(pids) == 1, pids
    stats = pool_stats(alias)
    assert stats["connects"] == 1 and stats["checkouts"] >= 4 and stats["in_use"] == 0
    assert answers[-1][1]["created"] == 1  # the handler: once per real connection


@pytest.mark.parametrize("alias", ALIASES)
def test_error_in_atomic_rolls_back_and_keeps_the_session(django_site, alias):
    before = call(django_site, f"/t/{alias}/count")[1]
    status, _, _ = call(django_site, f"/t/{alias}/error")
    after = call(django_site, f"/t/{alias}/count")[1]
    assert status == 500
    assert after["entries"] == before["entries"]
    assert after["pid"] == before["pid"]


@pytest.mark.parametrize("alias", ALIASES)
def test_transaction_left_open_is_rolled_back_autocommit_restored(django_site, alias):
    before = call(django_site, f"/t/{alias}/count")[1]
    rollbacks = pool_stats(alias)["rollbacks"]
    assert call(django_site, f"/t/{alias}/leave_open")[0] == 200
    after = call(django_site, f"/t/{alias}/count")[1]
    state = call(django_site, f"/t/{alias}/state")[1]
    assert after["entries"] == before["entries"]  # the uncommitted write is gone
    assert after["pid"] == before["pid"]  # on the same session, made clean
    assert state["autocommit"] is True
    # (MariaDB: the server's "in transaction" flag says the transaction is open; where
    # mysqlclient's client library cannot report it, every return after a statement in
    # autocommit mode is rolled back.)
    assert pool_stats(alias)["rollbacks"] >= rollbacks + 1


@pytest.mark.parametrize("alias", ALIASES)
def test_close_inside_atomic_gives_back_and_the_wrapper_lets_go(django_site, alias):
    """A close inside atomic (and a savepoint) returns the connection rolled back; the
    wrapper cannot use it afterwards, as with Django's own close."""
    before = call(django_site, f"/t/{alias}/count")[1]
    status, body, _ = call(django_site, f"/t/{alias}/close_in_atomic")
    after = call(django_site, f"/t/{alias}/count")[1]
    assert status == 200 and body["after_close"] == "InterfaceError"
    assert after["entries"] == before["entries"]
    assert after["pid"] == body["pid"] == before["pid"]


@pytest.mark.parametrize("alias", ALIASES[:2])
def test_a_session_killed_between_requests_is_discarded(django_site, alias):
    """The server ends an idle pooled session: the next request fails (no pre_ping),
    Django's close gives the broken connection back, the pool discards it, and the
    request after runs on a new session."""
    pid = call(django_site, f"/t/{alias}/pid")[1]["pid"]
    broken = pool_stats(alias)["discard_reasons"]["broken"]
    if alias == "pg":
        conn = _pg_admin()
        with conn.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    else:
        conn = _my_admin()
        conn.cursor().execute(f"KILL CONNECTION {int(pid)}")
    conn.close()
    time.sleep(0.1)
    assert call(django_site, f"/t/{alias}/pid")[0] == 500
    status, body, _ = call(django_site, f"/t/{alias}/pid")
    assert status == 200 and body["pid"] != pid
    stats = pool_stats(alias)
    assert stats["discard_reasons"]["broken"] + stats["discard_reasons"]["closed"] >= broken + 1
    assert stats["in_use"] == 0


@pytest.mark.parametrize("alias", ALIASES[:2])
def test_select_for_update(django_site, alias):
    status, body, _ = call(django_site, f"/t/{alias}/lock")
    assert status == 200 and body["locked"] > 0


@pytest.mark.parametrize("alias, isolation", [
    pytest.param("pg", "read committed", id="postgresql"),
    pytest.param("my_session", "READ-COMMITTED", id="mariadb"),
])
def test_nothing_a_request_sets_reaches_the_next(django_site, alias, isolation):
    """PostgreSQL: the driver's isolation level is put back locally on each return;
    with reset="session" (PostgreSQL DISCARD ALL, MariaDB COM_CHANGE_USER) every SET is
    undone and Django's setup and the connection_created handler run again."""
    first = call(django_site, f"/t/{alias}/state")[1]
    assert call(django_site, f"/t/{alias}/disturb")[0] == 200
    after = call(django_site, f"/t/{alias}/state")[1]
    assert after["pid"] == first["pid"]
    assert after["isolation"] == first["isolation"] == isolation  # Django's, not theirs
    if alias == "my_session":
        assert after["handler"] == first["handler"] == "my_session"
        assert after["work_mem"] == first["work_mem"] != 1048576
        assert after["auto_is_null"] == 0  # Django's setup ran again after the reset
    session = call(django_site, "/t/pg_session/state")[1]
    call(django_site, "/t/pg_session/disturb")
    again = call(django_site, "/t/pg_session/state")[1]
    assert again["pid"] == session["pid"]
    assert again["handler"] == "wsgipool_django_pg_session" != "disturbed"
    assert again["work_mem"] == session["work_mem"] != "1234kB"
    assert again["isolation"] == "read committed"


def test_pool_timeout_is_a_503_and_hold_warning_names_the_view(django_site, caplog):
    """A pool of one held by one request: the next waits its timeout and gets a 503 with
    Retry-After; the hold warning names the holder's view."""
    caplog.set_level(logging.WARNING, logger="wsgipool")
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        holder = executor.submit(call, django_site, "/t/pg_tiny/hold?seconds=1.0")
        deadline = time.monotonic() + 5
        while "pg_tiny" not in __import__("wsgipool.django").django.stats() or \
                pool_stats("pg_tiny")["in_use"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        status, body, headers = call(django_site, "/t/pg_tiny/pid")
        assert holder.result(timeout=10)[0] == 200
    assert status == 503 and headers["Retry-After"] == "1"
    assert pool_stats("pg_tiny")["timeouts"] == 1
    held = [r.getMessage() for r in caplog.records if "has been held" in r.getMessage()]
    assert held and "django_site.views.action" in held[0], held


def test_atomic_requests_and_autocommit_off(django_site):
    """ATOMIC_REQUESTS: a failing view's write is rolled back by Django, the connection
    goes back idle. AUTOCOMMIT = False: a write never committed is rolled back on return;
    the next request, on the same session, is still in manual mode."""
    before = call(django_site, "/t/pg_atomic/count")[1]
    rollbacks = pool_stats("pg_atomic")["rollbacks"]
    assert call(django_site, "/t/pg_atomic/write?fail=1")[0] == 500
    after = call(django_site, "/t/pg_atomic/count")[1]
    assert after["entries"] == before["entries"] and after["pid"] == before["pid"]
    assert pool_stats("pg_atomic")["rollbacks"] == rollbacks  # Django rolled it back

    before = call(django_site, "/t/my_manual/count")[1]
    assert call(django_site, "/t/my_manual/write")[0] == 200
    after = call(django_site, "/t/my_manual/count")[1]
    state = call(django_site, "/t/my_manual/state")[1]
    assert after["entries"] == before["entries"] and after["pid"] == before["pid"]
    assert state["autocommit"] is False and state["handler"] == "my_manual"


def test_refused_connect_is_djangos_operational_error_and_a_503(django_site):
    """Django and its users catch the driver's error, as without a pool; the
    middleware answers 503 with Retry-After."""
    from django.db import OperationalError, connections

    with pytest.raises(OperationalError) as info:
        connections["pg_down"].ensure_connection()
    assert "cannot connect to pg_down" in str(info.value)
    status, body, headers = call(django_site, "/t/pg_down/pid")
    assert status == 503 and headers["Retry-After"] == "1"
    assert "no database connection" in body


@pytest.mark.parametrize("change, named", [
    pytest.param({"CONN_MAX_AGE": 60}, "CONN_MAX_AGE", id="conn-max-age"),
    pytest.param({"CONN_MAX_AGE": None}, "CONN_MAX_AGE", id="persistent"),
    pytest.param({"CONN_HEALTH_CHECKS": True}, "CONN_HEALTH_CHECKS", id="health-checks"),
    pytest.param({"OPTIONS": {"pool": True}}, "OPTIONS']['pool'", id="django-pool"),
    pytest.param({"OPTIONS": {"max_size": 0}}, "max_size must be at least 1", id="max-size"),
    pytest.param({"OPTIONS": {"timeout": "5"}}, "timeout must be a number", id="timeout"),
])
def test_combinations_that_cannot_work_are_refused(django_site, change, named):
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    from wsgipool.django.postgresql.base import DatabaseWrapper

    with pytest.raises(ImproperlyConfigured) as info:
        DatabaseWrapper({**connections.settings["pg"], **change}, "pg")
    assert named in str(info.value) and "DATABASES['pg']" in str(info.value)


def test_pool_options_are_split_from_djangos(django_site):
    from django.db import connections

    conn = connections["pg"]
    assert conn.pool_options == {"max_size": 2, "timeout": 3.0}
    assert "max_size" not in conn.settings_dict["OPTIONS"]
    lite = connections["lite"]  # SQLite's own timeout option is sqlite3's too
    assert lite.settings_dict["OPTIONS"] == {"timeout": 3.0}


# -- gunicorn gthread serving the example project, once per database ----------------

SERVED = [
    pytest.param((f"{PG_HOST}/{PG_DB}", "postgresql"), id="postgresql"),
    pytest.param((f"{MY_HOST}/{MY_DB}", "mysql"), id="mariadb"),
    pytest.param((f"sqlite:///{SQLITE_PATH}", "sqlite"), id="sqlite"),
]


@pytest.fixture(scope="module", params=SERVED)
def served(request, django_site, tmp_path_factory):
    """gunicorn --preload (django.setup() in the master, which also runs a query and
    keeps its connection), 1 worker x 4 threads, a pool of 2 per worker."""
    import wsgipool.django
    from django.db import connections

    connections.close_all()
    for alias in list(wsgipool.django.pools()):  # only the server's sessions remain
        wsgipool.django.close_pool(alias)
    url, kind = request.param
    work = tmp_path_factory.mktemp(f"django-{kind}")
    touch = str(work / "master")
    env = dict(ENV, DATABASE_URL=url, WORKERS="1", THREADS="4", POOL_MAX_SIZE="2",
               WSGIPOOL_TEST_DJANGO_WITH_ATOMIC="",
               WSGIPOOL_TEST_DJANGO_TOUCH_FILE=touch,
               PYTHONPATH=EXAMPLE, DJANGO_SETTINGS_MODULE="django_site.settings")
    server = Gunicorn("django_site.wsgi:application", "-c",
                      os.path.join(EXAMPLE, "gunicorn.conf.py"), "--timeout", "30",
                      env=env, log_path=str(work / "gunicorn.log"))
    with server:
        status = None
        deadline = time.monotonic() + 20
        while status != 200 and time.monotonic() < deadline:
            try:
                status = get(server.url + "/t/default/pid", timeout=5)[0]
            except OSError:
                time.sleep(0.05)
        assert status == 200, server.log()[-3000:]
        with open(touch) as handle:
            master_pid, master_session = (int(v) for v in handle.read().split())
        yield server, kind, master_pid, master_session


def _sessions(kind):
    """The server's sessions of the served project: PostgreSQL by the handler's
    application_name, MariaDB by database (other pools of this module are closed)."""
    if kind == "postgresql":
        conn = _pg_admin()
        with conn.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                           "AND application_name = 'wsgipool_django_default'", [PG_DB])
            found = {row[0] for row in cursor.fetchall()}
    else:
        conn = _my_admin()
        cursor = conn.cursor()
        cursor.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s", [MY_DB])
        found = {row[0] for row in cursor.fetchall()}
    conn.close()
    return found


def test_guestbook_and_admin_served(served):
    server, kind, _, _ = served
    name = f"Ada-{kind}"
    status, _ = get(server.url + "/sign", data=f"name={name}&message=hi".encode())
    assert status in (200, 302)  # urllib follows the redirect to the page
    status, body = get(server.url + "/")
    assert status == 200 and name.encode() in body
    status, body = get(server.url + "/admin/login/")
    assert status == 200 and b"Django administration" in body


def test_preload_fork_leaves_the_masters_session_alone(served):
    """The master ran a query and kept its connection; the worker forked from it opened
    its own session and never touched (or closed) the master's."""
    server, kind, master_pid, master_session = served
    status, body = get(server.url + "/t/default/pid")
    answer = json.loads(body)
    assert status == 200 and answer["os_pid"] != master_pid
    assert answer["pid"] != master_session
    # The pool made in the master (open_pools) was found by post_worker_init in the
    # worker: its budget logged, its first connection opened at boot.
    assert "pool default opens at most 2 connections" in server.log()
    if kind != "sqlite":
        assert master_session in _sessions(kind)  # still open: the child let it be
        assert get(server.url + "/t/default/pid")[0] == 200
        assert master_session in _sessions(kind)


def test_pool_bounds_the_sessions_per_worker(served):
    """Six requests at once on 4 threads, a pool of 2: two sessions serve them all."""
    server, kind, _, master_session = served
    seen = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            seen.append(_sessions(kind) - {master_session})
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    if kind != "sqlite":
        sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as executor:
            answers = list(executor.map(
                lambda _: get(server.url + "/t/default/sleep", timeout=15), range(6)))
    finally:
        stop.set()
        if sampler.is_alive():
            sampler.join(timeout=10)
            assert not sampler.is_alive()
    assert [status for status, _ in answers] == [200] * 6
    ids = {json.loads(body)["pid"] for _, body in answers}
    assert len(ids) <= 2
    stats = json.loads(get(server.url + "/_pool")[1])["default"]
    assert stats["peak_in_use"] == 2 and stats["connects"] <= 2 and stats["size"] <= 2
    if kind != "sqlite":
        assert seen and max(len(s) for s in seen) <= 2 and max(len(s) for s in seen) >= 1


def test_djangos_test_runner_creates_and_drops_through_the_backends(django_site):
    """``manage.py test``: test databases made, used and dropped through our backends."""
    env = dict(os.environ, **ENV, DJANGO_SETTINGS_MODULE="django_site.settings",
               WSGIPOOL_TEST_DJANGO_FAST_MIGRATE="1",
               PYTHONPATH=os.pathsep.join([EXAMPLE, os.path.join(ROOT, "tests"), ROOT]))
    env.pop("DATABASE_URL", None)
    env.pop("WSGIPOOL_TEST_DJANGO_WITH_ATOMIC", None)
    done = subprocess.run([sys.executable, "manage.py", "test", "guestbook", "--noinput"],
                          cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Ran 3 tests" in done.stderr and "OK" in done.stderr
    for alias in ("default", "pg", "my", "lite"):
        assert f"Creating test database for alias '{alias}'" in done.stderr
        assert f"Destroying test database for alias '{alias}'" in done.stderr
    conn = _pg_admin()
    with conn.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = 'wsgipool_django_test_pg'")
        assert cursor.fetchone()[0] == 0
    conn.close()
    conn = _my_admin()
    cursor = conn.cursor()
    cursor.execute("SHOW DATABASES LIKE 'wsgipool_django_test_my'")
    assert cursor.fetchall() == ()
    conn.close()
    assert not os.path.exists("/tmp/wsgipool_django_test_lite.db")


def test_stats_and_prometheus_per_alias(django_site):
    import wsgipool.django
    from wsgipool.exporters import as_prometheus

    for alias in ("pg", "my", "lite"):
        call(django_site, f"/t/{alias}/pid")
    text = as_prometheus(wsgipool.django.pools().values())
    status, served, headers = call(django_site, "/_stats?format=prometheus")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    status, as_json, _ = call(django_site, "/_stats")
    for alias in ("pg", "my", "lite"):
        assert f'wsgipool_checkouts_total{{pool="{alias}"}}' in text
        assert f'wsgipool_checkouts_total{{pool="{alias}"}}' in served
        assert wsgipool.django.stats()[alias]["checkouts"] >= 1
        assert as_json["pools"][alias]["checkouts"] >= 1


# -- round trips per request, counted by the servers --------------------------------

def test_round_trips_per_request_against_djangos_own(django_site):
    """One ORM query per request. wsgipool's backends send no more statements and open
    no more sessions than CONN_MAX_AGE = 0, persistent connections with health checks,
    or Django's native psycopg 3 pool. On MariaDB the query is all: Django runs in
    autocommit mode, where the server's "in transaction" flag, read locally, says no
    ROLLBACK is due (2 statements, the query and a ROLLBACK, where mysqlclient's client
    library cannot report it)."""
    from django_site import roundtrips

    from wsgipool.mysql import _bind_server_status

    conn = _my_admin()
    try:
        reads_status = _bind_server_status(conn)(conn) is not None
    finally:
        conn.close()

    figures = {}

    def request(path):
        status, body, _ = call(django_site, path)
        assert status == 200, body
        return status, body

    for alias in ("my", "my_age0", "my_persistent"):
        figures[alias] = roundtrips.measure_my(request, alias)
    if roundtrips.pg_log_readable():
        conn = _pg_admin()
        with conn.cursor() as cursor:
            cursor.execute(f"ALTER DATABASE {PG_DB} SET log_statement = 'all'")
        try:
            for alias in ("pg", "pg_age0", "pg_persistent", "pg_native"):
                figures[alias] = roundtrips.measure_pg(request, alias, PG_DB)
        finally:
            with conn.cursor() as cursor:
                cursor.execute(f"ALTER DATABASE {PG_DB} RESET log_statement")
            conn.close()
    print("round trips per request:", figures)
    ours = figures["my"]
    assert ours == {"statements": 1.0 if reads_status else 2.0, "sessions": 0.0}, figures
    assert figures["my_age0"]["sessions"] == 1
    for theirs in ("my_age0", "my_persistent"):
        assert ours["statements"] <= figures[theirs]["statements"], figures
    if "pg" in figures:
        assert figures["pg"] == {**figures["pg"], "statements": 1.0, "sessions": 0.0}
        assert figures["pg_age0"]["sessions"] == 1
        for theirs in ("pg_age0", "pg_persistent", "pg_native"):
            assert figures["pg"]["statements"] <= figures[theirs]["statements"], figures
            assert figures["pg"]["sessions"] <= figures[theirs]["sessions"], figures


def test_docs_settings_snippet(django_site):
    """docs/django.rst's settings: accepted, the pool's options split from Django's."""
    from django.db.utils import ConnectionHandler, load_backend

    from readme import snippet

    namespace = {}
    exec(snippet("django-settings"), namespace)
    assert namespace["MIDDLEWARE"][0] == "wsgipool.django.middleware.PoolTimeoutMiddleware"
    handler = ConnectionHandler(namespace["DATABASES"])
    default = handler.settings["default"]
    wrapper = load_backend(default["ENGINE"]).DatabaseWrapper(default, "default")
    assert wrapper.pool_options == {"max_size": 8, "timeout": 5.0, "max_lifetime": 3600.0,
                                    "hold_warning": 10.0}
    assert wrapper.settings_dict["OPTIONS"] == {"isolation_level": 2}
    legacy = handler.settings["legacy"]
    wrapper = load_backend(legacy["ENGINE"]).DatabaseWrapper(legacy, "legacy")
    assert wrapper.pool_options == {"max_size": 4}
    assert list(wrapper.settings_dict["OPTIONS"]) == ["init_command"]


def test_postgresql_backend_on_psycopg2(django_site):
    """Where psycopg 3 is not installed, Django (and so wsgipool's backend) uses
    psycopg2: the same reuse, and a request's transaction and isolation level left
    behind do not reach the next."""
    env = dict(os.environ, PG_DB=PG_DB,
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests"), ROOT]))
    done = subprocess.run([sys.executable, "-m", "django_site.psycopg2_check"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout)
    assert seen["psycopg3"] is False and seen["driver"] == "psycopg2"
    assert len(set(seen["pids"])) == 1 and seen["connects"] == 1
    assert seen["isolation"] == "read committed" and seen["autocommit"] is True
