"""One gunicorn config for every lifecycle test; each setting comes from the environment.

WORKER_CLASS (sync, gthread, gevent), WORKERS, THREADS, PRELOAD=1, MAX_REQUESTS,
POOL_MAX_SIZE (required), WRAP_APP=1; MASTER_EXIT_FILE: at exit, check the master's own
pool (opened by a preloaded app) still works before closing it, and record what it saw.
"""

import os

import wsgipool.gunicorn
from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit  # noqa: F401

worker_class = os.environ.get("WORKER_CLASS", "gthread")
workers = int(os.environ.get("WORKERS", "2"))
# Threads only for gthread: gunicorn turns a sync worker with threads > 1 into gthread,
# and gevent ignores them (its concurrency is worker_connections).
threads = int(os.environ.get("THREADS", "4" if worker_class == "gthread" else "1"))
preload_app = os.environ.get("PRELOAD") == "1"
max_requests = int(os.environ.get("MAX_REQUESTS", "0"))
max_requests_jitter = 0
graceful_timeout = 10  # below the tests' 15 s wait before SIGKILL
loglevel = "info"  # the wsgipool startup line is at info

wsgipool.gunicorn.configure(
    max_size=int(os.environ["POOL_MAX_SIZE"]),
    wrap_app=os.environ.get("WRAP_APP") == "1",
)

if os.environ.get("MASTER_EXIT_FILE"):
    _close_master_pools = wsgipool.gunicorn.on_exit

    def on_exit(server):  # noqa: F811 -- a config's own hook that calls ours
        """Use the master's pre-fork connection once more, record it, then close the pools."""
        import sessions_app  # imported already: the app is preloaded in the master

        sid, connects = sessions_app.master_session()
        with open(os.environ["MASTER_EXIT_FILE"], "w") as handle:
            handle.write(f"{os.getpid()} {sid} {connects}")
        _close_master_pools(server)

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    from wsgipool.prometheus import child_exit  # noqa: F401
