"""gevent (and eventlet): every driver either waits through the hub or says at boot that
it cannot (wsgipool.cooperative).

Real ``gunicorn -k gevent`` workers (one worker, a pool of 4) serve a handler that sleeps
0.2 s in the database; four requests arrive at once, and the test counts on the server
how many of those sleeps run at the same moment: 4 when the driver cooperates, 1 when it
blocks the hub. One gunicorn per case, started once for the module's tests of it.
"""

import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import MySQLdb
import psycopg2
import pytest

from readme import snippet
from servers import ROOT, Gunicorn, get

APPS = os.path.join(ROOT, "tests", "gunicorn_apps")
CONFIG = os.path.join(APPS, "gunicorn_test.conf.py")
PG = "postgresql://postgres@127.0.0.1:5432/test"
MY = "mysql://root@127.0.0.1:3306/test"
MAX_SIZE = 4

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gevent") is None,
                       reason="gevent is not installed (pip install gevent)"),
]

# Each case: the URL (before its marker), the worker class, and extra environment.
CASES = {
    "psycopg2": (PG, "gevent", {}),
    "psycopg2-off": (PG, "gevent", {"WSGIPOOL_PSYCOPG2_WAIT_CALLBACK": "off"}),
    "psycopg": (PG.replace("postgresql:", "postgresql+psycopg:"), "gevent", {}),
    "mysqlclient": (MY, "gevent", {}),
}


@pytest.fixture(scope="module", params=list(CASES))
def served(request, tmp_path_factory):
    """(case, server, marker): one gunicorn master with one worker for the case."""
    url, worker_class, extra = CASES[request.param]
    marker = f"gevent_coop_{uuid.uuid4().hex[:12]}"
    if url.startswith("postgresql"):
        url = f"{url}?application_name={marker}"
    env = dict(DATABASE_URL=url, WORKER_CLASS=worker_class, WORKERS="1",
               POOL_MAX_SIZE=str(MAX_SIZE), COOP_MARKER=marker, **extra)
    folder = tmp_path_factory.mktemp("coop")
    config = CONFIG
    if request.param == "psycopg2":  # docs/gevent.rst's config, as users copy it
        config = folder / "gunicorn.conf.py"
        config.write_text(snippet("gevent-gunicorn-conf"))
    server = Gunicorn("cooperative_app:app", "-c", str(config), cwd=APPS, env=env,
                      log_path=str(folder / f"{request.param}.log"))
    try:
        server.wait_ready()
        _wait_for(lambda: "opens at most" in server.log(), server)
        yield request.param, server, marker
    finally:
        server.stop(timeout=15)


