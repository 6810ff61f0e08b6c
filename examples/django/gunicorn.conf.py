"""gunicorn configuration for the Django guestbook: ``gunicorn -c gunicorn.conf.py mysite.wsgi``.

``make django-demo`` runs it. The pool's settings are in mysite/settings.py (DATABASES
OPTIONS); here, only the server and wsgipool's hooks.
"""

import os

# worker_exit closes a worker's connections before it exits; on_exit the master's
# (with preload_app, django.setup() and anything it ran happen in the master);
# post_worker_init logs each worker's connection budget.
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "4"))
# Load Django once in the master; each worker forks with it (and its own pools).
preload_app = True
loglevel = "info"
