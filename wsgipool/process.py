"""The pools of this process: found by the fork hook, closed at exit, listed for exporters.

After ``fork()`` a child must never touch its parent's sessions: Python's fork hook makes
every inherited connection harmless before anything else runs in the child, and the
first use of a pool in a new process makes every pool adopt that process, including
after a fork that runs no Python hook (uWSGI by default, a C extension's ``fork()``).

How a pool tells it is in a new process, on every checkout and return, without a system
call: :data:`UNFORKED` reads 1 until the process forks. On Linux it is a page the kernel
wipes in a child (``MADV_WIPEONFORK``), so no kind of fork goes unseen. Elsewhere it is a
byte that Python's fork hook clears; inside a server that may fork without running that
hook (uWSGI, mod_python), it asks ``os.getpid()`` instead.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import mmap
import os
import sys
import threading
import weakref
from typing import Any, Callable, List, Tuple

from .stats import DISCARD_REASONS, PoolStats

log = logging.getLogger(__name__)

#: Called with each new pool (a server integration's startup line).
ON_POOL_CREATED: List[Callable[[Any], None]] = []
# Every pool alive in this process, for the fork hook and the exit handler.
_LIVE_POOLS: "weakref.WeakSet[Any]" = weakref.WeakSet()
# Serialises the adoption of pools by a new process whose threads race to first use.
ADOPT_LOCK = threading.Lock()
# The source of every pool's generation numbers: unique in the process, so a
# connection's generation says which pool, and which life of it, handed it out.
GENERATIONS = itertools.count(1)


# Linux's MADV_WIPEONFORK (4.14 and later), which Python's mmap module names only when
# built against headers that have it.
_WIPEONFORK = getattr(mmap, "MADV_WIPEONFORK", 18 if sys.platform.startswith("linux") else None)


class _PidMark:
    """:data:`UNFORKED` where forks may run no Python hook and the kernel cannot tell:
    ``[0]`` compares ``os.getpid()`` with the pid it was set in."""

    __slots__ = ("_pid",)

    def __init__(self) -> None:
        self._pid = os.getpid()

    def __getitem__(self, _index: int) -> int:
        return 1 if os.getpid() == self._pid else 0

    def __setitem__(self, _index: int, value: int) -> None:
        self._pid = os.getpid() if value else 0


def fork_mark(*, embedded: bool) -> Tuple[Any, str]:
    """Make the process's :data:`UNFORKED` mark, and say how it notices a fork:
    ``"kernel"``, ``"fork hook"`` or ``"getpid"``.

    ``embedded``: a server that may fork without running Python's fork hooks embeds us.
    """
    if _WIPEONFORK is not None and hasattr(mmap, "MAP_PRIVATE"):
        try:
            page = mmap.mmap(-1, mmap.PAGESIZE,
                             flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            page.madvise(_WIPEONFORK)  # EINVAL before Linux 4.14
        except (OSError, ValueError, AttributeError):
            pass
        else:
            page[0] = 1
            return page, "kernel"
    if embedded:
        return _PidMark(), "getpid"
    return bytearray(b"\x01"), "fork hook"


#: ``UNFORKED[0]`` is 1 until this process forks, 0 in a child until it adopts its pools
#: (:func:`notice_fork`); a checkout reads it instead of making a system call.
UNFORKED, FORK_DETECTION = fork_mark(embedded=bool({"uwsgi", "_apache"} & set(sys.modules)))


def _pools() -> List[Any]:
    """A copy of :data:`_LIVE_POOLS`. Iterating a WeakSet runs Python code, so a pool
    made meanwhile by another thread fails the copy: copy again (no lock: this also runs
    in the fork hook, where a lock held at the fork would never be released)."""
    while True:
        try:
            return list(_LIVE_POOLS)
        except RuntimeError:  # "Set changed size during iteration"
            continue


def notice_fork() -> None:
    """The first use of a pool in a new process: every pool adopts it, then the mark is
    set again (for this process's own children). Threads of the child that race here
    each adopt nothing twice."""
    pid = os.getpid()
    for pool in _pools():
        if pool._pid != pid:
            pool._adopt_process()
    UNFORKED[0] = 1


# Whether a new pool opens its min_size connections at once; an embedding server's
# integration turns it off (see warm_at_creation).
_warm_at_creation = True


def leave_warming_to_the_server() -> None:
    """Called by a server integration that opens each worker's connections at boot."""
    global _warm_at_creation
    _warm_at_creation = False


def warm_at_creation() -> bool:
    """Whether a new pool should open its ``min_size`` connections now: not under a
    server that opens them in each worker at boot (gunicorn's ``post_worker_init``, the
    embedding servers), where a pool made in the parent would keep them there."""
    return _warm_at_creation and "gunicorn.arbiter" not in sys.modules


def register(pool: Any) -> None:
    """Note a new pool, and announce it to the server integrations."""
    _LIVE_POOLS.add(pool)
    for announce in ON_POOL_CREATED:
        announce(pool)


def live_pools() -> List[Any]:
    """The pools alive in this process (for hooks, logs and exporters)."""
    return [pool for pool in _pools() if not pool._closed]


def close_process_pools() -> None:
    """Close every pool this process opened; make any inherited from a parent harmless.

    Runs at exit and from server hooks (gunicorn's ``worker_exit``); safe to call twice.
    """
    for pool in _pools():
        if pool._pid == os.getpid():
            try:
                pool.close()
            except Exception:  # exiting anyway; the server will see the socket close
                log.debug("closing pool %s failed", pool.name, exc_info=True)
        else:
            pool._forget_parent()


def _after_fork_in_child() -> None:
    global ADOPT_LOCK
    UNFORKED[0] = 0  # the kernel's page is wiped already; the byte is not
    ADOPT_LOCK = threading.Lock()  # a parent thread may have held it at the fork
    for pool in _pools():
        pool._forget_parent()


def adopt_lock() -> Any:
    """The lock a pool takes to adopt a new process (replaced in each forked child)."""
    return ADOPT_LOCK


class ProcessBound:
    """The pool's side of ``fork()`` (a mixin of :class:`~wsgipool.Pool`): forget the
    parent's connections, and start afresh in a new process."""

    def _forget_parent(self) -> None:
        """In a forked child: make every inherited connection harmless and forget it.

        Runs from the fork hook, before anything else in the child; creates no lock
        (under gevent the hub is not patched in yet), so the child's first checkout
        finishes the job in :meth:`_adopt_process`.
        """
        inherited = list(self._all)
        for entry in inherited:
            self._driver.detach(entry.conn)
        self._all = set()
        self._idle = []
        self._past_generations.add(self._generation)
        self._generation = next(GENERATIONS)
        self._inherited += len(inherited)

    def _adopt_process(self) -> None:
        """First use in a new process (forked, with or without fork hooks): start afresh."""
        with adopt_lock():
            if self._pid == os.getpid():
                return
            if self._all:  # no fork hook ran (uWSGI without --enable-threads, ...)
                self._forget_parent()
            # Figures are per process: the child starts its own, noting what it dropped.
            stats = PoolStats(DISCARD_REASONS)
            stats.discard_reasons["fork"] = self._inherited
            self._stats = stats
            self._inherited = 0
            self._init_process_state()
            log.info("pool %s adopted by pid %d after fork", self.name, self._pid)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_process_pools)
if {"mod_wsgi", "_apache", "uwsgi"} & set(sys.modules):  # a server embedding Python
    from . import embedded

    # mod_python runs no atexit handler: register the same one with it.
    embedded.install(ON_POOL_CREATED, close_process_pools, leave_warming_to_the_server)