def _wait_for(condition, server, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {server.log()[-3000:]}")


class Sampler:
    """Counts, every few ms from a thread of its own, the marked sleeps running now."""

    def __init__(self, case, marker):
        if case == "mysqlclient":
            self.conn = MySQLdb.connect(host="127.0.0.1", user="root", db="test",
                                        autocommit=True)
            self.query = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                          "WHERE INFO LIKE %s AND ID <> CONNECTION_ID()")
            self.args = (f"%{marker}%",)
        else:
            self.conn = psycopg2.connect(PG)
            self.conn.autocommit = True
            self.query = ("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                          " AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'")
            self.args = (marker,)
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        cursor = self.conn.cursor()
        while not self._stop.is_set():
            cursor.execute(self.query, self.args)
            self.most = max(self.most, cursor.fetchone()[0])
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive()
        self.conn.close()


def four_at_once(server, case, marker):
    """Send 4 requests at once; how many sleeps the server ran together at most."""
    with Sampler(case, marker) as sampler, ThreadPoolExecutor(MAX_SIZE) as executor:
        answers = list(executor.map(lambda _: get(server.url + "/sleep", timeout=15),
                                    range(MAX_SIZE)))
    assert [status for status, _ in answers] == [200] * MAX_SIZE, answers
    assert len({body for _, body in answers}) == 1  # one worker served them all
    return sampler.most


#: The line each case's worker logs once, at boot, under wsgipool.cooperative.
BOOT_LINES = {
    "psycopg2": "[INFO] psycopg2 waits through gevent's hub in pid",
    # gunicorn.conf.py's configure() imported psycopg in the master, unpatched.
    "psycopg": "[INFO] psycopg was imported before gevent patched pid",
    "psycopg2-off": "[WARNING] psycopg2 blocks gevent's hub in pid",
    "mysqlclient": "[WARNING] mysqlclient blocks gevent's hub in pid",
}
ALTERNATIVES = {
    "psycopg2-off": "use psycopg 3 (postgresql+psycopg://), or psycopg2 with its wait "
                    "callback (unset WSGIPOOL_PSYCOPG2_WAIT_CALLBACK, or install psycogreen's)",
    "mysqlclient": "use PyMySQL (mysql+pymysql://)",
}


def test_boot_says_what_the_driver_does(served):
    """Before any request: one line, from the boot check's connect in post_worker_init
    (the callback installed, psycopg 3's wait chosen again, or a warning naming what
    cooperates). Runs first for each case: no request has been sent yet."""
    case, server, _ = served
    _wait_for(lambda: BOOT_LINES[case] in server.log(), server, timeout=10)
    log = server.log()
    assert [line for line in log.splitlines() if "gevent's hub" in line or
            "psycopg.waiting" in line] == [line for line in log.splitlines()
                                           if BOOT_LINES[case] in line], log
    if case in ALTERNATIVES:
        assert ALTERNATIVES[case] in log
    if case.startswith("psycopg2"):
        callback = get(server.url + "/callback")[1]
        assert callback == (b"'wsgipool.cooperative'" if case == "psycopg2" else b"None")


#: How many of the 4 sleeps run together: the driver waits through the hub, or blocks it.
EXPECTED_CONCURRENCY = {"psycopg2": 4, "psycopg2-off": 1, "psycopg": 4, "mysqlclient": 1}


def test_concurrent_queries_in_one_gevent_worker(served):
    case, server, marker = served
    assert four_at_once(server, case, marker) == EXPECTED_CONCURRENCY[case], server.log()
    assert server.log().count(BOOT_LINES[case]) == 1  # once per process, not per connection


# -- in-process: a plain process, and what changes for psycopg2 in green mode -----------


def test_a_process_not_patched_gets_no_callback_and_no_warning(caplog):
    from psycopg2 import extensions

    from wsgipool import Pool
    from wsgipool.cooperative import green

    assert green() is None
    caplog.set_level(logging.DEBUG, logger="wsgipool")
    for url in (PG, PG.replace("postgresql:", "postgresql+psycopg:"), MY):
        with Pool(url, max_size=1) as pool, pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
    assert extensions.get_wait_callback() is None
    assert [r for r in caplog.records if r.name == "wsgipool.cooperative"] == []


# Run in a process of its own, patched by gevent: what the wait callback changes.
GREEN_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import gevent, io, json, sys, time
import psycopg2
from wsgipool import Pool
out = {}
pool = Pool(sys.argv[1], max_size=2, timeout=3)
# COPY cannot run with a wait callback: psycopg2 refuses, the connection stays usable.
with pool.connection() as conn:
    try:
        conn.cursor().copy_expert("COPY (SELECT 1) TO STDOUT", io.StringIO())
    except psycopg2.ProgrammingError as exc:
        out["copy"] = str(exc)
    cur = conn.cursor(); cur.execute("SELECT pg_backend_pid()"); out["first"] = cur.fetchone()[0]
# A gevent.Timeout inside a query: psycopg2 closes that connection; the pool discards it.
try:
    with gevent.Timeout(0.2):
        with pool.connection() as conn:
            conn.cursor().execute("SELECT pg_sleep(2)")
except gevent.Timeout:
    out["timeout_closed"] = conn.closed
with pool.connection() as conn:
    cur = conn.cursor(); cur.execute("SELECT pg_backend_pid()"); out["after"] = cur.fetchone()[0]
stats = pool.stats()
out.update(size=stats["size"], in_use=stats["in_use"], reasons=stats["discard_reasons"])
# Through a proxy that the test then stalls: the watchdog cuts the ping after timeout=1,
# and the new connect gives up after connect_timeout (2 s), which libpq ignores once
# psycopg2 connects through a wait callback.
stalled = Pool(sys.argv[2], max_size=1, timeout=1, pre_ping=True)
with stalled.connection():
    pass
print("ready", flush=True)
sys.stdin.readline()
started = time.monotonic()
try:
    stalled.checkout()
except Exception as exc:
    out["connect_error"] = str(exc)
out["stalled_seconds"] = time.monotonic() - started
out["stalled_reasons"] = stalled.stats()["discard_reasons"]
print(json.dumps(out))
"""


def test_green_psycopg2_copy_timeout_watchdog_and_connect_bound():
    import json

    from stall_proxy import StallProxy

    with StallProxy(("127.0.0.1", 5432)) as proxy:
        process = subprocess.Popen(
            [sys.executable, "-c", GREEN_SCRIPT, PG, proxy.url_for(PG)], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=dict(os.environ, PYTHONPATH=ROOT))
        try:
            assert process.stdout.readline() == "ready\n", process.communicate(timeout=10)
            proxy.stall()
            stdout, stderr = process.communicate("go\n", timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert process.returncode == 0, stderr
    out = json.loads(stdout)
    assert "cannot be used with an asynchronous callback" in out["copy"]
    # psycopg2 closes a connection whose wait was interrupted; the pool discards it (as
    # broken: the timeout struck the handler, not a round trip of the pool's) and is whole.
    assert out["timeout_closed"] and out["reasons"]["broken"] == 1, out
    assert (out["size"], out["in_use"]) == (1, 0) and out["after"] != out["first"], out
    assert out["stalled_reasons"]["unresponsive"] == 1, out
    assert "timeout expired" in out["connect_error"], out
    assert 2.5 < out["stalled_seconds"] < 8, out  # 1 s ping + 2 s connect, not for ever


# The same requests in every mode, in a process patched by gevent (argv[2] == "green")
# or not: what the pool sees and does must not change with the wait callback.
MODES_SCRIPT = r"""
import sys
if sys.argv[2] == "green":
    from gevent import monkey; monkey.patch_all()
import json, logging
import psycopg2.extensions
from wsgipool import Pool
warnings = []
handler = logging.Handler(); handler.emit = lambda record: warnings.append(record.getMessage())
logging.getLogger("wsgipool.pool").addHandler(handler)
pg, table = sys.argv[1], sys.argv[3]
admin = psycopg2.connect(pg); admin.autocommit = True
admin.cursor().execute(f"CREATE TABLE {table} (a int)")
out = {}
try:
    for mode, query in [("default", ""), ("autocommit", "?autocommit=true"),
                        ("read_only", "?read_only=true")]:
        with Pool(pg + query, max_size=1) as pool:
            for statements in (["BEGIN", "INSERT"], ["INSERT"]):  # left open, both
                try:
                    with pool.connection() as conn:
                        for statement in statements:
                            conn.cursor().execute(
                                f"INSERT INTO {table} VALUES (1)" if statement == "INSERT"
                                else statement)
                except psycopg2.Error as exc:
                    out[f"{mode} {statements}"] = type(exc).__name__
            with pool.connection() as conn:
                cur = conn.cursor(); cur.execute(f"SELECT count(*) FROM {table}")
                out[mode] = [cur.fetchone()[0], conn.autocommit,
                             conn.get_transaction_status(), pool.stats()["rollbacks"],
                             pool.stats()["discards"], pool.stats()["connects"]]
                conn.rollback()
finally:
    admin.cursor().execute(f"DROP TABLE {table}")
out["warnings"] = warnings
out["callback"] = getattr(psycopg2.extensions.get_wait_callback(), "__module__", None)
print(json.dumps(out))
"""


def test_green_psycopg2_keeps_every_mode():
    """Autocommit, read-only, an explicit BEGIN, a write left open: with the wait
    callback the pool sees and does exactly what it does without."""
    import json

    outcomes = {}
    for how in ("green", "plain"):
        table = f"gevent_modes_{uuid.uuid4().hex[:12]}"
        done = subprocess.run(
            [sys.executable, "-c", MODES_SCRIPT, PG, how, table], cwd=ROOT,
            capture_output=True, text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
        assert done.returncode == 0, done.stderr
        outcomes[how] = json.loads(done.stdout)
    green, plain = outcomes["green"], outcomes["plain"]
    assert (green.pop("callback"), plain.pop("callback")) == ("wsgipool.cooperative", None)
    assert green == plain
    # [rows, autocommit, transaction status, rollbacks, discards, connects]
    assert plain["default"][0] == 0 and plain["default"][3:] == [2, 0, 1], plain
    assert plain["autocommit"][0] == 1, plain  # the INSERT without BEGIN committed itself
    assert plain["read_only ['INSERT']"] == "ReadOnlySqlTransaction", plain
    assert len(plain["warnings"]) == 5, plain  # one per transaction left open


# -- eventlet: no gunicorn worker for it any more (gunicorn 23+), so a script ----------

EVENTLET_SCRIPT = r"""
import eventlet; eventlet.monkey_patch(psycopg=False)  # else eventlet sets its own callback
import json, sys
import psycopg2.extensions
from wsgipool import Pool
pool = Pool(sys.argv[1], max_size=4, timeout=5)
def sleep(_):
    with pool.connection() as conn:
        conn.cursor().execute("SELECT pg_sleep(0.2)")
list(eventlet.GreenPool(4).imap(sleep, range(4)))
print(json.dumps({"callback": psycopg2.extensions.get_wait_callback().__module__}))
"""


@pytest.mark.skipif(importlib.util.find_spec("eventlet") is None,
                    reason="eventlet is not installed (pip install eventlet)")
def test_eventlet_psycopg2_runs_queries_together():
    import json

    marker = f"gevent_coop_{uuid.uuid4().hex[:12]}"
    process = subprocess.Popen(
        [sys.executable, "-W", "ignore", "-c", EVENTLET_SCRIPT,
         f"{PG}?application_name={marker}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=ROOT))
    with Sampler("psycopg2", marker) as sampler:
        try:
            stdout, stderr = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    assert process.returncode == 0, stderr
    assert json.loads(stdout)["callback"] == "wsgipool.cooperative"
    assert sampler.most == 4


def test_a_callback_already_set_is_never_replaced(monkeypatch, caplog):
    """psycogreen's, eventlet's (``monkey_patch()`` sets one) or the app's own stays."""
    from psycopg2 import extensions
    from psycopg2.extras import wait_select

    from wsgipool import Pool, cooperative

    def theirs(conn):
        wait_select(conn)

    monkeypatch.setattr(cooperative, "green", lambda: "gevent")  # as if patched
    monkeypatch.setattr(cooperative, "_done", {})  # and not yet seen in this process
    caplog.set_level(logging.INFO, logger="wsgipool.cooperative")
    extensions.set_wait_callback(theirs)
    try:
        with Pool(PG, max_size=1) as pool, pool.connection() as conn:
            conn.cursor().execute("SELECT 1")
        assert extensions.get_wait_callback() is theirs
    finally:
        extensions.set_wait_callback(None)
    assert [r.getMessage() for r in caplog.records] == [
        "psycopg2 already has a wait callback "
        "(test_cooperative.test_a_callback_already_set_is_never_replaced.<locals>.theirs): "
        "left as it is"]


def test_a_bad_switch_value_is_refused_by_name(monkeypatch):
    """``WSGIPOOL_PSYCOPG2_WAIT_CALLBACK`` accepts on/off words only; the connect says so."""
    from psycopg2 import extensions

    from wsgipool import ConfigurationError, Pool, cooperative

    monkeypatch.setattr(cooperative, "green", lambda: "gevent")  # as if patched
    monkeypatch.setattr(cooperative, "_done", {})  # and not yet seen in this process
    monkeypatch.setenv(cooperative.PSYCOPG2_SWITCH, "maybe")
    with Pool(PG, max_size=1) as pool:
        # A setting's error, not the database's: as it is, with no back-off.
        with pytest.raises(ConfigurationError) as raised:
            pool.checkout()
        assert ("WSGIPOOL_PSYCOPG2_WAIT_CALLBACK must be on or off (or 1/0, true/false, "
                "yes/no), not 'maybe'") in str(raised.value)
        stats = pool.stats()
        assert (stats["size"], stats["connect_errors"]) == (0, 0)
    assert extensions.get_wait_callback() is None
