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
        for name in (PG_DB, PG_TEST_DB, f"{PG_DB}_clone"):
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

    if not apps.ready:
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
    saved_mirror = mirror.settings_dict
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
        mirror.settings_dict = saved_mirror
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
