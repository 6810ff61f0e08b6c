"""Run alone (``python -m django_site.psycopg2_check``): wsgipool's PostgreSQL backend
when Django picks psycopg2 (psycopg 3 made unimportable). Prints what it saw, as JSON."""

import json
import os
import sys

sys.modules["psycopg"] = None  # as if psycopg 3 were not installed: Django uses psycopg2

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(
    DATABASES={"default": {
        "ENGINE": "wsgipool.django.postgresql", "NAME": os.environ["PG_DB"],
        "USER": "postgres", "HOST": "127.0.0.1", "OPTIONS": {"max_size": 2}}},
    INSTALLED_APPS=[], USE_TZ=True, TIME_ZONE="UTC")
django.setup()

from django.db import connection, transaction  # noqa: E402
from django.db.backends.postgresql.base import is_psycopg3  # noqa: E402

import wsgipool.django  # noqa: E402


def one(sql):
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchone()[0]


pids = []
for _ in range(3):  # three "requests"
    pids.append(one("SELECT pg_backend_pid()"))
    connection.close()
# A request that leaves a transaction open, autocommit off, the isolation level changed.
connection.ensure_connection()
connection.connection.set_session(isolation_level="SERIALIZABLE")
transaction.set_autocommit(False)
one("SELECT txid_current()")
connection.close()
with transaction.atomic():
    isolation = one("SHOW transaction_isolation")
pids.append(one("SELECT pg_backend_pid()"))
autocommit = connection.connection.autocommit
connection.close()
stats = wsgipool.django.stats()["default"]
print(json.dumps({"psycopg3": is_psycopg3, "driver": connection.Database.__name__,
                  "pids": pids,
                  "isolation": isolation, "autocommit": autocommit,
                  "connects": stats["connects"], "rollbacks": stats["rollbacks"]}))
