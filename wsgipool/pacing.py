"""Holding a refused request back before its 503 (``PoolMiddleware(pace_refusals=...)``).

Under overload, clients that retry at once make each refusal cost a whole request's worth
of server CPU (read, parse, respond). Answered at once, refusals come back as fast as the
CPU allows and take it from the requests that hold connections, which stop finishing:
goodput collapses (issue 16; ``docs/overload.rst``). Held back ``pace_refusals`` seconds,
each refused client comes back at most that often, so refusals cost a bounded share.

When even that share is too much (the worker shares its core, or has more clients than
the pace allows), the pauses wake up late: the process is behind. Each late wake-up adds
to the pause of the refusals after it, up to ``MAX_EXTRA``, until they wake on time
again: the requests in hand keep the CPU, and refusals take longer instead.

Under gevent a pause is a timer of the lowest priority: in each turn of the event loop,
the requests holding connections (their database replies, their own sleeps) resume before
the refused ones send their 503s.
"""

from __future__ import annotations

import time
from random import random

from .cooperative import green

# The lowest priority libev and libuv watchers take (gevent's range is -2..2).
_LOWEST = -2


class Pacer:
    """The pauses of one middleware's refusals, longer while the process is behind."""

    __slots__ = ("extra", "late_at")

    #: Lateness (seconds) a pause may have without lengthening the next ones: the
    #: process is keeping up.
    ON_TIME = 0.002
    #: How much of each pause's lateness beyond ``ON_TIME`` the next pauses add (and
    #: how fast they shorten again once on time).
    GAIN = 0.05
    #: The most a pause is lengthened (seconds): a refusal is never held much longer
    #: than the ``Retry-After`` second its client is asked to wait.
    MAX_EXTRA = 1.0
    #: Seconds without a late pause after which an overload is over: pauses are plain
    #: again, so the next burst does not start with the last one's lengthening.
    OVER_AFTER = 2.0

    def __init__(self) -> None:
        self.extra = 0.0  # seconds added to each pause while the process is behind
        self.late_at = 0.0  # when a pause last woke up late (time.monotonic())

    def hold(self, seconds: float) -> None:
        """Pause about ``seconds`` (from 80% to 100% of it, so that refusals that came
        together do not come back together), plus ``extra``; then adjust ``extra``."""
        if self.extra and time.monotonic() - self.late_at > self.OVER_AFTER:
            self.extra = 0.0
        delay = max(0.0, seconds) * (1.0 - 0.2 * random()) + self.extra
        if delay <= 0.0:
            return
        late = pause(delay)
        if late > self.ON_TIME:
            self.late_at = time.monotonic()
        # Up with each late pause, down by GAIN × ON_TIME with each pause on time: slow
        # to shorten while refusals keep coming (most wake on time once lengthened
        # enough), and reset once none has been late for OVER_AFTER seconds.
        # (Threads may race on this figure: a lost update only shifts one pause.)
        extra = self.extra + self.GAIN * (late - self.ON_TIME)
        self.extra = min(self.MAX_EXTRA, max(0.0, extra))


def pause(seconds: float) -> float:
    """Sleep ``seconds``: cooperatively where the time module is patched (gevent,
    eventlet), at the lowest priority under gevent. Returns how late it woke up."""
    started = time.monotonic()
    hub = _gevent_hub()
    if hub is None:
        time.sleep(seconds)  # looked up now: a green server patches it after our import
    else:
        timer = hub.loop.timer(seconds, 0.0, True, _LOWEST)
        try:
            hub.wait(timer)
        finally:
            timer.close()
    return max(0.0, time.monotonic() - started - seconds)


def _gevent_hub():
    """This thread's gevent hub if gevent patched ``time.sleep``, else ``None``."""
    if green("time") != "gevent":
        return None
    from gevent import get_hub

    return get_hub()
