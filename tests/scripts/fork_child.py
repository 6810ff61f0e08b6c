"""Fork scenarios run as a real program, so the child's sys.exit is a real interpreter exit.

Usage: python fork_child.py SCENARIO URL. Prints one JSON object: what the parent and the
child saw. Scenarios: use (the child checks out), idle (the child never touches the pool),
held (a connection is checked out across the fork), nohooks-use / nohooks-idle (as if the
server forked without running Python's fork hooks, like uWSGI by default).
"""

import json
import os
import sys

import wsgipool.process as pool_module  # the registry of live pools
from wsgipool import Pool

SESSION_QUERY = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def session_id(conn, kind):
    if kind == "sqlite":
        return id(conn)
    cursor = conn.cursor()
    cursor.execute(SESSION_QUERY[kind])
    (sid,) = cursor.fetchone()
    conn.rollback()
    return sid


def main(scenario, url):
    kind = url.split(":", 1)[0].split("+")[0]  # postgresql+psycopg: postgresql
    pool = Pool(url, max_size=2)
    with pool.connection() as conn:
        parent_sid = session_id(conn, kind)
    held = pool.checkout() if scenario == "held" else None
    if scenario.startswith("nohooks"):
        hidden = set(pool_module._LIVE_POOLS)
        pool_module._LIVE_POOLS.clear()  # the registered fork hook finds nothing to do
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        if scenario.startswith("nohooks"):
            pool_module._LIVE_POOLS.update(hidden)  # the exit handler still sees it
        report = {"scenario": scenario, "stats_before": pool.stats()}
        if held is not None:
            pool.checkin(held)  # the forking thread gives back what it held: ignored
        if scenario in ("use", "held", "nohooks-use"):
            with pool.connection() as conn:
                report["sid"] = session_id(conn, kind)
            report["stats"] = pool.stats()
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)
        sys.exit(0)  # a normal exit: atexit handlers and finalizers run
    if scenario.startswith("nohooks"):
        pool_module._LIVE_POOLS.update(hidden)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read() or "null")
    if held is not None:
        held_sid = session_id(held.conn, kind)
        pool.checkin(held)
    else:
        held_sid = None
    with pool.connection() as conn:
        after_sid = session_id(conn, kind)
    print(json.dumps({
        "parent_sid": parent_sid, "after_sid": after_sid, "held_sid": held_sid,
        "child": child, "child_exit": os.waitstatus_to_exitcode(status),
        "parent_connects": pool.stats()["connects"],
    }))
    pool.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
