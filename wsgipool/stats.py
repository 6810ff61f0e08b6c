"""The pool's figures: plain counters and fixed-size histograms, updated under the pool's lock.

Nothing here grows with traffic: a histogram is a fixed list of bucket counts, so a pool
that has served a billion requests takes as much memory, and reads as fast, as a new one.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any, Dict, Iterable, List

#: Why a connection left the pool; the keys of ``stats()["discard_reasons"]``.
DISCARD_REASONS = (
    "broken", "closed", "rollback_failed", "reset_failed", "lifetime", "idle", "fork",
    "leaked", "pool_closed", "interrupted", "unresponsive",
)

# Upper bounds of the histogram buckets, in seconds: 1-2-5 steps from 10 µs to 60 s.
BOUNDS = tuple(
    round(mantissa * 10.0 ** exponent, 9)
    for exponent in range(-5, 2)
    for mantissa in (1, 2, 5)
) + (60.0,)


#: Values a histogram gathers before folding them into its buckets.
HISTOGRAM_BATCH = 256


class Histogram:
    """Durations in seconds: count, total, max, and percentiles read from fixed buckets.

    ``add`` only appends to a short list, which is folded into the buckets in bulk
    (sorted, one bisection per bucket bound) every ``BATCH`` values or when read: the
    per-value cost on the return path stays a list append.
    """

    __slots__ = ("count", "total", "max", "buckets", "pending")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.buckets = [0] * (len(BOUNDS) + 1)  # the last one: longer than 60 s
        self.pending: List[float] = []

    def add(self, seconds: float) -> None:
        pending = self.pending
        pending.append(seconds)
        if len(pending) >= HISTOGRAM_BATCH:
            self.fold()

    def fold(self) -> None:
        """Move the values added since the last fold into the counts and buckets."""
        pending = self.pending
        if not pending:
            return
        pending.sort()
        self.count += len(pending)
        self.total += sum(pending)
        self.max = max(self.max, pending[-1])
        below = 0
        for index, bound in enumerate(BOUNDS):
            upto = bisect_right(pending, bound)  # values <= bound fall in this bucket
            self.buckets[index] += upto - below
            below = upto
        self.buckets[-1] += len(pending) - below
        pending.clear()

    def percentile(self, fraction: float, zeros: int = 0) -> float:
        """The upper bound of the bucket holding the given fraction of values (never above
        ``max``); ``zeros`` counts values of 0 that were not added one by one."""
        total = self.count + zeros
        if total == 0:
            return 0.0
        rank = fraction * total
        if rank <= zeros:
            return 0.0
        seen = zeros
        for bound, count in zip(BOUNDS, self.buckets):
            seen += count
            if seen >= rank:
                return min(bound, self.max)
        return self.max

    def summary(self, zeros: int = 0) -> Dict[str, float]:
        self.fold()
        return {
            "count": self.count + zeros,
            "total": self.total,
            "max": self.max,
            "p50": self.percentile(0.50, zeros),
            "p95": self.percentile(0.95, zeros),
            "p99": self.percentile(0.99, zeros),
        }


class PoolStats:
    """The counters behind ``Pool.stats()``; the pool holds its lock while it updates them."""

    __slots__ = (
        "connects", "connect_errors", "closes", "checkouts", "returns", "timeouts",
        "queue_full", "rollbacks", "pings", "peak_in_use", "peak_waiting", "discard_reasons",
        "wait", "hold", "connect_time",
    )

    def __init__(self, reasons: Iterable[str]) -> None:
        self.connects = self.connect_errors = self.closes = 0
        self.checkouts = self.returns = self.timeouts = self.queue_full = 0
        self.rollbacks = self.pings = 0
        self.peak_in_use = self.peak_waiting = 0
        self.discard_reasons = dict.fromkeys(reasons, 0)
        self.wait = Histogram()  # only checkouts that queued; the rest waited 0 s
        self.hold = Histogram()
        self.connect_time = Histogram()

    def histograms(self) -> Dict[str, Dict[str, Any]]:
        """Raw bucket counts (upper bounds in ``BOUNDS``, then +Inf), for exporters."""
        for histogram in (self.wait, self.hold, self.connect_time):
            histogram.fold()
        zeros = self.checkouts - self.wait.count  # checkouts that did not queue waited 0 s
        return {
            name: {"buckets": list(h.buckets), "zeros": extra, "count": h.count + extra,
                   "sum": h.total}
            for name, h, extra in (("wait_seconds", self.wait, max(zeros, 0)),
                                   ("hold_seconds", self.hold, 0),
                                   ("connect_seconds", self.connect_time, 0))
        }

    def snapshot(self, *, max_size: int, size: int, idle: int, waiting: int,
                 opening: int = 0) -> Dict[str, Any]:
        for histogram in (self.wait, self.hold, self.connect_time):
            histogram.fold()
        in_use = size - idle - opening  # a connection being opened is in no checkout yet
        discards = sum(self.discard_reasons.values())
        return {
            "max_size": max_size,
            "size": size,
            "in_use": in_use,
            "idle": idle,
            "opening": opening,
            "waiting": waiting,
            "peak_in_use": self.peak_in_use,
            "peak_waiting": self.peak_waiting,
            "connects": self.connects,
            "connect_errors": self.connect_errors,
            "closes": self.closes,
            "checkouts": self.checkouts,
            "returns": self.returns,
            "reuse_ratio": round(self.checkouts / self.connects, 2) if self.connects else 0.0,
            "waits": self.wait.count,
            "timeouts": self.timeouts,
            "queue_full": self.queue_full,
            "rollbacks": self.rollbacks,
            "pings": self.pings,
            "discards": discards,
            "discard_reasons": dict(self.discard_reasons),
            "wait_seconds": self.wait.summary(zeros=max(self.checkouts - self.wait.count, 0)),
            "hold_seconds": self.hold.summary(),
            "connect_seconds": self.connect_time.summary(),
        }

