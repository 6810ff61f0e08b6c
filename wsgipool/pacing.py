"""Holding a refused request back before its 503 (``PoolMiddleware(pace_refusals=...)``).

Under overload, clients that retry at once make each refusal cost a whole request's worth
of server CPU (read, parse, respond). Answered at once, refusals then come as fast as the
CPU allows and take it from the requests that hold connections, which stop finishing:
goodput collapses (issue 16). Held back ``pace_refusals`` seconds, each refused client
comes back at most that often, so refusals cost a bounded share of the CPU.

Under gevent the pause is a timer of the lowest priority: in each turn of the event loop,
the requests holding connections (their database replies, their own sleeps) resume before
the refused ones send their 503s.
"""

from __future__ import annotations

import sys
import time

# The lowest priority libev and libuv watchers take (gevent's range is -2..2).
_LOWEST = -2


def pause(seconds: float) -> None:
    """Sleep ``seconds``: cooperatively where the time module is patched (gevent,
    eventlet), at the lowest priority under gevent."""
    hub = _gevent_hub()
    if hub is None:
        time.sleep(seconds)  # looked up now: a green server patches it after our import
        return
    timer = hub.loop.timer(seconds, 0.0, True, _LOWEST)
    try:
        hub.wait(timer)
    finally:
        timer.close()


def _gevent_hub():
    """This thread's gevent hub if gevent patched ``time.sleep``, else ``None``."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("time"):
        return None
    from gevent import get_hub

    return get_hub()
