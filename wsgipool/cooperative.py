"""Under gevent or eventlet: make the driver wait for the server through the hub, or say
that it cannot.

A monkey-patched process (``gunicorn -k gevent``, an eventlet server) serves all its
requests in one OS thread. A driver that waits for the server inside C code blocks every
greenlet while it waits, so the worker runs one query at a time whatever ``max_size``
says. Before each connect the PostgreSQL and MySQL drivers call :func:`cooperate`, which
once per process:

* psycopg2: installs a wait callback (what psycogreen does) that waits through the hub,
  unless one is set already (never replaced) or ``WSGIPOOL_PSYCOPG2_WAIT_CALLBACK=off``.
  Such connections cannot run ``COPY`` (``copy_from``, ``copy_to``, ``copy_expert``) or
  use large objects: psycopg2 raises ``ProgrammingError``. The callback bounds the connect
  by ``connect_timeout``, which libpq ignores once psycopg2 connects this way;
* psycopg 3 imported before gevent patched the process (a ``gunicorn.conf.py`` that
  calls ``configure()``, an app preloaded in the master): psycopg chose its blocking C
  wait then; ``psycopg.waiting`` is reloaded so that it chooses again;
* mysqlclient, psycopg2 left blocking, and psycopg 3 under eventlet (unless
  ``PSYCOPG_WAIT_FUNC=wait_select``): a warning naming what cooperates.

PyMySQL talks through Python's (patched) sockets and needs nothing. Nothing here imports
gevent or eventlet unless the process has already imported and applied them.
"""

from __future__ import annotations

import _socket
import importlib
import logging
import os
import selectors
import sys
from time import monotonic
from typing import Any, Callable, Dict, Optional

from .errors import ConfigurationError

log = logging.getLogger(__name__)

#: ``off`` leaves psycopg2 without a wait callback (then it blocks the hub).
PSYCOPG2_SWITCH = "WSGIPOOL_PSYCOPG2_WAIT_CALLBACK"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")

# The process each module was made cooperative (or warned about) in; a forked child,
# patched after the fork, looks again.
_done: Dict[str, int] = {}


