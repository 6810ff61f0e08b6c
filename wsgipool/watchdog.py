"""A time bound on the round trips the pool makes itself (ping, rollback, session reset).

A server that stops answering (a frozen host, a stalled network) leaves the driver's
blocking read waiting for as long as the kernel allows: libpq has no read timeout, and
TCP keepalives do not fire while the peer's kernel still acknowledges. The watchdog is
one thread per process that, when a guarded round trip overruns its deadline, shuts the
connection's socket down. The driver's read then returns at once with an error, and the
pool discards the connection.

The thread is a real OS thread even under gevent's monkey-patching: a greenlet could not
run while a C driver blocks the hub, which is exactly when it is needed. It only touches
its own raw locks and calls ``shutdown()``.
"""

from __future__ import annotations

import logging
import os
import _socket
import sys
from time import monotonic
from typing import Any, Callable, Optional, Set, Tuple

log = logging.getLogger(__name__)


def _originals() -> Tuple[Callable[..., Any], Callable[[], Any]]:
    """``start_new_thread`` and ``allocate_lock`` as the OS provides them, even if gevent
    has patched the ``_thread`` module."""
    if "gevent.monkey" in sys.modules:
        from gevent.monkey import get_original

        return (get_original("_thread", "start_new_thread"),
                get_original("_thread", "allocate_lock"))
    import _thread

    return _thread.start_new_thread, _thread.allocate_lock


class Guard:
    """One guarded round trip: its deadline, its socket, and whether it was cut."""

    __slots__ = ("deadline", "fd", "cut")

    def __init__(self, deadline: float, fd: int) -> None:
        self.deadline = deadline
        self.fd = fd
        self.cut = False  # the watchdog shut the socket down


# How long the thread waits with nothing to guard before it ends (seconds).
IDLE_EXIT = 10.0
# How often the thread looks at the round trips in flight, while there are any (seconds):
# a round trip is cut at most this long after its deadline.
TICK = 0.1


class Watchdog:
    """Shuts down the socket of a guarded round trip that overruns its deadline.

    Starting and finishing a guard is a set insertion and removal under a lock; the
    thread sleeps while no round trip is guarded and looks every :data:`TICK` otherwise.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        start, allocate = _originals()
        self._start_thread = start
        self._lock = allocate()
        self._wake = allocate()
        self._wake.acquire()  # released to wake the thread from its idle sleep
        self._idle_sleep = False
        self._active: Set[Guard] = set()
        self._running = False
        self._pid = os.getpid()

    def start(self, fd: Optional[int], seconds: float) -> Optional[Guard]:
        """Guard a round trip on socket ``fd`` for ``seconds``; ``None`` if ``fd`` is."""
        if fd is None or fd < 0:
            return None
        if self._pid != os.getpid():  # forked without a hook: the thread stayed behind
            self._reset()
        # A descriptor of our own for the same socket: if the driver closes its own during
        # the round trip and the number is reused, the cut still reaches only this socket.
        try:
            fd = os.dup(fd)
        except OSError:
            return None
        guard = Guard(monotonic() + seconds, fd)
        with self._lock:
            self._active.add(guard)
            if not self._running:
                try:
                    self._start_thread(self._run, ())
                except Exception:  # no thread to be had (a process at its limit)
                    self._active.discard(guard)
                    os.close(fd)
                    return None  # this round trip goes unbounded; the next one tries again
                self._running = True
            elif self._idle_sleep:
                self._idle_sleep = False
                self._wake.release()
        return guard

    def finish(self, guard: Optional[Guard]) -> bool:
        """End a guard; ``True`` if the watchdog cut its socket (the round trip overran)."""
        if guard is None:
            return False
        with self._lock:
            self._active.discard(guard)
            cut = guard.cut
        os.close(guard.fd)
        return cut

    def _run(self) -> None:
        while True:
            with self._lock:
                now = monotonic()
                for guard in [g for g in self._active if g.deadline <= now]:
                    self._active.discard(guard)
                    guard.cut = True
                    _shutdown(guard.fd)
                busy = bool(self._active)
                self._idle_sleep = not busy
            if busy:
                _sleep(TICK)
                continue
            if self._wake.acquire(timeout=IDLE_EXIT):
                continue  # start() has something to guard
            with self._lock:
                if not self._active and self._idle_sleep:
                    self._idle_sleep = False
                    self._running = False  # the next start() starts a new thread
                    return


def _shutdown(fd: int) -> None:
    """Shut the connection's socket down for both directions; ``fd`` (the guard's own
    duplicate) stays open until the guard finishes."""
    try:  # the C socket type: gevent's would reach for a hub from this thread
        sock = _socket.socket(fileno=fd)
    except OSError:
        return
    try:  # nothing logged here: under gevent a handler's lock is not this thread's
        sock.shutdown(_socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()  # leave the descriptor to the guard


def _sleep(seconds: float) -> None:
    """Sleep this OS thread only (``time.sleep`` may be gevent's)."""
    if "gevent.monkey" in sys.modules:
        from gevent.monkey import get_original

        get_original("time", "sleep")(seconds)
    else:
        import time

        time.sleep(seconds)


#: The process's watchdog; a forked child makes its own (see :meth:`Watchdog.start`).
WATCHDOG = Watchdog()


def _after_fork_in_child() -> None:
    WATCHDOG._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
