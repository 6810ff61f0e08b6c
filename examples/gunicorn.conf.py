"""gunicorn configuration for a wsgipool app: every database setting lives here.

Run: ``gunicorn -c gunicorn.conf.py guestbook:app`` (``make demo`` does).
The app module says only ``app = PoolMiddleware(app)``.
"""

import os

import wsgipool.gunicorn

# The hooks: a startup line with the connection budget, and a clean close on exit.
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WORKERS", "2"))
# gthread: each worker serves `threads` requests at once, each with its own connection.
worker_class = "gthread"
threads = int(os.environ.get("THREADS", "4"))
loglevel = "info"

# One connection per thread: no request waits for another's connection, and the
# database sees at most workers x max_size connections from this server.
wsgipool.gunicorn.configure(
    os.environ.get("DATABASE_URL", "sqlite:///guestbook.db"),
    max_size=threads,
    timeout=5.0,  # seconds a request may wait for a connection before a 503
)
