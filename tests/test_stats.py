"""Stats: every key against a scripted workload, and the exporters that publish them."""

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from servers import ROOT, Gunicorn, get
from wsgipool import PoolTimeout
from wsgipool.exporters import as_json, as_prometheus
from wsgipool.prometheus import PoolCollector

KEYS = {
    "max_size", "size", "in_use", "idle", "opening", "waiting", "peak_in_use", "peak_waiting",
    "connects", "connect_errors", "closes", "checkouts", "returns", "reuse_ratio", "waits",
    "timeouts", "queue_full", "rollbacks", "pings", "discards", "discard_reasons", "wait_seconds",
    "hold_seconds", "connect_seconds",
}
TIMING_KEYS = {"count", "total", "max", "p50", "p95", "p99"}


def scripted(pool, db):
    """100 quick checkouts; a waiter queued 0.2 s; a timeout; a closed connection; a rollback."""
    admin = db.admin()
    admin.cursor().execute("DROP TABLE IF EXISTS wsgipool_stats")
    admin.cursor().execute("CREATE TABLE wsgipool_stats (n INTEGER)")
    admin.commit()
    admin.close()
    for _ in range(100):
        with pool.connection() as conn:
            conn.rollback()
    holder = pool.checkout()
    second = pool.checkout()
    waited = []

    def waiter():
        with pool.connection() as conn:
            waited.append(conn)
            conn.rollback()

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    while pool.stats()["waiting"] == 0:
        time.sleep(0.002)
    time.sleep(0.2)  # the waiter waits about this long
    pool.checkin(holder)
    thread.join(10)
    assert not thread.is_alive()
    holder = pool.checkout()  # both connections out again
    with pytest.raises(PoolTimeout):
        pool.checkout(timeout=0.05)
    pool.checkin(holder)
    second.conn.close()  # the handler closes its connection
    pool.checkin(second)
    with pool.connection() as conn:
        conn.cursor().execute("INSERT INTO wsgipool_stats VALUES (1)")  # left uncommitted


def test_every_key_against_a_scripted_workload(db, pools):
    pool = pools(db.url, max_size=2, timeout=5)
    scripted(pool, db)
    stats = pool.stats()
    assert set(stats) == KEYS
    for key in ("wait_seconds", "hold_seconds", "connect_seconds"):
        assert set(stats[key]) == TIMING_KEYS
    assert stats["max_size"] == 2
    assert (stats["size"], stats["in_use"], stats["idle"], stats["waiting"]) == (1, 0, 1, 0)
    assert stats["peak_in_use"] == 2 and stats["peak_waiting"] == 1
    assert stats["connects"] == 2  # the closed one is not replaced until needed
    assert stats["connect_errors"] == 0
    assert stats["checkouts"] == 100 + 2 + 1 + 1 + 1 == stats["returns"]
    assert stats["reuse_ratio"] == round(105 / 2, 2)
    assert stats["waits"] == 1 and stats["timeouts"] == 1
    assert stats["rollbacks"] == 1 and stats["pings"] == 0
    assert stats["discards"] == 1 and stats["discard_reasons"]["closed"] == 1
    assert stats["closes"] == 1
    wait = stats["wait_seconds"]
    assert wait["count"] == stats["checkouts"]  # those that did not queue waited 0 s
    assert 0.15 <= wait["max"] < 5 and wait["p50"] == 0.0
    hold = stats["hold_seconds"]
    assert hold["count"] == stats["returns"] and hold["max"] >= 0.15
    assert 0 < hold["p50"] <= hold["p95"] <= hold["p99"] <= hold["max"]
    assert stats["connect_seconds"]["count"] == 2 and stats["connect_seconds"]["total"] > 0


def test_reading_stats_does_not_block_checkouts(sqlite, pools):
    pool = pools(sqlite.url, max_size=2)
    stop, reads = threading.Event(), []

    def reader():
        while not stop.is_set():
            reads.append(pool.stats()["checkouts"])

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    for _ in range(500):
        with pool.connection():
            pass
    stop.set()
    thread.join(10)
    assert not thread.is_alive() and reads
    assert pool.stats()["checkouts"] == 500


def test_prometheus_text_parses_and_matches_stats(db, pools):
    pool = pools(db.url, max_size=2, timeout=5)
    scripted(pool, db)
    families = {f.name: f for f in text_string_to_metric_families(as_prometheus([pool]))}
    stats = pool.stats()

    def value(family, sample_name=None, **labels):
        for sample in families[family].samples:
            if (sample_name in (None, sample.name)
                    and all(sample.labels.get(k) == v for k, v in labels.items())):
                return sample.value
        raise KeyError(family)

    assert value("wsgipool_checkouts") == stats["checkouts"]
    assert value("wsgipool_connections_idle") == stats["idle"]
    assert value("wsgipool_discards", reason="closed") == 1
    assert value("wsgipool_wait_seconds", "wsgipool_wait_seconds_count") == \
        stats["wait_seconds"]["count"]
    assert value("wsgipool_hold_seconds", "wsgipool_hold_seconds_bucket", le="+Inf") == \
        stats["returns"]
    assert families["wsgipool_wait_seconds"].type == "histogram"
    assert as_json([pool])["pools"][pool.name]["checkouts"] == stats["checkouts"]