def green(module: str = "socket") -> Optional[str]:
    """``"gevent"`` or ``"eventlet"`` if that library has patched ``module`` in this
    process, else ``None``. Imports neither."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched(module):
        return "gevent"
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched(module):
        return "eventlet"
    return None


def cooperate(module: str) -> None:
    """Before a connect with ``module`` (``psycopg2``, ``psycopg``, ``MySQLdb``): in a
    monkey-patched process, make it cooperate with the hub or warn, once per process."""
    if _done.get(module) == os.getpid():
        return
    library = green()
    if library is None:
        return  # not patched (yet): asked again at the next connect
    _ACTIONS[module](library)
    _done[module] = os.getpid()


def _psycopg2(library: str) -> None:
    from psycopg2 import extensions

    current = extensions.get_wait_callback()
    if getattr(current, "wsgipool", False):
        return  # ours, inherited from a parent process patched before the fork
    if current is not None:
        log.info("psycopg2 already has a wait callback (%s.%s): left as it is",
                 getattr(current, "__module__", "?"),
                 getattr(current, "__qualname__", current))
        return
    if not _switch_on():
        _blocks("psycopg2", library, f"{PSYCOPG2_SWITCH}=off",
                "psycopg 3 (postgresql+psycopg://), or psycopg2 with its wait callback "
                f"(unset {PSYCOPG2_SWITCH}, or install psycogreen's)")
        return
    extensions.set_wait_callback(wait_callback(library))
    log.info("psycopg2 waits through %s's hub in pid %d (a wait callback): queries run "
             "concurrently; COPY and large objects raise ProgrammingError; %s=off "
             "turns this off", library, os.getpid(), PSYCOPG2_SWITCH)


def _switch_on() -> bool:
    value = os.environ.get(PSYCOPG2_SWITCH, "on").strip().lower()
    if value not in _ON + _OFF:
        raise ConfigurationError(
            f"{PSYCOPG2_SWITCH} must be on or off (or 1/0, true/false, yes/no), "
            f"not {value!r}")
    return value in _ON


def wait_callback(library: str) -> Callable[[Any], None]:
    """psycopg2's wait callback for ``library``: poll the connection, and wait for its
    socket through the hub; a connect gives up after its ``connect_timeout``."""
    import psycopg2
    from psycopg2 import extensions

    if library == "gevent":
        from gevent.socket import wait_read, wait_write
    else:
        from eventlet.hubs import trampoline

        def wait_read(fd: int, timeout: Optional[float]) -> None:
            trampoline(fd, read=True, timeout=timeout, timeout_exc=_socket.timeout)

        def wait_write(fd: int, timeout: Optional[float]) -> None:
            trampoline(fd, write=True, timeout=timeout, timeout_exc=_socket.timeout)

    ok, read, write = extensions.POLL_OK, extensions.POLL_READ, extensions.POLL_WRITE
    connected = (extensions.STATUS_READY, extensions.STATUS_BEGIN, extensions.STATUS_PREPARED)

    def wait(conn: Any) -> None:
        deadline = None if conn.status in connected else _connect_deadline(conn)
        while True:
            state = conn.poll()
            if state == ok:
                return
            if state == read:
                wait_for = wait_read
            elif state == write:
                wait_for = wait_write
            else:
                raise psycopg2.OperationalError(f"bad state from poll: {state!r}")
            left = None if deadline is None else deadline - monotonic()
            try:
                if left is not None and left <= 0:
                    raise _socket.timeout
                wait_for(conn.fileno(), left)
            except _socket.timeout:
                # libpq's own message; psycopg2 closes the half-open connection.
                raise psycopg2.OperationalError("timeout expired") from None

    wait.wsgipool = True  # type: ignore[attr-defined]
    return wait


def _connect_deadline(conn: Any) -> Optional[float]:
    """When a connect must give up: libpq's ``connect_timeout`` (at least 2 s), which it
    applies only to the blocking connect."""
    from psycopg2.extensions import parse_dsn

    try:
        seconds = int(parse_dsn(conn.dsn).get("connect_timeout", "0"))
    except Exception:  # an unreadable value: libpq refuses it itself
        return None
    return monotonic() + max(2, seconds) if seconds > 0 else None


def _psycopg(library: str) -> None:
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is None:
        return
    if library == "eventlet":
        # psycopg 3 chooses a cooperative wait for gevent only; told to use select(),
        # which eventlet patches, it cooperates.
        if waiting.wait is getattr(waiting, "wait_c", None):
            _blocks("psycopg 3", library, "its C wait function",
                    "PSYCOPG_WAIT_FUNC=wait_select in the server's environment (psycopg "
                    "reads it when imported), or psycopg2 (postgresql://)")
        return
    if waiting.DefaultSelector is selectors.DefaultSelector:
        return  # imported after the patching: psycopg chose to wait through the hub
    # Imported before: psycopg chose its C wait and kept the unpatched selector, both of
    # which block the hub. Its module-level choice, made again, picks the patched ones.
    importlib.reload(waiting)
    log.info("psycopg was imported before gevent patched pid %d: psycopg.waiting "
             "reloaded, now waiting with %s through the hub", os.getpid(),
             getattr(waiting.wait, "__name__", waiting.wait))


def _mysqlclient(library: str) -> None:
    _blocks("mysqlclient", library, "it waits for the server in C",
            "PyMySQL (mysql+pymysql://)")


def _blocks(driver: str, library: str, why: str, alternatives: str) -> None:
    log.warning(
        "%s blocks %s's hub in pid %d (%s): while one query runs no other request of "
        "this worker moves, so it serves one query at a time whatever max_size says; "
        "use %s", driver, library, os.getpid(), why, alternatives)


_ACTIONS: Dict[str, Callable[[str], None]] = {
    "psycopg2": _psycopg2, "psycopg": _psycopg, "MySQLdb": _mysqlclient,
}
