"""A review of the Django backends (issue 17, points 1-4): what Django and its test
runner do to a connection, tried against the real PostgreSQL, MariaDB and SQLite.

Django is set up in this process on tests/django_site (as tests/test_django.py does, or
reused if that module already did), plus aliases of this module's own on databases of
its own (``review_django_*``), added at run time with Django's own defaults. Requests
run through Django's WSGI handler on this module's URLs (``ROOT_URLCONF``).
"""

from __future__ import annotations

import gc
import os
import sys
import threading

import pytest

from django_site.databases import ENV, EXAMPLE, my_admin, pg_admin

try:  # this module is also the URLconf of its requests
    from django.urls import path
except ImportError:  # Django not installed: the fixture skips
    path = None

PG_DB, MY_DB, LITE_DB = "review_django_pg", "review_django_my", "/tmp/review_django.db"
PG_TEST_DB = "review_django_test_pg"
ROLE = "review_django_role"
ALIASES = [pytest.param("review_pg", id="postgresql"), pytest.param("review_my", id="mariadb"),
           pytest.param("review_lite", id="sqlite")]


def _entry(kind, **options):
    if kind == "pg":
        return {"ENGINE": "wsgipool.django.postgresql", "NAME": PG_DB, "USER": "postgres",
                "HOST": "127.0.0.1", "PORT": "5432", "OPTIONS": options}
    if kind == "my":
        return {"ENGINE": "wsgipool.django.mysql", "NAME": MY_DB, "USER": "root",
                "HOST": "127.0.0.1", "PORT": "3306", "OPTIONS": options}
    return {"ENGINE": "wsgipool.django.sqlite3", "NAME": LITE_DB, "OPTIONS": options}


def add_alias(alias, entry):
    """A new alias, completed with Django's defaults as Django completes settings."""
    from django.conf import settings
    from django.db import connections

    entry = connections.configure_settings(
        {"default": settings.DATABASES["default"], alias: entry})[alias]
    settings.DATABASES[alias] = entry  # the same dict as connections.settings
    return entry


def _fresh_databases():
    conn = pg_admin()
    with conn.cursor() as cursor:
        for name in (PG_DB, PG_TEST_DB, f"{PG_DB}_clone", f"test_{PG_DB}",
                     f"test_{PG_DB}_1", f"test_{PG_DB}_2"):
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {PG_DB}")
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
        if not cursor.fetchone():
            cursor.execute(f"CREATE ROLE {ROLE}")
    conn.close()
    conn = my_admin()
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {MY_DB}")
    conn.cursor().execute(f"CREATE DATABASE {MY_DB}")
    conn.close()
    if os.path.exists(LITE_DB):
        os.unlink(LITE_DB)


@pytest.fixture(scope="module")
def site():
    """Django's WSGI handler on this module's URLs, with this module's aliases."""
    from conftest import _require

    _require("postgresql")
    _require("mysql")
    pytest.importorskip("django")
    import django
    from django.apps import apps

    if not apps.ready:  # as tests/test_django.py sets it up, whichever module runs first
        os.environ["WSGIPOOL_TEST_DJANGO_WITH_ATOMIC"] = "1"
        os.environ.update(ENV)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
        if EXAMPLE not in sys.path:
            sys.path.insert(0, EXAMPLE)
        django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.db import connections
    from django.test.utils import override_settings

    import wsgipool.django

    _fresh_databases()
    add_alias("review_pg", {**_entry("pg", max_size=2, timeout=0.5),
                            "TEST": {"NAME": PG_TEST_DB}})
    add_alias("review_pg_mirror", {**_entry("pg", max_size=2, timeout=0.5),
                                   "TEST": {"MIRROR": "review_pg"}})
    add_alias("review_my", _entry("my", max_size=2, timeout=0.5))
    add_alias("review_lite", _entry("lite", max_size=2, timeout=0.5))
    # Other modules' ATOMIC_REQUESTS aliases would put every view in their transaction.
    atomic = {alias: entry["ATOMIC_REQUESTS"] for alias, entry in connections.settings.items()}
    for entry in connections.settings.values():
        entry["ATOMIC_REQUESTS"] = False
    try:
        with override_settings(ROOT_URLCONF=__name__):
            yield get_wsgi_application()
    finally:
        for alias, value in atomic.items():
            connections.settings[alias]["ATOMIC_REQUESTS"] = value
        for alias in list(connections.settings):
            if alias.startswith("review_"):
                connections[alias].close()
                wsgipool.django.close_pool(alias)