def test_collector_for_prometheus_client(sqlite, pools):
    pool = pools(sqlite.url)
    for _ in range(7):
        with pool.connection():
            pass
    registry = CollectorRegistry()
    registry.register(PoolCollector([pool]))
    assert registry.get_sample_value("wsgipool_checkouts_total", {"pool": pool.name}) == 7
    assert registry.get_sample_value("wsgipool_connects_total", {"pool": pool.name}) == 1
    assert registry.get_sample_value("wsgipool_hold_seconds_count", {"pool": pool.name}) == 7
    text = generate_latest(registry).decode()
    assert {f.name for f in text_string_to_metric_families(text)} >= {
        "wsgipool_checkouts", "wsgipool_wait_seconds", "wsgipool_discards"}


def test_gunicorn_multiprocess_metrics_add_up(postgresql, tmp_path):
    """prometheus_client's multiprocess mode, as it documents it for gunicorn."""
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {"DATABASE_URL": postgresql.url, "POOL_MAX_SIZE": "2", "WORKERS": "2",
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    apps = f"{ROOT}/tests/gunicorn_apps"
    server = Gunicorn("metrics_app:app", "-c", "gunicorn_test.conf.py", cwd=apps, env=env,
                      log_path=str(tmp_path / "gunicorn.log"))
    with server:
        assert all(get(server.url + "/")[0] == 200 for _ in range(30))
        time.sleep(1.5)  # each worker mirrors its figures once a second
        status, body = get(server.url + "/metrics")
    assert status == 200, server.log()[-2000:]
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    checkouts = sum(s.value for s in families["wsgipool_checkouts"].samples
                    if s.name == "wsgipool_checkouts_total")
    holds = sum(s.value for s in families["wsgipool_hold_seconds"].samples
                if s.name == "wsgipool_hold_seconds_count")
    assert checkouts == 30 and holds == 30
    assert "Traceback" not in server.log()


# The access log format the README shows, verbatim.
ACCESS_LOG_FORMAT = ('%(h)s "%(r)s" %(s)s %(b)s %(M)sms '
                     'db_wait=%({wsgipool.wait_ms}e)sms db_hold=%({wsgipool.hold_ms}e)sms')


def test_gunicorn_access_log_shows_wait_and_hold(sqlite, tmp_path):
    import re

    env = {"DATABASE_URL": sqlite.url, "POOL_MAX_SIZE": "2", "WORKERS": "1", "THREADS": "2"}
    apps = f"{ROOT}/tests/gunicorn_apps"
    access = tmp_path / "access.log"
    server = Gunicorn("guestbook_like:app", "--access-logfile", str(access),
                      "--access-logformat", ACCESS_LOG_FORMAT, "-c", "gunicorn_test.conf.py",
                      cwd=apps, env=env, log_path=str(tmp_path / "gunicorn.log"))
    with server:
        assert get(server.url + "/")[0] == 200
    lines = access.read_text().splitlines()
    match = re.search(r"db_wait=(\d+\.\d{3})ms db_hold=(\d+\.\d{3})ms", lines[-1])
    assert match, lines
    assert float(match.group(2)) >= 50  # the app holds its connection for 50 ms


def series(text):
    """Every (sample name, labels) in an exposition, as prometheus_client parses it."""
    return [(sample.name, tuple(sorted(sample.labels.items())))
            for family in text_string_to_metric_families(text) for sample in family.samples]


def exposition_of(how, pools):
    if how == "as_prometheus":
        return as_prometheus(pools)
    registry = CollectorRegistry()
    registry.register(PoolCollector(pools))
    return generate_latest(registry).decode()


@pytest.mark.parametrize("how", ["as_prometheus", "PoolCollector"])
@pytest.mark.parametrize("same", [
    pytest.param("url", id="same-url"),
    pytest.param("name", id="same-name"),
])
def test_pools_sharing_a_name_give_distinct_series(sqlite, tmp_path, pools, how, same):
    """Prometheus rejects a scrape with a series twice: two pools of one name (the same
    URL, or the same name=) keep their own series, the second labelled "<name>#2"."""
    if same == "url":
        first, second = pools(sqlite.url), pools(sqlite.url)
    else:
        other = f"sqlite:///{tmp_path / 'other.db'}"
        first, second = pools(sqlite.url, name="main"), pools(other, name="main")
    for pool, uses in ((first, 3), (second, 5)):
        for _ in range(uses):
            with pool.connection():
                pass
    text = exposition_of(how, [first, second])
    found = series(text)
    duplicated = sorted({s for s in found if found.count(s) > 1})
    assert duplicated == [], duplicated[:2]
    checkouts = {dict(labels)["pool"]: value for family in text_string_to_metric_families(text)
                 for sample in family.samples if sample.name == "wsgipool_checkouts_total"
                 for labels, value in [(sample.labels, sample.value)]}
    assert checkouts == {first.name: 3, f"{first.name}#2": 5}
    assert sorted(pool["checkouts"] for pool in as_json([first, second])["pools"].values()) \
        == [3, 5]


def test_collector_of_every_live_pool_gives_unique_series(sqlite, pools):
    """PoolCollector() with no list reads every live pool of the process."""
    made = [pools(sqlite.url) for _ in range(3)]
    for pool in made:
        with pool.connection():
            pass
    found = series(exposition_of("PoolCollector", None))
    assert len(found) == len(set(found))
    labels = {dict(labels)["pool"] for name, labels in found
              if name == "wsgipool_checkouts_total"}
    assert labels >= {made[0].name, f"{made[0].name}#2", f"{made[0].name}#3"}
