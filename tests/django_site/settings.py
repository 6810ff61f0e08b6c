"""The guestbook project's settings, plus test views and one alias per database.

Database names are this suite's own (other suites share the servers): the URLs come from
``WSGIPOOL_TEST_DJANGO_{PG,MY,SQLITE}_URL``; ``DATABASE_URL`` is the default alias, as in
the example.
"""

import os

from mysite.settings import *  # noqa: F401,F403
from mysite.settings import database

from django_site import receivers  # noqa: F401  (the connection_created handler)

ROOT_URLCONF = "django_site.urls"
MAX_SIZE = int(os.environ.get("POOL_MAX_SIZE", "2"))
PG_URL = os.environ.get("WSGIPOOL_TEST_DJANGO_PG_URL",
                        "postgresql://postgres@127.0.0.1:5432/wsgipool_django_pg")
MY_URL = os.environ.get("WSGIPOOL_TEST_DJANGO_MY_URL",
                        "mysql://root@127.0.0.1:3306/wsgipool_django_my")
SQLITE_URL = os.environ.get("WSGIPOOL_TEST_DJANGO_SQLITE_URL", "sqlite:////tmp/wsgipool_django.db")


def _alias(url, test_name, mirror=None, **options):
    entry = database(url, max_size=MAX_SIZE, timeout=3.0, **options)
    entry["TEST"] = {"MIRROR": mirror} if mirror else {"NAME": test_name}
    return entry


DATABASES = {
    "default": _alias(os.environ.get("DATABASE_URL", SQLITE_URL),
                      "/tmp/wsgipool_django_test_default.db"),
    "pg": _alias(PG_URL, "wsgipool_django_test_pg"),
    "my": _alias(MY_URL, "wsgipool_django_test_my"),
    "lite": _alias(SQLITE_URL, "/tmp/wsgipool_django_test_lite.db"),
    # The same databases, with the pool's full session reset on each return.
    "pg_session": _alias(PG_URL, None, mirror="pg", reset="session"),
    "my_session": _alias(MY_URL, None, mirror="my", reset="session"),
}
# A pool of one, quick to time out and to warn: the 503 and the hold warning.
DATABASES["pg_tiny"] = {**_alias(PG_URL, None, mirror="pg"), "OPTIONS": {
    "max_size": 1, "timeout": 0.3, "hold_warning": 0.2}}
# Django's ATOMIC_REQUESTS and AUTOCOMMIT = False, on the pool.
if os.environ.get("WSGIPOOL_TEST_DJANGO_WITH_ATOMIC"):  # the in-process tests only: Django
    # opens a transaction on it around every view, whichever database the view uses
    DATABASES["pg_atomic"] = {**_alias(PG_URL, None, mirror="pg"), "ATOMIC_REQUESTS": True}
DATABASES["my_manual"] = {**_alias(MY_URL, None, mirror="my"), "AUTOCOMMIT": False}
# Nothing listens there: a refused connect.
DATABASES["pg_down"] = database("postgresql://postgres@127.0.0.1:1/nowhere", timeout=1.0)
if os.environ.get("DATABASE_URL"):
    DATABASES["default"]["TEST"] = {"NAME": "wsgipool_django_test_default"}
# Django's native psycopg 3 pool and persistent connections, for the round-trip figures.
DATABASES["pg_native"] = {**database(PG_URL), "ENGINE": "django.db.backends.postgresql",
                          "OPTIONS": {"pool": {"min_size": 1, "max_size": 2}},
                          "TEST": {"MIRROR": "pg"}}
DATABASES["pg_age0"] = {**database(PG_URL), "ENGINE": "django.db.backends.postgresql",
                        "TEST": {"MIRROR": "pg"}}
DATABASES["pg_persistent"] = {**database(PG_URL), "ENGINE": "django.db.backends.postgresql",
                              "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True,
                              "TEST": {"MIRROR": "pg"}}
DATABASES["my_age0"] = {**database(MY_URL), "ENGINE": "django.db.backends.mysql",
                        "TEST": {"MIRROR": "my"}}
DATABASES["my_persistent"] = {**database(MY_URL), "ENGINE": "django.db.backends.mysql",
                              "CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True,
                              "TEST": {"MIRROR": "my"}}

if os.environ.get("WSGIPOOL_TEST_DJANGO_FAST_MIGRATE"):
    # Django's own apps' tables made directly (the suite's time is short): the
    # guestbook's migration still runs, through the backends under test.
    MIGRATION_MODULES = {app: None for app in ("admin", "auth", "contenttypes", "sessions")}