def server_id(conn):
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("SELECT pg_backend_pid()")
        elif conn.vendor == "mysql":
            cursor.execute("SELECT CONNECTION_ID()")
        else:
            return id(conn.connection)
        return cursor.fetchone()[0]


def one(conn, sql, params=()):
    with conn.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def pool_stats(alias):
    import wsgipool.django

    wsgipool.django.open_pools(alias)  # made now if the alias was not used yet
    return wsgipool.django.stats()[alias]


# -- this module's views ------------------------------------------------------------

def _view(request, alias, action):
    from django.db import connections
    from django.http import JsonResponse

    conn = connections[alias]
    pid = server_id(conn)
    if action == "interrupt":  # as gevent.Timeout or a signal handler's exception would
        raise KeyboardInterrupt("in the view")
    if action == "exit":
        raise SystemExit(3)
    return JsonResponse({"pid": pid})


urlpatterns = [path("r/<str:alias>/<str:action>", _view)] if path else []


def _in_a_thread_of_its_own(work):
    """Run ``work`` in a new thread that ends with it (a thread per request, as Django's
    runserver, or a greenlet per request under gevent); return what it raised."""
    seen = []

    def target():
        try:
            work()
        except BaseException as exc:  # noqa: B036  (the view's KeyboardInterrupt)
            seen.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    return seen


# -- defects -----------------------------------------------------------------------

def test_close_pool_lets_the_parallel_test_runner_clone_the_test_database(site):
    """``manage.py test --parallel`` clones the test database with CREATE DATABASE ...
    TEMPLATE, which PostgreSQL refuses while any session is connected to it: Django's
    ``_clone_test_db`` calls ``connection.close_pool()`` first. That must close the
    alias's wsgipool pool, whose idle connection otherwise stays on the template."""
    from django.db import connections

    conn = connections["review_pg"]
    server_id(conn)
    conn.close()
    assert pool_stats("review_pg")["idle"] == 1
    try:
        conn.creation._clone_test_db("clone", verbosity=0)
    except SystemExit as exc:  # Django logs the server's refusal, then exits
        pytest.fail(f"_clone_test_db exited with {exc.code}: the pool kept the template open")
    finally:
        admin = pg_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{PG_DB}_clone'")
            cloned = cursor.fetchone()[0]
            cursor.execute(f"DROP DATABASE IF EXISTS {PG_DB}_clone WITH (FORCE)")
        admin.close()
    assert cloned == 1


def test_time_zone_set_by_override_settings_does_not_reach_the_next_checkout(site):
    """``override_settings(TIME_ZONE=...)`` makes Django ``SET TIME ZONE`` on the open
    connection (and close Django's own pool so new connections get it). A connection
    given back inside the override kept the override's zone in the pool, and the next
    checkout, after the override, got it: Django believes the session is in UTC."""
    from django.db import connections
    from django.test.utils import override_settings

    conn = connections["review_pg"]
    try:
        assert one(conn, "SHOW TimeZone") == "UTC"
        with override_settings(USE_TZ=False, TIME_ZONE="Asia/Tokyo"):
            assert one(conn, "SHOW TimeZone") == "Asia/Tokyo"
            conn.close()  # the end of a request, close_old_connections(), a teardown
        assert conn.timezone_name == "UTC"
        assert one(conn, "SHOW TimeZone") == "UTC"
    finally:
        conn.close()


def _thread_never_closes(site, alias):
    from django.db import connections

    server_id(connections[alias])  # a thread's ORM work, and no close_old_connections()


def _view_interrupted(site, alias):
    from django_site.databases import call

    call(site, f"/r/{alias}/interrupt")


def _view_exits(site, alias):
    from django_site.databases import call

    call(site, f"/r/{alias}/exit")


