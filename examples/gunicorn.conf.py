"""gunicorn configuration for a wsgipool app: every database setting lives here.

Run: ``gunicorn -c gunicorn.conf.py guestbook:app`` from this directory (``make demo``
does). The app module says only ``app = PoolMiddleware(app)``: no URL, no pool options.
"""

import os

import wsgipool.gunicorn

# The four hooks, imported by name so gunicorn finds them in this module:
# post_worker_init logs each worker's connection budget at startup; worker_exit closes
# a worker's connections before it exits (on a stop, a reload or max_requests), so the
# database sees clean goodbyes; on_exit closes the master's own (an app loaded with
# preload_app may have opened some); post_fork does nothing today and is here so an
# upgrade needs no config change. Fork safety does not depend on them: wsgipool makes
# inherited connections harmless itself (os.register_at_fork).
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

# Where to listen; a -b on the command line takes precedence.
bind = os.environ.get("BIND", "127.0.0.1:8000")

# Processes: each has its own pool, so the database sees up to workers x max_size
# connections from this server. Keep that below its max_connections.
workers = int(os.environ.get("WORKERS", "2"))

# gthread: each worker serves `threads` requests at once, each holding one connection
# for the length of its request.
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "4"))

# info: the startup line "... N workers can open M in all" is logged at info.
loglevel = "info"

# The database: the URL from DATABASE_URL (SQLite in this directory by default, so the
# demo runs with nothing installed). max_size = threads: one connection per thread, so
# no request waits for another's; timeout: how long a request may still wait for one
# (say, while a connection is reopened) before a 503, well below gunicorn's 30 s timeout.
wsgipool.gunicorn.configure(
    os.environ.get("DATABASE_URL", "sqlite:///guestbook.db"),
    max_size=threads,
    timeout=5.0,
)
