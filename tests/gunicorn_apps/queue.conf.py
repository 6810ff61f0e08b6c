"""gunicorn config for tests/test_max_waiting.py: one gthread worker, its pool bounded by
the environment's POOL_MAX_SIZE and POOL_MAX_WAITING, set through the config file."""

import os

import wsgipool.gunicorn
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

worker_class = "gthread"
workers = 1
threads = 8
graceful_timeout = 5
loglevel = "info"

wsgipool.gunicorn.configure(max_size=int(os.environ["POOL_MAX_SIZE"]),
                            max_waiting=int(os.environ["POOL_MAX_WAITING"]),
                            timeout=10, retry_after=2, stats_path="/_pool")
