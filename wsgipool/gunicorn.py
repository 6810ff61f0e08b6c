"""gunicorn integration: database settings in ``gunicorn.conf.py``, and the server hooks.

Usage, in ``gunicorn.conf.py``::

    import wsgipool.gunicorn
    from wsgipool.gunicorn import on_exit, post_fork, post_worker_init, worker_exit

    workers = 4
    threads = 8
    wsgipool.gunicorn.configure("postgresql://app@db/app", max_size=8)

and in the app module, ``app = PoolMiddleware(app)``: the URL and options come from here
(or from ``DATABASE_URL``). With ``configure(..., wrap_app=True)`` the app module needs no
change at all: ``post_worker_init`` wraps the loaded app in :class:`~wsgipool.PoolMiddleware`.

The hooks have exactly gunicorn's arity. A config that has its own hook calls ours from it::

    def worker_exit(server, worker):
        my_cleanup()
        wsgipool.gunicorn.worker_exit(server, worker)

Fork safety and cleanup at exit do not depend on these hooks (wsgipool registers
``os.register_at_fork`` and ``atexit`` handlers itself); the hooks add the startup line,
the config-only wrapping, and a close that happens before gunicorn's worker exits.
gunicorn is never imported here: the hooks only read attributes of what gunicorn passes.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

from . import settings
from .middleware import PoolMiddleware
from .pool import close_process_pools, live_pools

log = logging.getLogger(__name__)

_wrap_app = False


def configure(url: Optional[str] = None, *, wrap_app: bool = False, **pool_options: Any) -> None:
    """Record the database settings for ``PoolMiddleware(app)`` in the workers.

    :param url: the database URL; default ``None`` leaves it to ``DATABASE_URL``.
    :param wrap_app: wrap the loaded app in :class:`~wsgipool.PoolMiddleware` from
        ``post_worker_init``, so the app code needs no change. Default ``False``.
    :param pool_options: :class:`~wsgipool.Pool` options (``max_size``, ``timeout``...)
        and the middleware's (``lazy``, ``transaction``, ``databases``...), as
        :func:`wsgipool.configure` takes them, checked now so a typo stops gunicorn at
        startup.

    gunicorn re-runs its config file on ``SIGHUP``; calling this again replaces the settings.

    :raises TypeError: ``wrap_app`` is not a bool, or an option is unknown (the message
        names the closest) or of the wrong type.
    :raises wsgipool.ConfigurationError: a bad URL or option value: gunicorn stops
        before it starts a worker.
    """
    global _wrap_app
    if not isinstance(wrap_app, bool):
        raise TypeError(f"wrap_app must be True or False, not {type(wrap_app).__name__}")
    settings.configure(url, **pool_options)
    _wrap_app = wrap_app


def post_fork(server: Any, worker: Any) -> None:
    """gunicorn ``post_fork``: nothing to do yet (``server`` is gunicorn's arbiter,
    ``worker`` the new worker).

    Under gevent this runs before monkey-patching, so no lock or connection may be made
    here; the fork hook already made inherited connections harmless, and each pool
    starts afresh on its first checkout in the worker.
    """


def post_worker_init(worker: Any) -> None:
    """gunicorn ``post_worker_init``: wrap the app if asked, log the connection budget,
    and open each pool's first connections (:meth:`~wsgipool.Pool.check_at_boot`).

    It also sends ``wsgipool.*`` log records to gunicorn's error log (unless the app set
    up logging) and, with ``PROMETHEUS_MULTIPROC_DIR`` set, starts the Prometheus
    mirror.

    :param worker: the gunicorn worker that has just loaded the app (its ``wsgi``,
        ``cfg`` and ``log`` are read; ``wsgi`` is replaced when ``wrap_app=True``).

    :raises wsgipool.ConnectError: a pool with ``fail_at_boot=True`` could not connect:
        the worker fails to boot, and gunicorn stops.
    """
    _share_gunicorn_log(worker)
    if _wrap_app and not isinstance(worker.wsgi, PoolMiddleware):
        worker.wsgi = PoolMiddleware(worker.wsgi)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from .prometheus import start_multiprocess_mirror

        start_multiprocess_mirror()
    workers = int(getattr(worker.cfg, "workers", 1) or 1)
    concurrency, unit = _concurrency(worker.cfg)
    for pool in live_pools():
        log.info(
            "worker pid %d: pool %s opens at most %d connections; %d workers can open "
            "%d in all%s", os.getpid(), pool.name, pool.max_size, workers,
            workers * pool.max_size,
            " (compare with the database's max_connections)" if pool.has_server else "",
        )
        if concurrency > pool.max_size:
            log.warning(
                "pool %s: %d %s per worker share max_size=%d connections; requests "
                "will queue for up to timeout=%.1f s when all are busy",
                pool.name, concurrency, unit, pool.max_size, pool.timeout,
            )
    # One checked connect per pool (min_size of them), so a wrong URL shows at boot; a
    # failure raised here (fail_at_boot) is a worker that failed to boot: gunicorn stops.
    for pool in live_pools():
        pool.check_at_boot()


def _concurrency(cfg: Any) -> tuple:
    """How many requests one worker serves at once, and what serves them."""
    worker_class = str(getattr(cfg, "worker_class_str", "")).lower()
    if "gevent" in worker_class or "eventlet" in worker_class:
        return int(getattr(cfg, "worker_connections", 1000) or 1000), "greenlets"
    return int(getattr(cfg, "threads", 1) or 1), "threads"


def _share_gunicorn_log(worker: Any) -> None:
    """Send ``wsgipool.*`` records to gunicorn's error log, unless the app set up logging."""
    ours = logging.getLogger("wsgipool")
    if ours.handlers or logging.getLogger().handlers:
        return
    error_log = getattr(getattr(worker, "log", None), "error_log", None)
    if isinstance(error_log, logging.Logger):
        for handler in error_log.handlers:
            ours.addHandler(handler)
        ours.setLevel(error_log.level)


def worker_exit(server: Any, worker: Any) -> None:
    """gunicorn ``worker_exit``: close this worker's connections before it exits.

    :param server: gunicorn's arbiter (not used).
    :param worker: the worker that is exiting (not used: the pools are this process's).
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from .prometheus import sync_now

        sync_now()  # the last figures, before the pools close
    close_process_pools()


def on_exit(server: Any) -> None:
    """gunicorn ``on_exit``: close the master's own connections (opened by a preloaded app).

    :param server: gunicorn's arbiter (not used).
    """
    close_process_pools()
