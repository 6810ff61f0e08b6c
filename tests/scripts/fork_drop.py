"""Children that touch what they inherited in the plainest ways, run as a real program.

Usage: python fork_drop.py SCENARIO URL. Prints one JSON object: what the parent and the
child saw. Scenarios:

* checkout: the child's very first act is a checkout (no stats() before it);
* drop-pool: the child only lets go of the inherited pool (del, then gc) and exits;
* drop-connection: the child only lets go of an inherited driver connection that no
  pool ever held (made by the driver directly), and exits;
* checkin-held: the parent holds a connection across the fork with a row inserted and
  not yet committed; the child's first act is to give that checkout back (as the forking
  thread would), which must not roll back the parent's transaction.

The parent then uses its own session again: it must be the same, and answer.
"""

import gc
import json
import os
import sys

from wsgipool import Pool
from wsgipool.drivers import make_driver

SESSION_QUERY = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def session_id(conn, kind):
    cursor = conn.cursor()
    cursor.execute(SESSION_QUERY[kind])
    (sid,) = cursor.fetchone()
    cursor.close()
    conn.rollback()
    return sid


def pool_session(pool, kind):
    with pool.connection() as conn:
        return session_id(conn, kind)


def child(scenario, inherited, kind):
    """What the child does; ``inherited`` holds the only references to the parent's."""
    report = {}
    if scenario == "checkout":
        report["sid"] = pool_session(inherited[0], kind)
        report["stats"] = inherited[0].stats()
    elif scenario == "checkin-held":
        inherited[0].checkin(inherited[1])
    else:
        inherited.clear()
        report["collected"] = gc.collect()
    return report


def main(scenario, url):
    kind = url.split(":", 1)[0].split("+")[0]  # postgresql+psycopg: postgresql
    if scenario == "drop-connection":
        inherited = [make_driver(url).connect()]
        parent_sid = session_id(inherited[0], kind)
    else:
        inherited = [Pool(url, max_size=2)]
        parent_sid = pool_session(inherited[0], kind)
    if scenario == "checkin-held":
        held = inherited[0].checkout()
        cursor = held.conn.cursor()
        cursor.execute("CREATE TEMPORARY TABLE forked (n INTEGER)")
        held.conn.commit()
        cursor.execute("INSERT INTO forked VALUES (1)")  # left open across the fork
        inherited.append(held)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        report = child(scenario, inherited, kind)
        os.write(write_end, json.dumps(report).encode())
        os.close(write_end)
        sys.exit(0)  # a normal exit: atexit handlers and finalizers run
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        report = json.loads(pipe.read() or "null")
    seen = {"parent_sid": parent_sid, "child": report,
            "child_exit": os.waitstatus_to_exitcode(status), "after_sid": None, "error": None}
    try:
        if scenario == "checkin-held":
            held = inherited.pop()
            held.conn.commit()
            cursor = held.conn.cursor()
            cursor.execute("SELECT count(*) FROM forked")
            seen["rows"] = cursor.fetchone()[0]
            cursor.execute("DROP TABLE forked")
            held.conn.commit()
            inherited[0].checkin(held)
        if scenario == "drop-connection":
            seen["after_sid"] = session_id(inherited[0], kind)
        else:
            seen["after_sid"] = pool_session(inherited[0], kind)
            seen["parent_connects"] = inherited[0].stats()["connects"]
    except Exception as exc:  # the session the child ended: what the parent then sees
        seen["error"] = f"{type(exc).__name__}: {exc}".strip()
    print(json.dumps(seen))
    inherited[0].close()


if __name__ == "__main__":
    main(*sys.argv[1:])
