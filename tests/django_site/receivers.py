"""A ``connection_created`` handler, as apps write them: it counts its calls and SETs."""

import collections

from django.db.backends.signals import connection_created

#: Calls per alias, in this process.
CREATED = collections.Counter()


def on_created(sender, connection, **kwargs):
    CREATED[connection.alias] += 1
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET application_name = %s", [f"wsgipool_django_{connection.alias}"])
        elif connection.vendor == "mysql":
            cursor.execute("SET @wsgipool_handler = %s", [connection.alias])


connection_created.connect(on_created)
