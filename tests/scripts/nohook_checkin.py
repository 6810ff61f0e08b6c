"""A checkout taken before a fork that runs no Python at-fork hooks, given back in the child.

uWSGI forks without running them by default; here libc's fork() is called through ctypes,
so neither os.register_at_fork hooks nor the pool's fork handling run. The child only
gives back the connection its request held; the parent then commits its transaction.

Usage: python nohook_checkin.py URL. Prints one JSON object: the child's exit status,
what the parent's COMMIT raised (null: nothing) and how many rows it committed.
"""

import ctypes
import json
import os
import signal
import sys
import time

from wsgipool import Pool
from wsgipool.drivers import make_driver

CHILD_BOUND = 10.0  # seconds the parent waits for its child before killing it


def wait_child(pid):
    """The child's exit status; a child still running after CHILD_BOUND is killed (by pid)."""
    deadline = time.monotonic() + CHILD_BOUND
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return f"killed: still running after {CHILD_BOUND:.0f} s"


def run_sql(url, sql):
    """Run ``sql`` on a connection of our own, outside the pool; the first row, if any."""
    conn = make_driver(url).connect()
    try:
        cur = conn.cursor()
        cur.execute(sql)
        row = cur.fetchone() if cur.description else None
        conn.commit()
        return row
    finally:
        conn.close()


def main(url):
    table = f"nohook_checkin_{os.getpid()}"
    run_sql(url, f"CREATE TABLE {table} (x int)")
    try:
        pool = Pool(url, max_size=2)
        entry = pool.checkout()
        entry.conn.cursor().execute(f"INSERT INTO {table} VALUES (1)")  # left open
        pid = ctypes.CDLL(None).fork()
        if pid == 0:  # the child: the in-flight request ends and gives its connection back
            code = 0
            try:
                pool.checkin(entry)
            except BaseException:  # noqa: BLE001  (reported as the exit status)
                code = 3
            finally:
                os._exit(code)
        child_exit = wait_child(pid)
        try:
            entry.conn.commit()
            commit_error = None
        except Exception as exc:  # noqa: BLE001  (reported)
            commit_error = f"{type(exc).__name__}: {str(exc).strip()}"
        pool.checkin(entry)
        pool.close()
        (rows,) = run_sql(url, f"SELECT count(*) FROM {table}")
    finally:
        run_sql(url, f"DROP TABLE {table}")
    print(json.dumps({"child_exit": child_exit, "commit_error": commit_error, "rows": rows}))


if __name__ == "__main__":
    main(sys.argv[1])
