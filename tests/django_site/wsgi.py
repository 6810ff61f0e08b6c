"""The test project's WSGI app; with ``WSGIPOOL_TEST_DJANGO_TOUCH_FILE`` set, the importing
process (gunicorn's master, under ``--preload``) runs a query first and writes its
session's server id there, keeping the connection checked out, as a careless app might."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

import wsgipool.django  # noqa: E402

wsgipool.django.open_pools("default")  # as the example's wsgi.py, for the one served

if os.environ.get("WSGIPOOL_TEST_DJANGO_TOUCH_FILE"):
    from django.db import connection  # noqa: E402

    from django_site.views import server_id  # noqa: E402

    with open(os.environ["WSGIPOOL_TEST_DJANGO_TOUCH_FILE"], "w") as handle:
        handle.write(f"{os.getpid()} {server_id(connection)}")
