"""The pool's stats over HTTP: a small WSGI app answering JSON, or Prometheus text.

Usage::

    from wsgipool.exporters import StatsApp
    stats_app = StatsApp(pool)          # mount it where only operators can reach it

or ``PoolMiddleware(app, url, stats_path="/_pool")``. It answers the stats of the process
that serves the request (under gunicorn, one worker's). Prometheus text is served to
``?format=prometheus`` or to a client that accepts ``text/plain`` or OpenMetrics, as
Prometheus scrapers do; JSON otherwise. Never expose it publicly: it tells anyone how
busy the database is.

Each pool's series carry a ``pool`` label: its name, unique among the live pools of the
process. Prometheus rejects a scrape that repeats a series, so a second live pool with the
same name (the same URL, or the same ``name=``) is labelled ``<name>#2`` (then ``#3``...),
with a warning; give each pool its own ``name=`` to choose the labels yourself.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Sequence, Tuple, Union

from . import pool as pool_module
from .stats import BOUNDS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .pool import Pool

log = logging.getLogger(__name__)

# (stats key, metric name, type, help) for every plain figure.
METRICS: Sequence[Tuple[str, str, str, str]] = (
    ("max_size", "wsgipool_max_size", "gauge", "Most connections the pool may open."),
    ("size", "wsgipool_connections", "gauge", "Connections open now."),
    ("in_use", "wsgipool_connections_in_use", "gauge", "Connections checked out now."),
    ("idle", "wsgipool_connections_idle", "gauge", "Connections open and free now."),
    ("waiting", "wsgipool_waiting", "gauge", "Checkouts queued for a connection now."),
    ("peak_in_use", "wsgipool_peak_in_use", "gauge", "Most connections in use at once."),
    ("peak_waiting", "wsgipool_peak_waiting", "gauge", "Most checkouts queued at once."),
    ("reuse_ratio", "wsgipool_reuse_ratio", "gauge", "Checkouts per connection opened."),
    ("connects", "wsgipool_connects_total", "counter", "Connections opened."),
    ("connect_errors", "wsgipool_connect_errors_total", "counter", "Failed connects."),
    ("closes", "wsgipool_closes_total", "counter", "Connections closed by the pool."),
    ("checkouts", "wsgipool_checkouts_total", "counter", "Connections handed out."),
    ("returns", "wsgipool_returns_total", "counter", "Checkouts ended."),
    ("waits", "wsgipool_waits_total", "counter", "Checkouts that had to queue."),
    ("timeouts", "wsgipool_timeouts_total", "counter", "Checkouts that timed out."),
    ("queue_full", "wsgipool_queue_full_total", "counter",
     "Checkouts refused at once: max_waiting were already waiting."),
    ("rollbacks", "wsgipool_rollbacks_total", "counter", "Rollbacks on return."),
    ("pings", "wsgipool_pings_total", "counter", "Liveness checks passed."),
)
# stats key: (metric name, help) for each histogram.
HISTOGRAMS: Dict[str, Tuple[str, str]] = {
    "wait_seconds": ("wsgipool_wait_seconds", "Time checkouts waited for a connection."),
    "hold_seconds": ("wsgipool_hold_seconds", "Time connections were held."),
    "connect_seconds": ("wsgipool_connect_seconds", "Time to open a connection."),
}
DISCARDS = ("wsgipool_discards_total", "Connections discarded, by reason.")


# Each pool's label, given once (at creation, else when first exported) and kept for its
# life, so its series never change name; creation order decides who gets the plain name.
_LABELS: "weakref.WeakKeyDictionary[Pool, str]" = weakref.WeakKeyDictionary()
_LABELS_LOCK = threading.Lock()


def pool_label(pool: "Pool") -> str:
    """The ``pool`` label of ``pool``'s series: its name, made unique among live pools.

    A second live pool with the same name is labelled ``<name>#2`` (then ``#3``...), with
    a warning; the label stays the same for the pool's life.

    :param pool: a :class:`~wsgipool.Pool`.
    :returns: the label, for Prometheus and the JSON stats.
    """
    label = _LABELS.get(pool)
    if label is not None:
        return label
    with _LABELS_LOCK:
        label = _LABELS.get(pool)
        if label is None:
            taken = {_LABELS.get(other) for other in pool_module.live_pools()
                     if other is not pool}
            label, count = pool.name, 1
            while label in taken:
                count += 1
                label = f"{pool.name}#{count}"
            _LABELS[pool] = label
            if count > 1:
                log.warning("another live pool is named %s: this one's metrics are labelled "
                            "pool=%r; give each pool its own name=", pool.name, label)
    return label


pool_module.ON_POOL_CREATED.append(pool_label)


def as_json(pools: Iterable["Pool"]) -> Dict[str, Any]:
    """This process's pools' stats, keyed by :func:`pool_label` (the name, unless shared).

    :param pools: the pools to report.
    :returns: ``{"pid": <this process>, "pools": {label: Pool.stats()}}``, ready for
        ``json.dumps``.
    """
    return {"pid": os.getpid(), "pools": {pool_label(pool): pool.stats() for pool in pools}}


def as_prometheus(pools: Iterable["Pool"]) -> str:
    """This process's pools' stats in the Prometheus text exposition format (0.0.4).

    :param pools: the pools to report.
    :returns: the text: counters, gauges, discards by ``reason``, and the wait, hold
        and connect time histograms, each series labelled by ``pool``.
    """
    samples: Dict[str, List[str]] = {}
    kinds: Dict[str, Tuple[str, str]] = {}
    for pool in pools:
        stats = pool.stats()
        label = f'pool="{_escape(pool_label(pool))}"'
        for key, name, kind, text in METRICS:
            kinds[name] = (kind, text)
            samples.setdefault(name, []).append(f"{name}{{{label}}} {_number(stats[key])}")
        name, text = DISCARDS
        kinds[name] = ("counter", text)
        for reason, count in stats["discard_reasons"].items():
            samples.setdefault(name, []).append(f'{name}{{{label},reason="{reason}"}} {count}')
        for key, data in pool.histograms().items():
            name, text = HISTOGRAMS[key]
            kinds[name] = ("histogram", text)
            lines = samples.setdefault(name, [])
            cumulative = data["zeros"]
            for bound, count in zip(BOUNDS, data["buckets"]):
                cumulative += count
                lines.append(f'{name}_bucket{{{label},le="{bound!r}"}} {cumulative}')
            lines.append(f'{name}_bucket{{{label},le="+Inf"}} {data["count"]}')
            lines.append(f"{name}_sum{{{label}}} {_number(data['sum'])}")
            lines.append(f"{name}_count{{{label}}} {data['count']}")
    out = []
    for name, lines in samples.items():
        kind, text = kinds[name]
        out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *lines]
    return "\n".join(out) + "\n"


class StatsApp:
    """A WSGI app answering the stats of one pool, or several, of this process.

    ::

        from wsgipool.exporters import StatsApp
        stats_app = StatsApp(app.pool)   # mount it where only operators can reach it

    It answers Prometheus text to ``?format=prometheus`` or a client accepting
    ``text/plain`` or OpenMetrics (as scrapers do), JSON (:func:`as_json`) otherwise,
    always ``200`` with ``Cache-Control: no-store``. It takes no connection.

    :param pools: a :class:`~wsgipool.Pool`, or a list or tuple of them.
    """

    def __init__(self, pools: Union["Pool", Sequence["Pool"]]) -> None:
        self.pools = list(pools) if isinstance(pools, (list, tuple)) else [pools]

    def __call__(self, environ: "WSGIEnvironment", start_response: "StartResponse") -> List[bytes]:
        if wants_prometheus(environ):
            body = as_prometheus(self.pools).encode()
            content_type = "text/plain; version=0.0.4; charset=utf-8"
        else:
            body = json.dumps(as_json(self.pools), indent=2).encode()
            content_type = "application/json"
        start_response("200 OK", [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ])
        return [body]


def wants_prometheus(environ: "WSGIEnvironment") -> bool:
    """Whether a stats request asks for Prometheus text rather than JSON.

    :param environ: the request's WSGI environ (``QUERY_STRING``, ``HTTP_ACCEPT``).
    """
    if "format=prometheus" in environ.get("QUERY_STRING", ""):
        return True
    accept = environ.get("HTTP_ACCEPT", "")
    return "text/plain" in accept or "openmetrics" in accept


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: Any) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)
