"""Views that show (or disturb) a connection's server-side state, for the tests."""

import time

from django.db import connections, transaction
from django.http import JsonResponse

from django_site.receivers import CREATED
from guestbook.models import Entry


def _one(cursor, sql, params=()):
    cursor.execute(sql, params)
    return cursor.fetchone()[0]


def server_id(conn):
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            return _one(cursor, "SELECT pg_backend_pid()")
        if conn.vendor == "mysql":
            return _one(cursor, "SELECT CONNECTION_ID()")
    return id(conn.connection)


def state(conn):
    """What the session has set: isolation level, handler's mark, a transaction open."""
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            return {
                "isolation": _one(cursor, "SHOW transaction_isolation"),
                "handler": _one(cursor, "SHOW application_name"),
                "timezone": _one(cursor, "SHOW TimeZone"),
                "work_mem": _one(cursor, "SHOW work_mem"),
            }
        if conn.vendor == "mysql":
            return {
                "isolation": _one(cursor, "SELECT @@session.tx_isolation"),
                "handler": _one(cursor, "SELECT @wsgipool_handler"),
                "auto_is_null": _one(cursor, "SELECT @@session.sql_auto_is_null"),
                "work_mem": _one(cursor, "SELECT @@session.sort_buffer_size"),
            }
    return {}


def action(request, alias, action):
    conn = connections[alias]
    result = {}
    if action == "pid":
        pass
    elif action == "count_status":  # MariaDB: one ORM query, then this session's counters
        entries = Entry.objects.using(alias).count()
        with conn.cursor() as cursor:
            pid = _one(cursor, "SELECT CONNECTION_ID()")
            cursor.execute("SHOW SESSION STATUS WHERE Variable_name IN "
                           "('Questions', 'Com_admin_commands')")
            statements = sum(int(value) for _, value in cursor.fetchall())
        return JsonResponse({"entries": entries, "pid": pid, "statements": statements})
    elif action == "one":  # one ORM query and nothing else: the round-trip figures
        return JsonResponse({"entries": Entry.objects.using(alias).count()})
    elif action == "count":
        result["entries"] = Entry.objects.using(alias).count()
    elif action == "state":  # in a transaction: the one the driver's flags shape
        with transaction.atomic(using=alias):
            result.update(state(conn))
        result["autocommit"] = conn.get_autocommit()
    elif action == "sleep":
        with conn.cursor() as cursor:
            if conn.vendor == "sqlite":  # no sleep in SQL: hold the connection instead
                cursor.execute("SELECT 1")
                time.sleep(0.3)
            else:
                cursor.execute("SELECT pg_sleep(0.3)" if conn.vendor == "postgresql"
                               else "SELECT SLEEP(0.3)")
    elif action == "leave_open":  # autocommit off, a write, no commit
        transaction.set_autocommit(False, using=alias)
        Entry.objects.using(alias).create(name="left", message="open")
    elif action == "close_in_atomic":  # given back inside atomic, savepoint and all
        with transaction.atomic(using=alias):
            Entry.objects.using(alias).create(name="outer", message="x")
            with transaction.atomic(using=alias):
                Entry.objects.using(alias).create(name="inner", message="x")
                result["pid"] = server_id(conn)
                conn.close()
                try:
                    conn.cursor().execute("SELECT 1")
                except Exception as exc:
                    result["after_close"] = type(exc).__name__
    elif action == "error":  # atomic rolled back by an exception: a 500
        with transaction.atomic(using=alias):
            Entry.objects.using(alias).create(name="error", message="x")
            raise RuntimeError("the view failed")
    elif action == "write":  # a write, then maybe a failure; no transaction handling
        Entry.objects.using(alias).create(name="write", message="x")
        if request.GET.get("fail"):
            raise RuntimeError("the view failed after writing")
    elif action == "lock":  # select_for_update in atomic
        with transaction.atomic(using=alias):
            entry = Entry.objects.using(alias).create(name="lock", message="x")
            locked = Entry.objects.using(alias).select_for_update().get(pk=entry.pk)
            result["locked"] = locked.pk
            entry.delete()
    elif action == "disturb":  # what a request may set on its session
        with conn.cursor() as cursor:
            if conn.vendor == "postgresql":
                conn.connection.isolation_level = 4  # SERIALIZABLE, the driver's flag
                cursor.execute("SET work_mem = '1234kB'")
                cursor.execute("SET application_name = 'disturbed'")
            else:
                cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                cursor.execute("SET SESSION sort_buffer_size = 1048576")
                cursor.execute("SET @wsgipool_handler = 'disturbed'")
    elif action == "hold":
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        time.sleep(float(request.GET.get("seconds", "0.5")))
    result.setdefault("pid", server_id(conn) if action != "hold" else None)
    result["created"] = CREATED[alias]
    result["os_pid"] = __import__("os").getpid()
    return JsonResponse(result)
