"""Session isolation: with reset="session", nothing one request set survives into the next."""

import pytest

from wsgipool import ConfigurationError, Pool


def rows(conn, sql, params=None):
    cursor = conn.cursor()
    cursor.execute(sql, params)
    return cursor.fetchall()


def test_postgresql_session_reset_clears_everything(any_postgresql, pools):
    pool = pools(any_postgresql.url, max_size=1, reset="session")
    admin = any_postgresql.admin()
    with admin.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS wsgipool_tenant")
        cur.execute("CREATE ROLE wsgipool_tenant")
    try:
        with pool.connection() as conn:
            sid = any_postgresql.session_id(conn)
            cur = conn.cursor()
            cur.execute("SET ROLE wsgipool_tenant")
            cur.execute("SELECT set_config('app.tenant', '42', false)")
            cur.execute("SET statement_timeout = 1234")
            cur.execute("CREATE TEMP TABLE leftovers (n int)")
            cur.execute("PREPARE leftover_plan AS SELECT 1")
            cur.execute("LISTEN leftover_channel")
            cur.execute("SELECT pg_advisory_lock(4242)")
            conn.commit()  # committed: a rollback alone would keep all of it
        with pool.connection() as conn:
            assert any_postgresql.session_id(conn) == sid  # the same session, reset
            assert rows(conn, "SELECT current_user")[0][0] == "postgres"
            assert rows(conn, "SELECT current_setting('app.tenant', true)")[0][0] in (None, "")
            assert rows(conn, "SHOW statement_timeout")[0][0] == "0"
            assert rows(conn, "SELECT count(*) FROM pg_prepared_statements")[0][0] == 0
            assert rows(conn, "SELECT count(*) FROM pg_listening_channels()")[0][0] == 0
            assert rows(conn, "SELECT to_regclass('pg_temp.leftovers')")[0][0] is None
            assert rows(conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                              "AND pid = pg_backend_pid()")[0][0] == 0
            conn.rollback()
    finally:
        with admin.cursor() as cur:
            cur.execute("DROP ROLE IF EXISTS wsgipool_tenant")
        admin.close()


def test_postgresql_rollback_mode_keeps_committed_session_state(any_postgresql, pools):
    """The default, documented: a committed SET survives; that is what reset="session" is for."""
    pool = pools(any_postgresql.url, max_size=1)
    with pool.connection() as conn:
        conn.cursor().execute("SET statement_timeout = 1234")
        conn.commit()
    with pool.connection() as conn:
        assert rows(conn, "SHOW statement_timeout")[0][0] == "1234ms"
        conn.rollback()


def test_mariadb_session_reset_clears_everything(any_mariadb, pools):
    pool = pools(any_mariadb.url + "?charset=utf8mb4", max_size=1, reset="session")
    with pool.connection() as conn:
        sid = any_mariadb.session_id(conn)
        cur = conn.cursor()
        cur.execute("SET @leftover = 42")
        cur.execute("SET SESSION wait_timeout = 1234")
        cur.execute("CREATE TEMPORARY TABLE leftovers (n int)")
        cur.execute("PREPARE leftover_plan FROM 'SELECT 1'")
        cur.execute("SELECT GET_LOCK('wsgipool_leftover', 0)")
        conn.commit()
    with pool.connection() as conn:
        assert any_mariadb.session_id(conn) == sid
        assert rows(conn, "SELECT @leftover")[0][0] is None
        assert rows(conn, "SELECT @@SESSION.wait_timeout")[0][0] != 1234
        assert rows(conn, "SELECT IS_USED_LOCK('wsgipool_leftover')")[0][0] is None
        with pytest.raises(Exception):
            rows(conn, "SELECT * FROM leftovers")
        with pytest.raises(Exception):
            conn.cursor().execute("EXECUTE leftover_plan")
        # MySQLdb's own set-up is back: the charset and autocommit it connected with.
        assert conn.character_set_name() == "utf8mb4"
        assert conn.get_autocommit() is False
        conn.rollback()


def test_mariadb_session_reset_costs_nothing_when_unused(any_mariadb, pools):
    pool = pools(any_mariadb.url, max_size=1, reset="session")
    with pool.connection():
        pass
    admin = any_mariadb.admin()
    cursor = admin.cursor()

    def questions():
        cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
        return int(cursor.fetchone()[1])

    before = questions()
    for _ in range(10):
        with pool.connection():
            pass
    used = questions() - before
    with pool.connection() as conn:  # used once: the reset re-applies the charset
        conn.cursor().execute("SELECT 1")
    after_use = questions() - before - used
    admin.close()
    assert used <= 1  # the second SHOW itself
    assert after_use >= 3  # SELECT, rollback, SET NAMES after the change of user...


def test_sqlite_session_reset_drops_temporary_tables(sqlite, pools):
    pool = pools(sqlite.url, max_size=1, reset="session")
    with pool.connection() as conn:
        conn.execute("CREATE TEMP TABLE leftovers (n)")
        conn.execute("CREATE TEMP VIEW leftover_view AS SELECT 1")
    with pool.connection() as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_temp_master").fetchone()[0] == 0


def test_callable_reset_runs_on_every_return(db, pools):
    calls = []
    pool = pools(db.url, max_size=1, reset=calls.append)
    for _ in range(3):
        with pool.connection():
            pass
    assert len(calls) == 3 and len(set(map(id, calls))) == 1


def test_failing_reset_discards_the_connection(sqlite, pools):
    def reset(conn):
        raise RuntimeError("tenant cleanup failed")

    pool = pools(sqlite.url, max_size=1, reset=reset)
    with pool.connection():
        pass
    stats = pool.stats()
    assert stats["discard_reasons"]["reset_failed"] == 1 and stats["size"] == 0


@pytest.mark.parametrize("value", ["full", 3, None])
def test_bad_reset_value_is_named(value):
    with pytest.raises(ConfigurationError, match="reset"):
        Pool("sqlite://", reset=value)


def test_session_reset_needs_a_driver_that_knows_how():
    import sqlite3

    with pytest.raises(ConfigurationError, match="reset='session'"):
        Pool(connect=lambda: sqlite3.connect(":memory:"), reset="session")


def test_psycopg3_prepared_statements_survive_a_session_reset(psycopg_postgresql, pools):
    """psycopg 3 prepares a query after five runs; DISCARD ALL drops it server side, and
    psycopg must forget it too, or the next run fails with "does not exist"."""
    pool = pools(psycopg_postgresql.url, max_size=1, reset="session")
    for run in range(12):
        with pool.connection() as conn:
            assert rows(conn, "SELECT %s::int + 1", (run,))[0][0] == run + 1
            prepared = rows(conn, "SELECT count(*) FROM pg_prepared_statements")[0][0]
            assert prepared <= 1  # prepared this request at most; DISCARD ALL at return
    assert pool.stats()["connects"] == 1
    assert pool.stats()["discards"] == 0
