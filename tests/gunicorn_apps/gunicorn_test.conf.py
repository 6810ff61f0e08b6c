"""One gunicorn config for every lifecycle test; each setting comes from the environment."""

import os

import wsgipool.gunicorn
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

workers = int(os.environ.get("WORKERS", "2"))
worker_class = os.environ.get("WORKER_CLASS", "gthread")
threads = int(os.environ.get("THREADS", "4"))
preload_app = os.environ.get("PRELOAD") == "1"
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 0
graceful_timeout = 10
loglevel = "info"

wsgipool.gunicorn.configure(
    max_size=int(os.environ.get("POOL_MAX_SIZE", "3")),
    wrap_app=os.environ.get("WRAP_APP") == "1",
)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from wsgipool.prometheus import child_exit  # noqa: F401
