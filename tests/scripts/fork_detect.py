"""How a pool notices a fork, run as a real program: python fork_detect.py MODE HOW URL.

MODE picks the mark before wsgipool is imported: ``kernel`` (as found: Linux's
wipe-on-fork page), ``hooks`` (no such page: the byte Python's fork hook clears) or
``uwsgi`` (no such page, inside a server that may fork without the hook: getpid).
HOW forks with ``os.fork`` (the hooks run) or ``cfork`` (libc's fork() through ctypes:
no Python hook runs, as under uWSGI by default). The child's first act is a checkout.
Prints one JSON object: the mark's kind, the parent's and child's sessions, and what the
child saw.
"""

import ctypes
import json
import mmap
import os
import sys
import types

MODE, HOW, URL = sys.argv[1:4]
if MODE != "kernel":
    mmap_type = mmap.mmap

    class NoWipe(mmap_type):  # a kernel without MADV_WIPEONFORK refuses it (EINVAL)
        def madvise(self, *args):
            raise OSError(22, "Invalid argument")

    mmap.mmap = NoWipe
if MODE == "uwsgi":
    sys.modules["uwsgi"] = types.ModuleType("uwsgi")  # seen by wsgipool at import

import wsgipool.process  # noqa: E402
from wsgipool import Pool  # noqa: E402

if MODE == "uwsgi":
    del sys.modules["uwsgi"]  # the rest of wsgipool need not play along

QUERY = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
KIND = URL.split(":", 1)[0].split("+")[0]


def session(pool):
    with pool.connection() as conn:
        cursor = conn.cursor()
        cursor.execute(QUERY[KIND])
        (sid,) = cursor.fetchone()
        conn.rollback()
        return sid


def main():
    pool = Pool(URL, max_size=1)
    parent_sid = session(pool)
    read_end, write_end = os.pipe()
    pid = ctypes.CDLL(None).fork() if HOW == "cfork" else os.fork()
    if pid == 0:
        code = 0
        try:
            report = {"sid": session(pool), "stats": pool.stats()}
        except BaseException as exc:  # noqa: BLE001  (reported to the parent)
            report, code = {"error": f"{type(exc).__name__}: {exc}"}, 3
        os.write(write_end, json.dumps(report).encode())
        os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read() or "null")
    print(json.dumps({
        "detection": wsgipool.process.FORK_DETECTION, "parent_sid": parent_sid,
        "after_sid": session(pool), "child": child,
        "child_exit": os.waitstatus_to_exitcode(status),
        "parent_connects": pool.stats()["connects"],
    }))
    pool.close()


main()
