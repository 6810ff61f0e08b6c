"""Pool figures through ``prometheus_client`` (``pip install wsgipool[prometheus]``).

One process (a threaded server, a single worker)::

    from prometheus_client import REGISTRY
    from wsgipool.prometheus import PoolCollector
    REGISTRY.register(PoolCollector())       # every live pool, read at scrape time

Several processes (gunicorn workers), the way prometheus_client documents it: set
``PROMETHEUS_MULTIPROC_DIR``, serve ``MultiProcessCollector`` from your metrics endpoint,
and in ``gunicorn.conf.py`` import ``child_exit`` from here beside wsgipool's hooks. Each
worker then mirrors its pools into prometheus_client's shared files once a second
(:class:`MultiProcessMirror`, started by ``wsgipool.gunicorn.post_worker_init``).

Series are labelled by pool (``pool="<name>"``); two live pools with one name are told
apart as ``<name>#2`` (see :func:`wsgipool.exporters.pool_label`), because Prometheus
rejects a scrape that repeats a series.

prometheus_client is imported only here: wsgipool itself never needs it.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Iterable, Iterator, Optional, Tuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from .exporters import DISCARDS, HISTOGRAMS, METRICS, pool_label
from .pool import Pool, live_pools
from .stats import BOUNDS

log = logging.getLogger(__name__)

_INF = float("inf")


class PoolCollector:
    """A prometheus_client collector: the pools of this process, read at each scrape.

    ::

        from prometheus_client import REGISTRY
        REGISTRY.register(PoolCollector())

    Series (``wsgipool_checkouts_total``, ``wsgipool_wait_seconds``...) carry a ``pool``
    label (:func:`wsgipool.exporters.pool_label`).

    :param pools: the pools to report; default ``None``: every live pool of the process
        at each scrape, including pools made after the collector.
    """

    def __init__(self, pools: Optional[Iterable[Pool]] = None) -> None:
        self._pools = list(pools) if pools is not None else None

    def collect(self) -> Iterator[Any]:
        """prometheus_client's collector method: one metric family per figure, each with
        a sample per pool, read now."""
        pools = self._pools if self._pools is not None else live_pools()
        families: Dict[str, Any] = {}
        for pool in pools:
            stats, label = pool.stats(), [pool_label(pool)]
            for key, name, kind, text in METRICS:
                if name not in families:
                    family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
                    # prometheus_client adds the _total suffix to counters itself.
                    families[name] = family(name[:-6] if kind == "counter" else name, text,
                                            labels=["pool"])
                families[name].add_metric(label, stats[key])
            name, text = DISCARDS
            family = families.setdefault(
                name, CounterMetricFamily(name[:-6], text, labels=["pool", "reason"]))
            for reason, count in stats["discard_reasons"].items():
                family.add_metric(label + [reason], count)
            for key, data in pool.histograms().items():
                name, text = HISTOGRAMS[key]
                family = families.setdefault(
                    name, HistogramMetricFamily(name, text, labels=["pool"]))
                family.add_metric(label, _cumulative(data), data["sum"])
        yield from families.values()


def _cumulative(data: Dict[str, Any]) -> list:
    buckets, running = [], data["zeros"]
    for bound, count in zip(BOUNDS, data["buckets"]):
        running += count
        buckets.append((repr(bound), running))
    buckets.append(("+Inf", data["count"]))
    return buckets


class MultiProcessMirror:
    """Copy this process's pool figures into prometheus_client metrics, for multiprocess mode.

    prometheus_client's multiprocess mode aggregates only its own metric objects, whose
    values live in files shared by the workers; a collector cannot see other processes.
    So each worker adds what changed since its last copy: counters by their increase,
    histogram buckets by their new counts, gauges summed over live workers.

    :param interval: seconds between two copies once :meth:`start` ran; default 1.0.
    """

    def __init__(self, interval: float = 1.0) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.interval = interval
        self._last: Dict[Tuple[int, str], Any] = {}
        self._gauges = {
            name: Gauge(name, text, ["pool"],
                        multiprocess_mode="livemax" if key.startswith("peak") else "livesum")
            for key, name, kind, text in METRICS if kind == "gauge" and key != "reuse_ratio"
        }
        self._counters = {name: Counter(name[:-6], text, ["pool"])
                          for _, name, kind, text in METRICS if kind == "counter"}
        self._discards = Counter(DISCARDS[0][:-6], DISCARDS[1], ["pool", "reason"])
        self._histograms = {key: Histogram(name, text, ["pool"], buckets=BOUNDS + (_INF,))
                            for key, (name, text) in HISTOGRAMS.items()}
        self._thread: Optional[threading.Thread] = None
        self._pid = 0

    def sync(self) -> None:
        """Push what changed in this process's pools since the last call.

        :raises Exception: whatever prometheus_client raises; the background thread logs
            it and carries on.
        """
        for pool in live_pools():
            stats, label = pool.stats(), pool_label(pool)
            for key, name, kind, _ in METRICS:
                if name in self._gauges:
                    self._gauges[name].labels(label).set(stats[key])
                elif name in self._counters:
                    self._counters[name].labels(label).inc(self._increase(pool, key, stats[key]))
            for reason, count in stats["discard_reasons"].items():
                self._discards.labels(label, reason).inc(
                    self._increase(pool, "discard:" + reason, count))
            for key, data in pool.histograms().items():
                child = self._histograms[key].labels(label)
                counts = [data["zeros"] + data["buckets"][0]] + data["buckets"][1:]
                for index, count in enumerate(counts):
                    grown = self._increase(pool, f"{key}:{index}", count)
                    if grown:
                        child._buckets[index].inc(grown)  # the buckets observe() fills
                child._sum.inc(self._increase(pool, key + ":sum", data["sum"]))

    def _increase(self, pool: Pool, key: str, value: float) -> float:
        last_key = (id(pool), key)
        previous = self._last.get(last_key, 0)
        self._last[last_key] = value
        return max(value - previous, 0)

    def start(self) -> None:
        """Sync every ``interval`` seconds from a daemon thread; once per process."""
        if self._pid == os.getpid():
            return
        self._pid, self._last = os.getpid(), {}
        self._thread = threading.Thread(target=self._run, name="wsgipool-prometheus",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        stop = threading.Event()
        while not stop.wait(self.interval):
            try:
                self.sync()
            except Exception:  # a metrics hiccup must never take a worker down
                log.exception("syncing pool figures to prometheus_client failed")


_mirror: Optional[MultiProcessMirror] = None


def start_multiprocess_mirror(interval: float = 1.0) -> MultiProcessMirror:
    """Start (once per process) the mirror of this process's pools; returns it.

    ``wsgipool.gunicorn.post_worker_init`` calls it when ``PROMETHEUS_MULTIPROC_DIR`` is
    set; call it yourself in each worker under another server.

    :param interval: seconds between two copies; default 1.0.
    :returns: the process's :class:`MultiProcessMirror`.
    """
    global _mirror
    if _mirror is None:
        _mirror = MultiProcessMirror(interval)
    _mirror.start()
    return _mirror


def sync_now() -> None:
    """Push the latest figures at once (a worker about to exit)."""
    if _mirror is not None and _mirror._pid == os.getpid():
        _mirror.sync()


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit``: let prometheus_client drop a dead worker's live gauges.

    Import it into ``gunicorn.conf.py`` beside wsgipool's hooks
    (``from wsgipool.prometheus import child_exit``); it runs in the master.

    :param server: gunicorn's arbiter (not used).
    :param worker: the worker that exited; its ``pid`` is marked dead.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