@pytest.mark.parametrize("alias, ending", [
    pytest.param("review_pg", _thread_never_closes, id="postgresql-thread-never-closes"),
    pytest.param("review_my", _thread_never_closes, id="mariadb-thread-never-closes"),
    pytest.param("review_lite", _thread_never_closes, id="sqlite-thread-never-closes"),
    pytest.param("review_pg", _view_interrupted, id="postgresql-keyboardinterrupt-in-view"),
    pytest.param("review_my", _view_exits, id="mariadb-systemexit-in-view"),
])
def test_a_checkout_whose_thread_ends_is_not_a_lost_slot(site, alias, ending):
    """A thread (or greenlet) that ends holding a checkout, because it never closed its
    connections or because a BaseException in the view skipped ``request_finished``:
    Django's own connection would be closed with the dropped wrapper; the pool's slot
    must come back too, not stay in use for the life of the process."""
    from django_site.databases import call

    before = pool_stats(alias)["discard_reasons"]["leaked"]
    for _ in range(2):  # max_size
        _in_a_thread_of_its_own(lambda: ending(site, alias))
    gc.collect()  # the dead threads' wrappers are collected
    status, body, _ = call(site, f"/r/{alias}/ok")
    stats = pool_stats(alias)
    assert status == 200, body
    assert stats["in_use"] == 0 and stats["discard_reasons"]["leaked"] == before + 2, stats


def test_destroying_a_test_database_closes_its_mirrors_pools(site):
    """``TEST["MIRROR"]``: the mirror alias reads the primary's test database through a
    pool of its own. Dropping the test database (PostgreSQL refuses while a session is
    on it) must close the mirror's pool too, not only the primary's."""
    from django.conf import settings
    from django.db import connections

    conn, mirror = connections["review_pg"], connections["review_pg_mirror"]
    old_name = conn.settings_dict["NAME"]
    saved_mirror = mirror.settings_dict["NAME"]  # set_as_test_mirror() sets NAME only
    # create_test_db() without the migrations: the database made, the names switched.
    conn.creation._create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    conn.close()
    settings.DATABASES["review_pg"]["NAME"] = conn.settings_dict["NAME"] = PG_TEST_DB
    mirror.creation.set_as_test_mirror(conn.settings_dict)
    try:
        assert one(mirror, "SELECT current_database()") == PG_TEST_DB
        mirror.close()
        conn.creation.destroy_test_db(old_name, verbosity=0)
    finally:
        mirror.settings_dict["NAME"] = saved_mirror
        settings.DATABASES["review_pg"]["NAME"] = conn.settings_dict["NAME"] = old_name
        admin = pg_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{PG_TEST_DB}'")
            left = cursor.fetchone()[0]
            cursor.execute(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)")
        admin.close()
    assert left == 0


