"""``environ["wsgipool.hold_ms"]``: how long a request has held its connection, for logs."""

from __future__ import annotations

from time import monotonic
from typing import Optional


class HoldClock:
    """``environ["wsgipool.hold_ms"]``: milliseconds the request has held its connection.

    Its text is read when the access log is written, after the body went out, so a log
    format can print the hold time; it stops when the connection goes back. It holds no
    reference to the connection, so the environ never keeps one alive.
    """

    __slots__ = ("_since", "_held")

    def __init__(self, since: Optional[float] = None) -> None:
        self._since = since  # None: no connection taken yet (lazy checkout)
        self._held: Optional[float] = None

    def start(self, since: float) -> None:
        if self._since is None:
            self._since = since

    def stop(self) -> None:
        if self._held is None:
            self._held = 0.0 if self._since is None else monotonic() - self._since

    @property
    def stopped(self) -> bool:
        """Whether the request's connections are going or gone back (its response
        closed): anything still holding one must not use it."""
        return self._held is not None

    def __str__(self) -> str:
        if self._held is None:
            held = 0.0 if self._since is None else monotonic() - self._since
        else:
            held = self._held
        return "%.3f" % (held * 1e3)

    __repr__ = __str__
