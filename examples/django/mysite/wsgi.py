"""The WSGI app gunicorn serves: ``gunicorn -c gunicorn.conf.py mysite.wsgi``."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
application = get_wsgi_application()

import wsgipool.django  # noqa: E402

# The pools made now (no connection yet), so gunicorn's post_worker_init finds them: it
# logs each worker's connection budget and opens the first connection of each.
wsgipool.django.open_pools()
