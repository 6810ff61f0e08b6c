"""wsgipool behind a real PgBouncer in transaction mode: many pools, few server sessions.

PgBouncer (Debian's package) is started by the tests from the README's pgbouncer.ini,
on a free loopback port, and stopped by its pid.
"""

import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from bouncer import PgBouncer, binary
from conftest import REQUIRE_SERVERS
from servers import Gunicorn, get
from wsgipool import ConfigurationError, Pool

pytestmark = pytest.mark.slow


@pytest.fixture
def bouncer(postgresql):
    if binary() is None:
        why = "pgbouncer is not installed: apt-get install pgbouncer"
        if REQUIRE_SERVERS:
            pytest.fail(f"CI requires PgBouncer: {why}")
        pytest.skip(why)
    with PgBouncer(postgresql.admin, pool_size=2) as running:
        yield running
    deadline = time.monotonic() + 5
    while running.server_sessions() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.server_sessions() == 0  # PgBouncer's sessions end with it


@pytest.fixture
def table(postgresql):
    name = f"wsgipool_bouncer_{uuid.uuid4().hex[:8]}"
    admin = postgresql.admin()
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, worker int)")
    yield name
    with admin.cursor() as cursor:
        cursor.execute(f"DROP TABLE {name}")
    admin.close()


def count_rows(postgresql, table):
    admin = postgresql.admin()
    with admin.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {table}")
        (count,) = cursor.fetchone()
    admin.close()
    return count


def test_several_gunicorn_servers_share_pgbouncers_few_server_sessions(
        bouncer, postgresql, table, tmp_path):
    """Three gunicorn masters × 2 gthread workers × max_size 4 (up to 24 client
    connections) serve a concurrent load through one PgBouncer whose pool is 2 server
    sessions: every request commits its row, and PostgreSQL never sees more than 2."""
    env = {"DATABASE_URL": bouncer.url, "BOUNCER_TABLE": table}
    servers = [Gunicorn("bouncer_app:app", "-k", "gthread", "--workers", "2",
                        "--threads", "4", cwd=os.path.join(os.path.dirname(__file__),
                                                           "gunicorn_apps"),
                        env=env, log_path=str(tmp_path / f"gunicorn-{n}.log"))
               for n in range(3)]
    peak = [0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], bouncer.server_sessions())
            time.sleep(0.02)

    try:
        for server in servers:
            server.wait_ready()
        sampler = threading.Thread(target=sample)
        sampler.start()
        urls = [servers[n % len(servers)].url + "/" for n in range(360)]
        with ThreadPoolExecutor(16) as clients:
            answers = list(clients.map(get, urls))
        client_rows = [row for row in bouncer.show("CLIENTS") if row["database"] == "test"]
    finally:
        sampling.set()
        for server in servers:
            server.stop()
    sampler.join(5)
    assert [status for status, _ in answers] == [200] * len(answers), servers[0].log()[-2000:]
    assert count_rows(postgresql, table) == len(answers)  # every request committed
    backends = {int(body.split()[2]) for _, body in answers}
    connections = defaultdict(set)
    for _, body in answers:
        worker, conn_id, _ = body.split()
        connections[worker].add(conn_id)
    client_connections = sum(len(ids) for ids in connections.values())
    assert len(connections) == 6  # 3 servers × 2 workers all served
    assert len(backends) <= bouncer.pool_size < client_connections
    assert 1 <= peak[0] <= bouncer.pool_size
    assert len(client_rows) == client_connections  # still connected to PgBouncer at the end
    print(f"PgBouncer: {client_connections} client connections, {len(backends)} server "
          f"sessions used, peak {peak[0]} open (pool size {bouncer.pool_size})")


def test_psycopg3_behind_pgbouncer_prepares_nothing(bouncer, postgresql):
    """psycopg 3 would prepare a statement after five runs; with transaction_pooling the
    pool's connections never do, so any server session can run the next transaction."""
    pytest.importorskip("psycopg")
    url = bouncer.url.replace("postgresql://", "postgresql+psycopg://")
    pool = Pool(url, max_size=4, transaction_pooling=True)
    errors = []

    def work(n):
        for run in range(15):
            try:
                with pool.connection() as conn:
                    assert conn.prepare_threshold is None
                    cursor = conn.execute("SELECT %s::int * 2", (n * 100 + run,))
                    assert cursor.fetchone()[0] == (n * 100 + run) * 2
                    conn.commit()
            except Exception as exc:  # collected: asserted below with the cause
                errors.append(repr(exc))

    with ThreadPoolExecutor(8) as threads:
        list(threads.map(work, range(8)))
    stats = pool.stats()
    pool.close()
    assert errors == []
    assert stats["checkouts"] == 120 and stats["connects"] <= 4 and stats["discards"] == 0


def test_without_transaction_pooling_psycopg3_breaks_behind_pgbouncer(bouncer):
    """The failure the setting prevents, made deterministic: a statement prepared in one
    server session, then the next transaction sent to the other one."""
    psycopg = pytest.importorskip("psycopg")
    url = bouncer.url.replace("postgresql://", "postgresql+psycopg://")
    pool = Pool(url, max_size=2)
    first, second = pool.checkout(), pool.checkout()
    try:
        for run in range(6):  # the sixth run prepares it, in whichever session
            first.conn.execute("SELECT %s::int", (run,)).fetchall()
            first.conn.commit()
        # Hold the session PgBouncer just released (it reuses the last one first)...
        second.conn.execute("SELECT 1").fetchall()
        # ...so this transaction runs in the other session, where nothing was prepared.
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            first.conn.execute("SELECT %s::int", (7,)).fetchall()
        first.conn.rollback()
    finally:
        second.conn.rollback()
        pool.checkin(first)
        pool.checkin(second)
        pool.close()


def test_session_reset_is_refused_with_transaction_pooling(bouncer):
    with pytest.raises(ConfigurationError, match="reset='session' cannot work with "
                                                 "transaction_pooling=True"):
        Pool(bouncer.url, transaction_pooling=True, reset="session")
    with pytest.raises(ConfigurationError, match="prepare_threshold"):
        Pool(bouncer.url.replace("postgresql://", "postgresql+psycopg://")
             + "?prepare_threshold=5", transaction_pooling=True)


def test_rollback_and_pre_ping_work_through_pgbouncer(bouncer, postgresql, table):
    pool = Pool(bouncer.url, max_size=1, pre_ping=True, transaction_pooling=True)
    with pool.connection() as conn:
        conn.cursor().execute(f"INSERT INTO {table} (worker) VALUES (1)")  # not committed
    with pool.connection() as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone()[0] == 0
        conn.rollback()
    stats = pool.stats()
    pool.close()
    assert (stats["rollbacks"], stats["pings"], stats["connects"]) == (1, 1, 1)
    assert count_rows(postgresql, table) == 0
