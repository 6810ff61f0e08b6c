"""The test project's own databases on the shared servers, made afresh, and Django set
up on them in this process (the tests and the Django benchmark share this)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "django")
PG_HOST = "postgresql://postgres@127.0.0.1:5432"
MY_HOST = "mysql://root@127.0.0.1:3306"
PG_DB, MY_DB = "wsgipool_django_pg", "wsgipool_django_my"
SQLITE_PATH = "/tmp/wsgipool_django.db"
ENV = {
    "WSGIPOOL_TEST_DJANGO_PG_URL": f"{PG_HOST}/{PG_DB}",
    "WSGIPOOL_TEST_DJANGO_MY_URL": f"{MY_HOST}/{MY_DB}",
    "WSGIPOOL_TEST_DJANGO_SQLITE_URL": f"sqlite:///{SQLITE_PATH}",
}


def pg_admin(database="test"):
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", user="postgres", dbname=database)
    conn.autocommit = True
    return conn


def my_admin():
    import MySQLdb

    conn = MySQLdb.connect(host="127.0.0.1", user="root")
    conn.autocommit(True)
    return conn


def fresh_databases():
    conn = pg_admin()
    with conn.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        cursor.execute(f"CREATE DATABASE {PG_DB}")
    conn.close()
    conn = my_admin()
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {MY_DB}")
    conn.cursor().execute(f"CREATE DATABASE {MY_DB}")
    conn.close()
    if os.path.exists(SQLITE_PATH):
        os.unlink(SQLITE_PATH)


def set_up_django():
    """Fresh databases, Django set up on django_site.settings, the guestbook migrated
    everywhere; returns Django's WSGI handler."""
    fresh_databases()
    os.environ.update(ENV)
    os.environ["DJANGO_SETTINGS_MODULE"] = "django_site.settings"
    if EXAMPLE not in sys.path:
        sys.path.insert(0, EXAMPLE)
    import django
    from django.core.management import call_command
    from django.core.wsgi import get_wsgi_application
    from django.db import connections

    django.setup()
    for alias in ("default", "pg", "my", "lite"):
        call_command("migrate", "guestbook", database=alias, verbosity=0)
    connections.close_all()
    return get_wsgi_application()


def call(app, path, method="GET"):
    """One request through Django's WSGI handler: (status, JSON or text body, headers)."""
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": path.split("?")[0], "REQUEST_METHOD": method,
               "QUERY_STRING": path.partition("?")[2], "HTTP_HOST": "testserver"}
    setup_testing_defaults(environ)
    environ["wsgi.errors"] = io.StringIO()
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()  # request_finished: Django closes (gives back) its connections
    try:
        return answer["status"], json.loads(body), answer["headers"]
    except ValueError:
        return answer["status"], body.decode(), answer["headers"]
