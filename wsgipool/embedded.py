"""Servers that embed Python (Apache's mod_wsgi and mod_python, uWSGI): what wsgipool
does inside them, on its own.

Nothing here needs calling: :mod:`wsgipool.process` installs it when it is imported inside
one of them. What each runs when a process exits (observed by ``tests/test_apache.py``
and ``tests/test_uwsgi.py`` on graceful stop, graceful restart or reload, and
recycling):

* mod_wsgi (embedded and daemon mode) runs Python's ``atexit`` handlers when it shuts
  an interpreter down, so wsgipool's own exit handler closes the pools politely.
* mod_python runs no ``atexit`` handler (the seeds' complaint); it runs the callbacks
  given to ``mod_python.apache.register_cleanup`` at child exit, so the same exit
  handler is registered there.
* uWSGI workers run ``atexit`` (stop, reload, ``--max-requests``); its master runs no
  exit hook at all, so whatever the master opened is dropped (see *Servers* in the
  documentation).

Each gets a startup line per pool: the most connections this process, and all of the
server's processes together, can open. Python's logging is not set up inside these
servers; unless the app sets it up, wsgipool's lines go to the server's log (stderr).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable, List, Optional, Tuple

log = logging.getLogger(__name__)

_installed = False


def running_in() -> Optional[str]:
    """``"mod_wsgi"``, ``"mod_python"``, ``"uWSGI"`` or ``None``: who embeds us."""
    if "mod_wsgi" in sys.modules:
        return "mod_wsgi"
    if "_apache" in sys.modules:
        return "mod_python"
    if "uwsgi" in sys.modules:  # the module uWSGI provides to the Python it embeds
        return "uWSGI"
    return None


def install(on_pool_created: List[Callable[[Any], None]],
            close_all: Callable[[], None], leave_warming: Callable[[], None]) -> None:
    """Inside such a server: close the pools at exit (``close_all``), say each pool's
    budget and open its first connections in each worker (appended to
    ``on_pool_created``), instead of at creation (``leave_warming``)."""
    global _installed
    server = running_in()
    if server is None or _installed:
        return
    _installed = True
    if server == "mod_python":
        from mod_python import apache  # type: ignore[import-not-found]

        apache.register_cleanup(lambda _data=None: close_all())
    _log_to_stderr_unless_configured()
    on_pool_created.append(budget_line)
    on_pool_created.append(check_in_worker)
    leave_warming()


def check_in_worker(pool: Any) -> None:
    """Open the pool's first connections where it will serve, so a wrong URL shows at
    boot: at once in an Apache child or a uWSGI worker (the app is imported there);
    in uWSGI's master (the app imported before forking), in each worker after the fork.
    """
    if running_in() == "uWSGI":
        import uwsgi

        if uwsgi.worker_id() == 0:  # the master: its connections would be forgotten
            _checks_after_fork.append(pool)
            if not _checks_after_fork[1:]:
                previous = getattr(uwsgi, "post_fork_hook", None)

                def check_after_fork() -> None:
                    if previous is not None:
                        previous()
                    for waiting in list(_checks_after_fork):
                        waiting.check_at_boot()

                uwsgi.post_fork_hook = check_after_fork
            return
    pool.check_at_boot()


# Pools made in uWSGI's master, checked in each worker after the fork.
_checks_after_fork: List[Any] = []


def processes_and_threads() -> Tuple[Optional[int], Optional[int]]:
    """How many processes serve this app, and threads in each, as the server says.

    :returns: ``(processes, threads)`` under mod_wsgi, mod_python and uWSGI;
        ``(None, None)`` elsewhere or when the server's module cannot tell.
    """
    server = running_in()
    try:
        if server == "mod_wsgi":
            import mod_wsgi  # type: ignore[import-not-found]

            return mod_wsgi.maximum_processes, mod_wsgi.threads_per_process
        if server == "mod_python":
            from mod_python import apache

            daemons = apache.mpm_query(apache.AP_MPMQ_MAX_DAEMONS)
            threads = apache.mpm_query(apache.AP_MPMQ_MAX_THREADS)
            return daemons, max(threads, 1)
        if server == "uWSGI":
            import uwsgi  # type: ignore[import-not-found]

            threads = uwsgi.opt.get("threads", 1)
            if isinstance(threads, bytes):
                threads = int(threads)
            return uwsgi.numproc, int(threads)
    except Exception:  # an older module without these: say what we know
        pass
    return None, None


def budget_line(pool: Any) -> None:
    """The startup line: this pool's bound, per process and for all of the server's
    processes; a warning when a process has more threads than connections.

    Called for each new pool inside Apache or uWSGI; nothing to call yourself.

    :param pool: a :class:`~wsgipool.Pool`.
    """
    processes, threads = processes_and_threads()
    if processes is None:
        log.info("pool %s opens at most %d connections in pid %d", pool.name,
                 pool.max_size, os.getpid())
        return
    log.info("pool %s opens at most %d connections in pid %d; %d %s processes can "
             "open %d in all", pool.name, pool.max_size, os.getpid(), processes,
             running_in(), processes * pool.max_size)
    if threads and threads > pool.max_size:
        log.warning("pool %s: %d threads per process share max_size=%d connections; "
                    "requests may wait up to timeout=%.1f s", pool.name, threads,
                    pool.max_size, pool.timeout)


def _log_to_stderr_unless_configured() -> None:
    """Apache's error log is the process's stderr; nobody set up Python's logging."""
    package = logging.getLogger("wsgipool")
    if package.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("wsgipool: %(levelname)s %(name)s: %(message)s"))
    package.addHandler(handler)
    if package.level == logging.NOTSET:
        package.setLevel(logging.INFO)