@pytest.mark.parametrize("options, named", [
    pytest.param({"min_size": 3, "max_size": 2}, "min_size", id="min-size-above-max-size"),
    pytest.param({"reset": "session", "transaction_pooling": True}, "transaction_pooling",
                 id="session-reset-with-transaction-pooling"),
])
def test_pool_option_combinations_are_improperly_configured_naming_the_alias(
        site, options, named):
    """docs/django.rst: the pool's options are checked "with an ImproperlyConfigured
    naming the alias and the option"; a combination the pool refuses was a bare
    ConfigurationError at the first query, naming neither the alias nor DATABASES."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    alias = f"review_bad_{named}"
    add_alias(alias, _entry("pg", **options))
    with pytest.raises(ImproperlyConfigured) as info:
        connections[alias].ensure_connection()
    assert f"DATABASES['{alias}']['OPTIONS']" in str(info.value) and named in str(info.value)


def test_mysql_session_reset_with_the_user_in_options(site):
    """Django's MySQL backend takes the user (and password, database) from ``OPTIONS``
    as well as ``USER`` (mysqlclient's keywords, as many settings files do). With
    ``reset="session"`` the reset logs in again with them: the session is reused and
    cleared, not discarded on every return for want of a user."""
    from django.db import connections

    entry = _entry("my", max_size=1, timeout=0.5, reset="session", user="root")
    entry["USER"] = ""
    add_alias("review_my_options_user", entry)
    conn = connections["review_my_options_user"]
    first = server_id(conn)
    one(conn, "SELECT @review_var := 1")
    conn.close()
    assert one(conn, "SELECT @review_var") is None
    assert server_id(conn) == first
    conn.close()
    assert pool_stats("review_my_options_user")["discard_reasons"]["reset_failed"] == 0


def test_closing_a_connection_the_server_ended_does_not_raise(site):
    """A request that set the driver's isolation level and left a transaction open, on
    a session the server then ended (``idle_in_transaction_session_timeout``, a
    failover): Django's close of it must not raise, as Django's own close never does,
    and ``close_old_connections()`` must go on to give back the request's other aliases."""
    import time

    from django.db import close_old_connections, connections, transaction

    conn, other = connections["review_pg"], connections["review_pg_mirror"]
    server_id(other)  # the request's second alias
    transaction.set_autocommit(False, using="review_pg")
    conn.connection.isolation_level = 4  # SERIALIZABLE, the driver's flag
    pid = server_id(conn)
    admin = pg_admin()
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    admin.close()
    time.sleep(0.1)
    try:
        close_old_connections()  # request_finished
        other_given_back = other.connection is None
    finally:
        conn.close()
        other.close()
    assert other_given_back
    assert pool_stats("review_pg")["in_use"] == 0


def test_a_bug_in_a_connection_created_handler_is_the_handlers_error(site):
    """Without the pool, a connection_created handler's exception reaches the caller
    (a 500 pointing at the handler). With it, the bug was reported as "cannot connect",
    the next attempt within the back-off as "database refused the last attempt", and
    the middleware answered 503 Retry-After: an overload, not a bug to fix."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    import wsgipool.django

    alias = "review_lite"

    class HandlerBug(Exception):
        pass

    def handler(sender, connection, **kwargs):
        if connection.alias == alias:
            raise HandlerBug("a bug in the handler")

    connections[alias].close()
    wsgipool.django.close_pool(alias)  # the next checkout opens a connection
    connection_created.connect(handler)
    try:
        with pytest.raises(HandlerBug):
            connections[alias].ensure_connection()
    finally:
        connection_created.disconnect(handler)
        connections[alias].close()
    assert pool_stats(alias)["connect_errors"] == 0


# -- what held up (evidence for the review) ------------------------------------------

@pytest.mark.parametrize("alias", ALIASES)
def test_connection_created_interrupted_leaves_the_pool_whole(site, alias):
    """A KeyboardInterrupt in a connection_created handler: the new connection is
    closed, its room freed; the next connect works."""
    from django.db import connections
    from django.db.backends.signals import connection_created

    import wsgipool.django

    def handler(sender, connection, **kwargs):
        if connection.alias == alias:
            raise KeyboardInterrupt("in the handler")

    connections[alias].close()
    wsgipool.django.close_pool(alias)
    connection_created.connect(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            connections[alias].ensure_connection()
    finally:
        connection_created.disconnect(handler)
    assert connections[alias].connection is None
    assert pool_stats(alias)["size"] == 0
    server_id(connections[alias])
    connections[alias].close()
    assert pool_stats(alias)["size"] == 1 and pool_stats(alias)["in_use"] == 0


@pytest.mark.parametrize("alias", ALIASES)
def test_close_twice_inside_atomic_from_another_thread(site, alias):
    """Django's close in odd places: twice; twice inside nested atomic blocks with
    close_old_connections() too (the block then refuses the connection); from another
    thread (refused by Django, the connection still this thread's); durable atomic
    after all that. The pool ends with nothing in use."""
    from django.db import DatabaseError, InterfaceError, close_old_connections, connections
    from django.db import transaction

    conn = connections[alias]
    server_id(conn)
    conn.close()
    conn.close()
    with transaction.atomic(using=alias):
        server_id(conn)
        with transaction.atomic(using=alias):
            conn.close()
            conn.close()
            close_old_connections()
            with pytest.raises(InterfaceError):
                server_id(conn)
        assert pool_stats(alias)["in_use"] == 0  # given back at the close, not the end
    first = server_id(conn)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(_raises(conn.close)))
    thread.start()
    thread.join(timeout=10)
    assert seen and isinstance(seen[0], DatabaseError)
    assert server_id(conn) == first
    with transaction.atomic(using=alias, durable=True):
        server_id(conn)
    conn.close()
    assert pool_stats(alias)["in_use"] == 0


def _raises(work):
    try:
        work()
    except BaseException as exc:  # noqa: B036
        return exc
    return None


@pytest.mark.parametrize("alias", ALIASES[:2])
def test_select_for_update_left_open_is_released_for_the_next_request(site, alias):
    """A request that locked a row (select_for_update, autocommit off) and never
    committed: its return rolls back, so another session can lock the row at once."""
    from django.db import connections, transaction

    conn = connections[alias]
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS review_lock (id int PRIMARY KEY)")
        cursor.execute("DELETE FROM review_lock")
        cursor.execute("INSERT INTO review_lock VALUES (1)")
    transaction.set_autocommit(False, using=alias)
    with conn.cursor() as cursor:
        cursor.execute("SELECT id FROM review_lock WHERE id = 1 FOR UPDATE")
    conn.close()  # the end of the request
    admin = pg_admin(PG_DB) if alias == "review_pg" else my_admin()
    cursor = admin.cursor()
    if alias == "review_pg":
        cursor.execute("SELECT id FROM review_lock WHERE id = 1 FOR UPDATE NOWAIT")
    else:
        cursor.execute(f"USE {MY_DB}")
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
        cursor.execute("BEGIN")
        cursor.execute("SELECT id FROM review_lock WHERE id = 1 FOR UPDATE")
    assert cursor.fetchone()[0] == 1
    admin.rollback()
    admin.close()
    assert conn.get_autocommit() is True


def test_session_reset_clears_what_a_request_left_and_runs_djangos_setup_again(site):
    """reset="session": an advisory lock, a temporary table, SET ROLE, a time zone and a
    SET (PostgreSQL); GET_LOCK, a temporary table, a variable and the isolation level
    (MariaDB); a temporary table (SQLite): gone for the next request on the same session,
    and Django's setup (assume_role, the time zone, SQL_AUTO_IS_NULL) applied again."""
    from django.db import ProgrammingError, connections

    admin = pg_admin()
    with admin.cursor() as cursor:
        cursor.execute(f"GRANT CREATE, TEMP ON DATABASE {PG_DB} TO {ROLE}")
    admin.close()
    add_alias("review_pg_session", _entry("pg", max_size=1, reset="session",
                                          assume_role=ROLE))
    add_alias("review_my_session", _entry("my", max_size=1, reset="session"))
    add_alias("review_lite_session", _entry("lite", max_size=1, reset="session"))
    pg, my, lite = (connections[f"review_{kind}_session"] for kind in ("pg", "my", "lite"))

    pid = server_id(pg)
    assert one(pg, "SELECT current_user") == ROLE
    for sql in ("SELECT pg_advisory_lock(4242)", "CREATE TEMP TABLE review_t (x int)",
                "SET ROLE NONE", "SET TIME ZONE 'Asia/Tokyo'", "SET work_mem = '1234kB'"):
        with pg.cursor() as cursor:
            cursor.execute(sql)
    pg.close()
    assert server_id(pg) == pid
    assert one(pg, "SELECT current_user") == ROLE
    assert one(pg, "SHOW TimeZone") == "UTC" and one(pg, "SHOW work_mem") != "1234kB"
    assert one(pg, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                   "AND pid = pg_backend_pid()") == 0
    assert one(pg, "SELECT count(*) FROM pg_tables WHERE tablename = 'review_t'") == 0
    pg.close()

    pid = server_id(my)
    for sql in ("SELECT GET_LOCK('review_django_lock', 0)",
                "CREATE TEMPORARY TABLE review_t (x int)", "SET @review_var = 1",
                "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
                "SET SQL_AUTO_IS_NULL = 1"):
        with my.cursor() as cursor:
            cursor.execute(sql)
    my.close()
    assert server_id(my) == pid
    assert one(my, "SELECT IS_FREE_LOCK('review_django_lock')") == 1
    assert one(my, "SELECT @review_var") is None
    assert one(my, "SELECT @@session.tx_isolation") == "READ-COMMITTED"
    assert one(my, "SELECT @@session.sql_auto_is_null") == 0
    with pytest.raises(ProgrammingError):  # (1146, "Table ... doesn't exist")
        one(my, "SELECT count(*) FROM review_t")
    my.close()

    with lite.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE review_t (x int)")
    handle = lite.connection
    lite.close()
    assert one(lite, "SELECT count(*) FROM sqlite_temp_master") == 0
    assert lite.connection is handle and one(lite, "PRAGMA foreign_keys") == 1
    lite.close()


def test_pre_ping_replaces_a_session_the_server_ended(site):
    """OPTIONS["pre_ping"]: a session ended by the server while idle is found at the
    checkout and replaced; ensure_connection() and the first query succeed."""
    import time

    from django.db import connections

    add_alias("review_pg_ping", _entry("pg", max_size=1, pre_ping=True))
    conn = connections["review_pg_ping"]
    pid = server_id(conn)
    conn.close()
    admin = pg_admin()
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    admin.close()
    time.sleep(0.1)
    conn.ensure_connection()
    assert server_id(conn) != pid
    conn.close()
    assert pool_stats("review_pg_ping")["discard_reasons"]["broken"] == 1


@pytest.mark.parametrize("alias", ALIASES[:2])
def test_fork_in_a_management_command_leaves_the_parents_transaction_alone(site, alias):
    """os.fork() inside atomic, the parent's connection checked out: the child's query
    runs on a session of its own, and the parent's transaction goes on and commits."""
    import json

    from django.db import connections, transaction

    conn = connections[alias]
    with conn.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS review_fork (x int)")
        cursor.execute("DELETE FROM review_fork")
    with transaction.atomic(using=alias):
        parent = server_id(conn)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO review_fork VALUES (1)")
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report, and leave without running any cleanup
            try:
                seen = [server_id(conn), one(conn, "SELECT count(*) FROM review_fork")]
                conn.close()
                os.write(write, json.dumps(seen).encode())
            finally:
                os._exit(0)
        os.close(write)
        _, status = os.waitpid(child, 0)
        child_id, child_count = json.loads(os.read(read, 1000) or b"[null, null]")
        os.close(read)
        assert server_id(conn) == parent
    assert status == 0 and child_id not in (None, parent) and child_count == 0
    assert one(conn, "SELECT count(*) FROM review_fork") == 1
    conn.close()


def test_parallel_test_runner_on_postgresql(site):
    """``manage.py test --parallel 2`` on the example project, PostgreSQL through
    wsgipool's backend: the test database is made, cloned per worker (CREATE DATABASE
    ... TEMPLATE), used by TestCase and by a TransactionTestCase with serialized
    rollback, and every copy dropped. (Before close_pool() closed the pool: "Got an
    error creating the test database: source database ... is being accessed by other
    users".)"""
    import subprocess

    from servers import ROOT

    env = dict(os.environ, DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{PG_DB}",
               DJANGO_SETTINGS_MODULE="mysite.settings",
               PYTHONPATH=os.pathsep.join([EXAMPLE, os.path.join(ROOT, "tests"), ROOT]))
    done = subprocess.run(
        [sys.executable, "manage.py", "test", "django_review.runner_cases", "--parallel",
         "2", "--noinput"], cwd=EXAMPLE, env=env, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cloning test database" in done.stderr and "Ran 3 tests" in done.stderr
    admin = pg_admin()
    with admin.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                       [f"test_{PG_DB}%"])
        left = cursor.fetchall()
    admin.close()
    assert left == []


@pytest.mark.parametrize("alias", ALIASES[:2])
def test_test_runner_settings_changes_reach_the_aliases_other_threads(site, alias):
    """Django's parallel test runner points each worker at its clone by updating
    ``connection.settings_dict`` in place: "for changes to be reflected in
    django.db.connections. If [it] assigned connection.settings_dict = settings_dict,
    new threads would connect to the default database instead of the appropriate
    clone" (django/db/backends/base/creation.py); ``set_as_test_mirror()`` sets NAME in
    place too. A wrapper whose settings_dict is a copy (made to take the pool's options
    out of OPTIONS) sent a LiveServerTestCase's thread, or any thread of a test, to
    another database."""
    from django.conf import settings
    from django.db import connections

    conn = connections[alias]
    old = conn.settings_dict["NAME"]
    seen = []
    try:
        conn.creation.setup_worker_connection(7)  # what each parallel worker runs
        thread = threading.Thread(
            target=lambda: seen.append(connections[alias].settings_dict["NAME"]))
        thread.start()
        thread.join(timeout=10)
    finally:
        conn.settings_dict["NAME"] = settings.DATABASES[alias]["NAME"] = old
    assert seen == [f"{old}_7"]


@pytest.mark.parametrize("alias", ALIASES)
def test_connect_while_connected_gives_the_first_connection_back(site, alias):
    """``connection.connect()`` called while connected (code that "reconnects" by
    hand): Django drops the old connection, closed when collected; the pool must get
    its checkout back, not lose the slot while the wrapper lives."""
    from django.db import connections

    conn = connections[alias]
    server_id(conn)
    conn.connect()
    server_id(conn)
    conn.close()
    stats = pool_stats(alias)
    assert stats["in_use"] == 0 and stats["returns"] == stats["checkouts"], stats


def test_mysql_init_command_runs_again_after_a_session_reset(site):
    """``OPTIONS["init_command"]`` (Django's documented way to set strict mode) is part
    of Django's connection setup. mysqlclient runs it only when it connects; a
    ``reset="session"`` (COM_CHANGE_USER) gives the server a new session, so every
    request after the first ran without it: another sql_mode, silently."""
    from django.db import connections

    add_alias("review_my_init", _entry(
        "my", max_size=1, reset="session",
        init_command="SET SESSION sql_mode = 'ANSI_QUOTES,STRICT_ALL_TABLES'"))
    conn = connections["review_my_init"]
    modes, ids = [], []
    for _ in range(3):  # three requests on one session
        ids.append(server_id(conn))
        modes.append(one(conn, "SELECT @@session.sql_mode"))
        conn.close()
    assert len(set(ids)) == 1
    assert modes == ["ANSI_QUOTES,STRICT_ALL_TABLES"] * 3


@pytest.mark.parametrize("alias", ALIASES)
def test_on_commit_hooks_run_once_and_never_for_the_next_request(site, alias):
    """on_commit: run once when the atomic block commits; dropped with a connection
    closed inside atomic (given back rolled back), and neither run in nor carried to
    the next request on the same connection."""
    from django.db import connections, transaction

    conn = connections[alias]
    ran = []
    with transaction.atomic(using=alias):
        transaction.on_commit(lambda: ran.append("committed"), using=alias)
    assert ran == ["committed"]
    with transaction.atomic(using=alias):
        transaction.on_commit(lambda: ran.append("closed inside"), using=alias)
        conn.close()
    with transaction.atomic(using=alias):  # the next request
        server_id(conn)
    conn.close()
    assert ran == ["committed"]
    assert pool_stats(alias)["in_use"] == 0


def test_destroying_a_test_database_closes_the_pools_of_aliases_on_the_same_database(site):
    """Two aliases on one database (a "replica" alias in development, say), neither a
    TEST["MIRROR"]: Django's runner makes the test database once, points the second
    alias at it with set_as_test_mirror(), and drops it through the first. The second
    alias's pool must not keep the test database open."""
    from django.conf import settings
    from django.db import connections

    add_alias("review_pg_same", _entry("pg", max_size=2, timeout=0.5))
    conn, same = connections["review_pg"], connections["review_pg_same"]
    old_name = conn.settings_dict["NAME"]
    # What django.test.utils.setup_databases() does for aliases of one signature,
    # without the migrations.
    conn.creation._create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    conn.close()
    settings.DATABASES["review_pg"]["NAME"] = conn.settings_dict["NAME"] = PG_TEST_DB
    same.creation.set_as_test_mirror(conn.settings_dict)
    try:
        assert one(same, "SELECT current_database()") == PG_TEST_DB
        same.close()
        conn.creation.destroy_test_db(old_name, verbosity=0)
    finally:
        same.settings_dict["NAME"] = old_name
        settings.DATABASES["review_pg"]["NAME"] = conn.settings_dict["NAME"] = old_name
        admin = pg_admin()
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM pg_database WHERE datname = '{PG_TEST_DB}'")
            left = cursor.fetchone()[0]
            cursor.execute(f"DROP DATABASE IF EXISTS {PG_TEST_DB} WITH (FORCE)")
        admin.close()
    assert left == 0


def test_a_bad_django_option_is_improperly_configured_not_a_refused_connect(site):
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    add_alias("review_bad_isolation", _entry("pg", max_size=1, isolation_level=9))
    with pytest.raises(ImproperlyConfigured) as info:
        connections["review_bad_isolation"].ensure_connection()
    assert "isolation level" in str(info.value)
