"""A server that stops answering must not hold a checkout, a return or a close hostage.

A stalled network (a frozen host, a dropped route) keeps the socket open and the kernel
ACKing, so no driver ever times out by itself: without a bound from the pool, a pre-ping,
a rollback or a session reset waits for as long as the kernel allows. These tests put
tests/stall_proxy.py between the pool and the real server, stall it, and require every
pool call to finish within BOUND seconds with ``timeout=1``.

Each pool call runs in a daemon thread joined with the bound; closing the proxy (fixture
teardown) ends the sessions, which also frees a thread a failing test left blocked.
"""

import threading
import time
from urllib.parse import urlsplit

import pytest

from stall_proxy import StallProxy
from wsgipool import ConnectError, PoolClosed, PoolMiddleware, PoolTimeout

BOUND = 8.0  # seconds: generous against timeout=1, far below "as long as the kernel allows"
SESSION_SQL = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def within(call, bound=BOUND, what="the call"):
    """Run ``call()`` in a daemon thread; its result, its exception, or a failure if it
    is still blocked after ``bound`` seconds."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    if thread.is_alive():
        pytest.fail(f"{what} still blocked after {bound:.0f} s against a stalled server")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def session_of(db, conn):
    cursor = conn.cursor()
    cursor.execute(SESSION_SQL[db.kind])
    return cursor.fetchone()[0]


@pytest.fixture
def stalled(any_server_db, pools):
    """(db, proxy, proxied URL); made after ``pools``, so closed before the pools are."""
    target = urlsplit(any_server_db.url)
    with StallProxy((target.hostname, target.port)) as proxy:
        yield any_server_db, proxy, proxy.url_for(any_server_db.url)


def unresponsive(pool):
    return pool.stats()["discard_reasons"].get("unresponsive", 0)


def test_checkout_after_stall_fails_within_bound(stalled, pools):
    """The pre-ping of the idle connection is cut, and the new connection it would be
    replaced with cannot be opened either: an error, in seconds, not a hang."""
    db, proxy, url = stalled
    pool = pools(url, timeout=1, pre_ping=True, max_size=2)
    with pool.connection() as conn:
        session_of(db, conn)
        conn.commit()
    proxy.stall()
    with pytest.raises((ConnectError, PoolTimeout)):
        within(pool.checkout, what="checkout")
    stats = pool.stats()
    assert stats["discard_reasons"].get("unresponsive", 0) >= 1, stats
    assert (stats["in_use"], stats["size"]) == (0, 0), stats


def test_checkout_recovers_once_the_network_does(stalled, pools):
    """A stall that heals: the checkout either fails in bounded time or gets a fresh
    session, never the stalled one, and the next checkout after the resume works."""
    db, proxy, url = stalled
    pool = pools(url, timeout=1, pre_ping=True, max_size=2)
    with pool.connection() as conn:
        stalled_session = session_of(db, conn)
        conn.commit()
    proxy.stall()
    healer = threading.Timer(1.5, proxy.resume)
    healer.start()
    try:
        try:
            entry = within(pool.checkout, what="checkout")
        except (ConnectError, PoolTimeout):
            pass
        else:
            try:
                assert session_of(db, entry.conn) != stalled_session
            finally:
                pool.checkin(entry)
    finally:
        healer.join(BOUND)
        assert not healer.is_alive()
    assert unresponsive(pool) >= 1, pool.stats()
    time.sleep(0.3)  # past the pool's reconnect back-off, if the checkout failed

    def fresh_session():
        with pool.connection() as conn:
            return session_of(db, conn)

    assert within(fresh_session, what="checkout after the resume") != stalled_session


def test_return_with_open_transaction_is_cut_and_discarded(stalled, pools):
    """The handler left a transaction open; its rollback meets a stalled server."""
    db, proxy, url = stalled
    pool = pools(url, timeout=1, pre_ping=True)
    entry = pool.checkout()
    session_of(db, entry.conn)  # a SELECT without commit: a transaction is open
    proxy.stall()
    within(lambda: pool.checkin(entry), what="the return (rollback)")
    stats = pool.stats()
    assert stats["discard_reasons"].get("unresponsive", 0) >= 1, stats
    assert (stats["in_use"], stats["idle"], stats["size"]) == (0, 0, 0), stats
    assert stats["returns"] == stats["checkouts"] == 1, stats


def test_session_reset_on_return_is_cut_and_discarded(stalled, pools):
    """reset="session" (DISCARD ALL, COM_CHANGE_USER, COM_RESET_CONNECTION) on a return
    with no transaction open meets a stalled server."""
    db, proxy, url = stalled
    pool = pools(url, timeout=1, pre_ping=True, reset="session")
    entry = pool.checkout()
    session_of(db, entry.conn)
    entry.conn.commit()  # nothing to roll back: only the session reset talks to the server
    proxy.stall()
    within(lambda: pool.checkin(entry), what="the return (session reset)")
    stats = pool.stats()
    assert stats["discard_reasons"].get("unresponsive", 0) >= 1, stats
    assert (stats["in_use"], stats["idle"], stats["size"]) == (0, 0, 0), stats


def test_close_and_late_return_are_bounded(stalled, pools):
    """pool.close() with an idle connection, then the return of one still held with a
    transaction open, both against a stalled server; nothing is handed out after."""
    db, proxy, url = stalled
    pool = pools(url, timeout=1, pre_ping=True, max_size=2)
    held = pool.checkout()
    with pool.connection() as conn:
        session_of(db, conn)
        conn.commit()
    session_of(db, held.conn)  # left open
    proxy.stall()
    within(pool.close, what="pool.close()")
    within(lambda: pool.checkin(held), what="the return after close")
    stats = pool.stats()
    assert (stats["in_use"], stats["idle"], stats["size"]) == (0, 0, 0), stats
    assert stats["discard_reasons"].get("pool_closed", 0) >= 1, stats
    with pytest.raises(PoolClosed):
        within(pool.checkout, what="checkout from a closed pool")


def session_app(db):
    def app(environ, start_response):
        sid = session_of(db, environ["db.conn"])
        environ["db.conn"].commit()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(sid).encode()]
    return app


def serve(middleware):
    """One request served as wsgiref would: (status, body)."""
    from wsgiref.util import setup_testing_defaults

    environ = {}
    setup_testing_defaults(environ)
    seen = []

    def start_response(status, headers, exc_info=None):
        seen.append(status)
        return lambda data: None

    result = middleware(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return seen[-1], body


def test_middleware_answers_503_after_stall(stalled, caplog):
    """Through PoolMiddleware the client gets a prompt 503, not a hung request."""
    db, proxy, url = stalled
    middleware = PoolMiddleware(session_app(db), url, timeout=1, pre_ping=True)
    try:
        status, body = within(lambda: serve(middleware), what="the first request")
        assert status.startswith("200"), (status, caplog.text)  # the pool logged why
        proxy.stall()
        status, body = within(lambda: serve(middleware), what="a request after the stall")
        assert status.startswith("503"), (status, body)
        assert middleware.pool.stats()["in_use"] == 0
        assert unresponsive(middleware.pool) >= 1, middleware.pool.stats()
    finally:
        within(middleware.pool.close, what="pool.close()")
