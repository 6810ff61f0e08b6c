"""Django's ORM on wsgipool's pool: database backends that subclass Django's own.

Usage, in ``settings.py``::

    DATABASES = {
        "default": {
            "ENGINE": "wsgipool.django.postgresql",  # or .mysql, .sqlite3
            "NAME": "app", "USER": "app", "HOST": "db",
            "OPTIONS": {"max_size": 8, "timeout": 5.0},  # pool options beside Django's
        }
    }

Django opens a connection by taking one from the process's pool for that alias, and
closes it (at the end of each request, ``CONN_MAX_AGE = 0``) by giving it back: rolled
back if a transaction is open, without a round trip when idle, discarded when broken.
Django's connection setup (time zone, role, ``init_command``, isolation level,
``connection_created``) runs once per real connection. See docs/django.rst.
"""

from .pooling import close_pool, open_pools, pools, stats

__all__ = ["close_pool", "open_pools", "pools", "stats"]
