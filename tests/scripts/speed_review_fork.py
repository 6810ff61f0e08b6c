"""A child, then a grandchild, each forked (os.fork or libc fork, which runs no Python hook)
while another thread holds the pool's lock; each makes a new pool before its first use.
Args: mode (kernel | nommap: mmap fails, so the fork hook's byte | uwsgi: getpid),
how the child is forked, how the grandchild is, url. Prints the backend pids each
process saw, as JSON."""

import ctypes
import json
import os
import sys
import threading
import types

if sys.argv[1] == "uwsgi":  # no page, inside a server that may fork without the hook
    sys.modules["uwsgi"] = types.ModuleType("uwsgi")
if sys.argv[1] in ("nommap", "uwsgi"):
    import mmap
    class Bad:
        def __init__(self, *a, **k): raise OSError("simulated: no MADV_WIPEONFORK")
    real = mmap.mmap
    mmap.mmap = Bad
POSTGRESQL_URL = sys.argv[4]
import wsgipool.process
from wsgipool import Pool
if sys.argv[1] in ("nommap", "uwsgi"):
    mmap.mmap = real
    sys.modules.pop("uwsgi", None)
libc = ctypes.CDLL(None, use_errno=True)
pool = Pool(POSTGRESQL_URL, max_size=2)
def pid_of(p):
    with p.connection() as c:
        cur = c.cursor(); cur.execute("SELECT pg_backend_pid()"); return cur.fetchone()[0]
out = {"detection": wsgipool.process.FORK_DETECTION, "parent": pid_of(pool)}
def child_run(how, depth):
    r, w = os.pipe()
    # another thread holds the pool's lock at the fork
    held = threading.Event(); release = threading.Event()
    def hold():
        with pool._lock:
            held.set(); release.wait(5)
    t = threading.Thread(target=hold); t.start(); held.wait(5)
    pid = os.fork() if how == "fork" else libc.fork()
    if pid == 0:
        os.close(r)
        res = {}
        try:
            p2 = Pool(POSTGRESQL_URL, max_size=1)  # created in the child before first use
            res["mine"] = pid_of(pool)
            res["p2"] = pid_of(p2)
            res["stats"] = {k: pool.stats()[k] for k in ("connects", "checkouts", "returns", "size")}
            if depth:
                res["grand"] = child_run(depth[0], depth[1:])
            res["mine_after"] = pid_of(pool)
        except BaseException as e:
            res["error"] = repr(e)
        os.write(w, json.dumps(res).encode()); os.close(w)
        os._exit(0)
    release.set(); t.join(5)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk: break
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data or b"{}")
out["child"] = child_run(sys.argv[2], sys.argv[3:4])
out["parent_after"] = pid_of(pool)
print(json.dumps(out))
