"""How a pool notices it is in a new process, without a system call per checkout.

Each way (Linux's wipe-on-fork page; the byte Python's fork hook clears; getpid inside a
server that may fork without that hook) is run as a real program
(tests/scripts/fork_detect.py) whose child's first act is a checkout: the child must
open its own session, and the parent keep its own. ``cfork`` is libc's fork() called
through ctypes, which runs no Python fork hook (as uWSGI forks by default).
"""

import json
import os
import subprocess
import sys

import pytest

import wsgipool
import wsgipool.process

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
SCRIPT = os.path.join(os.path.dirname(__file__), "scripts", "fork_detect.py")
UNDER_TEST = os.path.dirname(os.path.dirname(os.path.abspath(wsgipool.__file__)))
KERNEL = wsgipool.process.FORK_DETECTION == "kernel"


def run(mode, how, url):
    env = dict(os.environ, PYTHONPATH=UNDER_TEST)
    done = subprocess.run([sys.executable, SCRIPT, mode, how, url], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode, how, detection", [
    pytest.param("kernel", "fork", "kernel", id="wipe-on-fork-page-os-fork",
                 marks=pytest.mark.skipif(not KERNEL, reason="no MADV_WIPEONFORK here")),
    pytest.param("kernel", "cfork", "kernel", id="wipe-on-fork-page-c-fork-without-hooks",
                 marks=pytest.mark.skipif(not KERNEL, reason="no MADV_WIPEONFORK here")),
    pytest.param("hooks", "fork", "fork hook", id="fork-hook-byte-os-fork"),
    pytest.param("uwsgi", "cfork", "getpid", id="embedded-getpid-c-fork-without-hooks"),
])
def test_child_forked_any_way_opens_its_own_session(any_server_db, mode, how, detection):
    seen = run(mode, how, any_server_db.url)
    assert seen["detection"] == detection
    assert seen["child_exit"] == 0, seen["child"]
    child = seen["child"]
    assert child["sid"] != seen["parent_sid"]  # never the parent's session
    assert child["stats"]["connects"] == 1  # its own, opened in the child
    assert child["stats"]["discard_reasons"]["fork"] == 1  # it forgot the inherited one
    assert child["stats"]["checkouts"] == child["stats"]["returns"] == 1
    assert seen["after_sid"] == seen["parent_sid"]  # the parent's session survived
    assert seen["parent_connects"] == 1


def test_this_linux_uses_the_kernel_page():
    """The machine the suite runs on (Linux 4.14 or later) makes no syscall per checkout."""
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    assert wsgipool.process.FORK_DETECTION == "kernel"
    assert wsgipool.process.UNFORKED[0] == 1
