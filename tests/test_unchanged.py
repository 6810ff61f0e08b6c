"""The return's one-call check, ``Driver.unchanged``: on every driver it says exactly
what the two reads it replaced said (``state() == IDLE`` and the autocommit flag as it
was), so a return it passes as clean needs no rollback and no restore."""

from __future__ import annotations

from wsgipool import Pool
from wsgipool.drivers import IDLE


def _flip_autocommit(conn) -> None:
    if hasattr(conn, "in_transaction") and hasattr(conn, "isolation_level"):  # sqlite3
        conn.isolation_level = None if conn.isolation_level is not None else ""
    elif hasattr(conn, "get_autocommit"):  # mysqlclient, PyMySQL
        conn.autocommit(not conn.get_autocommit())
    else:  # psycopg2, psycopg 3
        conn.autocommit = not conn.autocommit


def test_unchanged_agrees_with_state_and_flag(db):
    pool = Pool(db.url, max_size=1)
    try:
        entry = pool.checkout()
        conn, driver, flag = entry.conn, pool._driver, entry.autocommit

        def both():
            old = driver.state(conn) == IDLE and driver.autocommit(conn) == flag
            return driver.unchanged(conn, flag), old

        seen = {"fresh": both()}
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
        seen["after SELECT 1"] = both()
        conn.rollback()
        seen["rolled back"] = both()
        _flip_autocommit(conn)
        seen["autocommit flipped"] = both()
        _flip_autocommit(conn)
        seen["flipped back"] = both()
        conn.close()
        seen["closed"] = both()
        assert {case: new for case, (new, _old) in seen.items()} == {
            case: old for case, (_new, old) in seen.items()}
        # The check is not vacuous: it passes a clean connection and catches the rest.
        assert seen["fresh"] == (True, True)
        assert seen["rolled back"] == (True, True)
        assert seen["flipped back"] == (True, True)
        assert seen["autocommit flipped"] == (False, False)
        assert seen["closed"] == (False, False)
        pool.checkin(entry)  # closed: discarded, and counted
        stats = pool.stats()
        assert stats["checkouts"] == stats["returns"] + stats["in_use"] == 1
        assert stats["size"] == stats["in_use"] + stats["idle"] + stats["opening"] == 0
    finally:
        pool.close()
